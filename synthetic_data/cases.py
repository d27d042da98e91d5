"""Training cases: YAML files describing a specific patient for a task, placed into the population.

A case fixes who the patient is (age, sex, conditions, allergies, smoking) and
what brings them in today (the presenting encounter, left in progress for the
trainee); the generator writes the rest of the chart around those facts.  The
patient's id and MRN come from the case file, and every other id and value of
the case's chart derives from the case id alone, so a task pack can name the
patient and find the same chart whatever seed the population uses.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from synthetic_data.codes import ALLERGEN_BY_KEY, CHRONIC_BY_KEY, MED, REACTIONS, SMOKING_VALUES, SPECIALTIES
from synthetic_data.population import Person, add_allergy

CASES_DIR = Path(__file__).parent / "cases"
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_VITALS = ("systolic", "diastolic", "heart_rate", "respiratory_rate", "temperature", "spo2")


class CaseError(ValueError):
    """A case file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Presentation:
    reason_code: str
    reason_display: str
    encounter_class: str = "AMB"
    vitals: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Order:
    """A medication order placed at today's visit before the trainee sees the chart (one to verify)."""

    medication: str  # a key of synthetic_data.codes.MED
    reason_code: str  # SNOMED CT: what it was ordered for (written as today's encounter diagnosis)
    reason_display: str


@dataclass(frozen=True)
class SentReferral:
    """A referral sent weeks before today, tracked by a Task, and the specialist's consult note if it came back."""

    specialty: str  # a key of synthetic_data.codes.SPECIALTIES
    reason: str  # one of the case's condition keys
    weeks_ago: int
    consult_note: str | None  # the note's text: arrives as a DocumentReference and a Communication


@dataclass(frozen=True)
class Case:
    id: str
    mrn: str
    description: str
    sex: str
    age: int
    given: tuple[str, ...] | None
    family: str | None
    conditions: tuple[tuple[str, int], ...]  # (chronic key, years since onset)
    allergies: tuple[tuple[str, str | None], ...]  # (allergen key, reaction key)
    smoking: str
    presenting: Presentation | None
    orders: tuple[Order, ...] = ()
    referrals: tuple[SentReferral, ...] = ()

    def person(self, rng: random.Random, today: date) -> Person:
        birth = today - timedelta(days=self.age * 365 + 30 + rng.randint(0, 300))
        person = Person(sex=self.sex, birth_date=birth, today=today, smoking=self.smoking)
        person.adult_height_cm = round(rng.gauss(176.0 if self.sex == "male" else 162.0, 5.0), 1)
        for key, years in self.conditions:
            person.chronic[key] = today - timedelta(days=round(365.25 * years) + rng.randint(0, 60))
        person.bmi = (
            round(rng.uniform(31.0, 36.0), 1) if "obesity" in person.chronic else round(rng.uniform(22.0, 28.5), 1)
        )
        for key, reaction in self.allergies:
            add_allergy(rng, person, ALLERGEN_BY_KEY[key], reaction)
        return person


def load_case(path: Path) -> Case:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise CaseError(f"{path}: not valid YAML{where} ({problem})") from None
    return parse_case(data, str(path))


