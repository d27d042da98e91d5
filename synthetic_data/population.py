"""The population model: who the patients are before anything is written down.

A ``Person`` is drawn from a US-like age and sex distribution; chronic
conditions follow from age and sex (and from each other: COPD mostly in
smokers, CKD more often with diabetes or hypertension, obesity raises the odds
of type 2 diabetes); allergies, smoking status and insurance follow too.  The
chart (``chart.py``) is then written from the person, so every record agrees
with the same facts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta

from synthetic_data.codes import ALLERGENS, CHRONIC, CHRONIC_BY_KEY, REACTIONS, Allergen

# US resident population by age band (2020 census, percent), the top band running to 100.
AGE_BANDS: tuple[tuple[int, int, float], ...] = (
    (0, 5, 5.7),
    (5, 10, 6.0),
    (10, 15, 6.3),
    (15, 20, 6.5),
    (20, 25, 6.4),
    (25, 30, 6.8),
    (30, 35, 6.9),
    (35, 40, 6.6),
    (40, 45, 6.3),
    (45, 50, 6.1),
    (50, 55, 6.2),
    (55, 60, 6.5),
    (60, 65, 6.4),
    (65, 70, 5.5),
    (70, 75, 4.5),
    (75, 80, 3.0),
    (80, 85, 2.0),
    (85, 101, 2.0),
)
_BAND_WEIGHTS = [w for _, _, w in AGE_BANDS]

# Yearly probability of dying by age (rounded US life-table values), used inside the history window.
_MORTALITY = ((1, 0.005), (45, 0.001), (65, 0.008), (75, 0.02), (85, 0.05), (130, 0.14))


@dataclass
class AllergyFact:
    allergen: Allergen
    onset: date
    reaction: tuple[str, str]
    severity: str  # mild | moderate | severe
    criticality: str  # low | high


@dataclass
class Person:
    """The facts about one patient that the chart must agree with."""

    sex: str  # "male" | "female"
    birth_date: date
    today: date
    deceased: date | None = None
    chronic: dict[str, date] = field(default_factory=dict)  # condition key -> onset
    allergies: list[AllergyFact] = field(default_factory=list)
    smoking: str = "never"  # never | former | current
    adult_height_cm: float = 170.0
    bmi: float = 24.0  # adults; children's BMI is drawn per visit around a child's normal

    def age_on(self, day: date) -> int:
        years = day.year - self.birth_date.year
        if (day.month, day.day) < (self.birth_date.month, self.birth_date.day):
            years -= 1
        return years

    @property
    def age(self) -> int:
        return self.age_on(self.deceased or self.today)

    def height_on(self, day: date) -> float:
        """Height in cm on ``day``, following a rough growth curve towards the adult height."""
        years = (day - self.birth_date).days / 365.25
        if years < 2:
            fraction = 0.29 + 0.11 * years
        elif years < 14:
            fraction = 0.51 + 0.034 * (years - 2)
        else:
            fraction = min(1.0, 0.918 + 0.0205 * (years - 14))
        return round(self.adult_height_cm * fraction, 1)

    @property
    def last_day(self) -> date:
        return self.deceased or self.today

    def has(self, key: str, on: date | None = None) -> bool:
        onset = self.chronic.get(key)
        return onset is not None and (on is None or onset <= on)

    def allergic_to(self, key: str) -> bool:
        return any(a.allergen.key == key for a in self.allergies)


def random_date(rng: random.Random, start: date, end: date) -> date:
    span = (end - start).days
    return start + timedelta(days=rng.randint(0, max(span, 0)))


def draw_person(rng: random.Random, today: date, history_years: int) -> Person:
    low, high, _ = rng.choices(AGE_BANDS, weights=_BAND_WEIGHTS)[0]
    age = rng.randrange(low, high)
    female_share = 0.5 if age < 65 else (0.55 if age < 85 else 0.63)
    sex = "female" if rng.random() < female_share else "male"
    birth = today - timedelta(days=age * 365 + rng.randint(0, 364))
    person = Person(sex=sex, birth_date=birth, today=today)
    person.adult_height_cm = round(rng.gauss(176.0 if sex == "male" else 162.0, 7.0), 1)
    person.smoking = _smoking(rng, age)
    _draw_conditions(rng, person)
    _draw_allergies(rng, person)
    person.deceased = _death(rng, person, history_years)
    return person


def _smoking(rng: random.Random, age: int) -> str:
    if age < 13:
        return "never"
    if age < 18:
        return "current" if rng.random() < 0.02 else "never"
    draw = rng.random()
    if draw < 0.12:
        return "current"
    if draw < 0.12 + (0.30 if age >= 50 else 0.12):
        return "former"
    return "never"


def prevalence(key: str, person: Person) -> float:
    condition = CHRONIC_BY_KEY[key]
    age = person.age
    base = next((p for lo, hi, p in condition.prevalence if lo <= age < hi), 0.0)
    if person.sex == "female":
        base *= condition.female_factor
    return base


def _draw_conditions(rng: random.Random, person: Person) -> None:
    """Conditions in an order where earlier ones raise the odds of later ones."""
    age = person.age
    odds: dict[str, float] = {}
    for condition in CHRONIC:
        odds[condition.key] = prevalence(condition.key, person)
    order = ["obesity", "hypertension", "hyperlipidemia", "diabetes", "asthma", "copd", "ckd"]
    order += [c.key for c in CHRONIC if c.key not in order]
    for key in order:
        p = odds[key]
        if key == "diabetes" and "obesity" in person.chronic:
            p *= 1.8
        if key == "copd":
            p *= {"current": 3.0, "former": 2.0, "never": 0.25}[person.smoking]
        if key == "ckd" and ("diabetes" in person.chronic or "hypertension" in person.chronic):
            p *= 1.8
        if key in ("heart_failure", "atrial_fibrillation") and "hypertension" in person.chronic:
            p *= 1.5
        if rng.random() < min(p, 0.95):
            earliest = max(CHRONIC_BY_KEY[key].prevalence[0][0], 2)
            onset_age = rng.randint(min(earliest, age), age) if age > earliest else age
            onset = person.birth_date + timedelta(days=onset_age * 365 + rng.randint(0, 300))
            person.chronic[key] = min(onset, person.today)
    if "obesity" in person.chronic:
        person.bmi = round(rng.uniform(30.5, 41.0), 1)
    elif age >= 18:
        person.bmi = round(rng.uniform(19.5, 29.4), 1)
    else:
        person.bmi = round(rng.uniform(14.5, 19.5), 1)


def _draw_allergies(rng: random.Random, person: Person) -> None:
    for allergen in ALLERGENS:
        if rng.random() < allergen.prevalence:
            add_allergy(rng, person, allergen)


def add_allergy(rng: random.Random, person: Person, allergen: Allergen, reaction_key: str | None = None) -> None:
    reaction = REACTIONS[reaction_key] if reaction_key else rng.choice(allergen.reactions)
    severe = reaction == REACTIONS["anaphylaxis"]
    severity = "severe" if severe else rng.choice(("mild", "moderate"))
    onset = random_date(rng, person.birth_date + timedelta(days=365), person.today)
    person.allergies.append(
        AllergyFact(allergen, min(onset, person.today), reaction, severity, "high" if severe else "low")
    )


def _death(rng: random.Random, person: Person, history_years: int) -> date | None:
    """Some of the oldest and sickest die within the window; their charts stop there."""
    age = person.age
    yearly = next(p for limit, p in _MORTALITY if age < limit)
    yearly *= 1.0 + 0.5 * sum(1 for k in ("heart_failure", "copd", "ckd") if k in person.chronic)
    if age < 40 or rng.random() >= yearly * history_years / 3:
        return None
    window_start = person.today - timedelta(days=365 * history_years)
    latest_onset = max(person.chronic.values(), default=window_start)
    start = max(window_start + timedelta(days=180), latest_onset + timedelta(days=30))
    if start >= person.today:
        return None
    return random_date(rng, start, person.today - timedelta(days=1))