def parse_case(data: Any, source: str = "case") -> Case:
    def fail(message: str) -> CaseError:
        return CaseError(f"{source}: {message}")

    if not isinstance(data, dict):
        raise fail("a case file is a YAML mapping")
    case_id = data.get("id")
    if not isinstance(case_id, str) or not _ID.match(case_id):
        raise fail("'id' must be a FHIR id (1-64 of A-Z a-z 0-9 - .)")
    mrn = data.get("mrn")
    if not isinstance(mrn, str) or not mrn.strip():
        raise fail("'mrn' is required (the patient's medical record number)")
    patient = data.get("patient") or {}
    sex = patient.get("sex")
    if sex not in ("male", "female"):
        raise fail("'patient.sex' must be male or female")
    age = patient.get("age")
    if not isinstance(age, int) or not 0 <= age <= 110:
        raise fail("'patient.age' must be a whole number of years from 0 to 110")
    name = patient.get("name") or {}
    given = name.get("given")
    if given is not None and (not isinstance(given, list) or not all(isinstance(g, str) and g for g in given)):
        raise fail("'patient.name.given' must be a list of names")
    conditions = []
    for item in data.get("conditions") or []:
        key, years = (item, 3) if isinstance(item, str) else (item.get("condition"), item.get("years", 3))
        if key not in CHRONIC_BY_KEY:
            raise fail(f"unknown condition '{key}' (known: {', '.join(sorted(CHRONIC_BY_KEY))})")
        if not isinstance(years, int) or not 0 <= years <= age:
            raise fail(f"condition '{key}': 'years' must be between 0 and the patient's age")
        conditions.append((key, years))
    allergies = []
    for item in data.get("allergies") or []:
        key, reaction = (item, None) if isinstance(item, str) else (item.get("allergen"), item.get("reaction"))
        if key not in ALLERGEN_BY_KEY:
            raise fail(f"unknown allergen '{key}' (known: {', '.join(sorted(ALLERGEN_BY_KEY))})")
        if reaction is not None and reaction not in REACTIONS:
            raise fail(f"unknown reaction '{reaction}' (known: {', '.join(sorted(REACTIONS))})")
        allergies.append((key, reaction))
    smoking = data.get("smoking", "never")
    if smoking not in SMOKING_VALUES:
        raise fail(f"'smoking' must be one of {', '.join(SMOKING_VALUES)}")
    presenting = None
    if (raw := data.get("presenting")) is not None:
        reason = raw.get("reason") or {}
        if not isinstance(reason.get("snomed"), str) or not isinstance(reason.get("display"), str):
            raise fail("'presenting.reason' needs 'snomed' (a code, quoted) and 'display'")
        vitals = raw.get("vitals") or {}
        unknown = set(vitals) - set(_VITALS)
        if unknown or not all(isinstance(v, int | float) for v in vitals.values()):
            raise fail(f"'presenting.vitals' takes numbers for {', '.join(_VITALS)}")
        presenting = Presentation(reason["snomed"], reason["display"], raw.get("class", "AMB"), dict(vitals))
        if presenting.encounter_class not in ("AMB", "EMER"):
            raise fail("'presenting.class' must be AMB or EMER")
    orders = []
    for item in data.get("orders") or []:
        if not isinstance(item, dict) or item.get("medication") not in MED:
            raise fail(f"'orders' items need 'medication' (known: {', '.join(sorted(MED))})")
        if presenting is None:
            raise fail("'orders' are placed at today's visit: the case needs 'presenting'")
        reason = item.get("reason") or {}
        if not isinstance(reason, dict) or not isinstance(reason.get("snomed"), str) or not reason.get("display"):
            raise fail("an order's 'reason' needs 'snomed' (a code, quoted) and 'display'")
        orders.append(Order(item["medication"], reason["snomed"], str(reason["display"])))
    referrals = []
    for item in data.get("referrals") or []:
        if not isinstance(item, dict) or item.get("specialty") not in SPECIALTIES:
            raise fail(f"'referrals' items need 'specialty' (known: {', '.join(sorted(SPECIALTIES))})")
        if item.get("reason") not in {key for key, _ in conditions}:
            raise fail("a referral's 'reason' must be one of the case's conditions")
        weeks = item.get("weeks_ago", 6)
        if not isinstance(weeks, int) or not 1 <= weeks <= 52:
            raise fail("a referral's 'weeks_ago' must be a whole number from 1 to 52")
        note = item.get("consult_note")
        if note is not None and (not isinstance(note, str) or not note.strip()):
            raise fail("a referral's 'consult_note' is the note's text")
        referrals.append(SentReferral(item["specialty"], item["reason"], weeks, note.strip() if note else None))
    return Case(
        id=case_id,
        mrn=mrn,
        description=str(data.get("description", "")),
        sex=sex,
        age=age,
        given=tuple(given) if given else None,
        family=name.get("family"),
        conditions=tuple(conditions),
        allergies=tuple(allergies),
        smoking=smoking,
        presenting=presenting,
        orders=tuple(orders),
        referrals=tuple(referrals),
    )


@cache
def builtin_cases() -> tuple[Case, ...]:
    return tuple(load_case(path) for path in sorted(CASES_DIR.glob("*.yaml")))
