"""Writing one person's chart: encounters over the history window and what each one records.

The timeline is laid out first (well visits on the CDC schedule, follow-ups at
each chronic condition's cadence, acute episodes, referrals), then every
encounter records what its visit would: vital signs that fit the person's
conditions, labs that fall due, the medications started for a condition
(with the condition as their reason), immunizations due, screenings due.
Nothing happens before birth or after death.

References inside the patient's bundle are ``urn:uuid:`` full URLs; references
into the shared directory are literal ``Practitioner/{id}`` and ``Organization/{id}``.
"""

from __future__ import annotations

import base64
import calendar
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from faker import Faker

from synthetic_data.cases import Order, SentReferral
from synthetic_data.codes import (
    ACT_CODE,
    ACUTE,
    ALLERGY_CLINICAL,
    ALLERGY_VERIFICATION,
    CHILD_SCHEDULE,
    CHRONIC_BY_KEY,
    CONDITION_CATEGORY,
    CONDITION_CLINICAL,
    CONDITION_VERIFICATION,
    CVX,
    DIAGNOSTIC_SERVICE,
    ENCOUNTER_TYPES,
    FICTIONAL_PHONE,
    IDENTIFIER_TYPE,
    INFLUENZA,
    LAB_EFFECTS,
    LAB_PANELS,
    LABS,
    LOINC,
    MARITAL_STATUS,
    MED,
    MEMBER_SYSTEM,
    MRN_SYSTEM,
    OBS_CATEGORY,
    PARTICIPATION_TYPE,
    PAYER_TYPE,
    PNEUMO_ADULT,
    REFERRAL_PROCEDURE,
    RXNORM,
    SCREENINGS,
    SMOKING_STATUS_LOINC,
    SMOKING_VALUES,
    SNOMED,
    SPECIALTIES,
    TD_ADULT,
    UCUM,
    VITAL_CODES,
    ZOSTER,
    Acute,
    Code,
    Medication,
    code_status_code,
    code_status_value,
)
from synthetic_data.ids import IdSource
from synthetic_data.population import Person, random_date
from synthetic_data.providers import Clinician, Directory

Resource = dict[str, Any]

# How often a lab panel is repeated while its condition lasts (days).
_PANEL_INTERVAL = {"hba1c": 90, "bmp": 365, "lipids": 365, "uacr": 365, "bnp": 180, "phq9": 90, "fev1": 365}
_NSAIDS = frozenset({MED["naproxen"].rxnorm, MED["ibuprofen"].rxnorm})
_NO_NSAIDS = ("ckd", "heart_failure", "atrial_fibrillation")
_WELL_CHILD_MONTHS = (0, 1, 2, 4, 6, 9, 12, 15, 18, 24, 30, 36, 48)
# Code status: how often an adult's chart has one, and how often it is DNR, by age band (from, share, DNR share);
# a serious chronic illness (below) makes both likelier.  Older and sicker people are asked, and decline CPR,
# more often; children's charts hold none outside a hospital stay.
_CODE_STATUS_BANDS = ((18, 0.05, 0.02), (50, 0.15, 0.05), (65, 0.45, 0.15), (80, 0.7, 0.4))
_SERIOUS = ("heart_failure", "copd", "ckd")


def _concept(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _category(system: str, code: str, display: str) -> list[dict[str, Any]]:
    return [{"coding": [{"system": system, "code": code, "display": display}]}]


_VITAL_CATEGORY = _category(OBS_CATEGORY, "vital-signs", "Vital Signs")
_LAB_CATEGORY = _category(OBS_CATEGORY, "laboratory", "Laboratory")
_SURVEY_CATEGORY = _category(OBS_CATEGORY, "survey", "Survey")
_SOCIAL_CATEGORY = _category(OBS_CATEGORY, "social-history", "Social History")
_PROBLEM_CATEGORY = _category(CONDITION_CATEGORY, "problem-list-item", "Problem List Item")
_ENCOUNTER_DIAGNOSIS = _category(CONDITION_CATEGORY, "encounter-diagnosis", "Encounter Diagnosis")
_LAB_SERVICE = _category(DIAGNOSTIC_SERVICE, "LAB", "Laboratory")
_ACTIVE = _concept(CONDITION_CLINICAL, "active", "Active")
_RESOLVED = _concept(CONDITION_CLINICAL, "resolved", "Resolved")
_CONFIRMED = _concept(CONDITION_VERIFICATION, "confirmed", "Confirmed")
_PROVISIONAL = _concept(CONDITION_VERIFICATION, "provisional", "Provisional")
_ALLERGY_ACTIVE = _concept(ALLERGY_CLINICAL, "active", "Active")
_ALLERGY_CONFIRMED = _concept(ALLERGY_VERIFICATION, "confirmed", "Confirmed")
_PRIMARY_PERFORMER = [_concept(PARTICIPATION_TYPE, "PPRF", "primary performer")]
_CLASSES = {
    "AMB": {"system": ACT_CODE, "code": "AMB", "display": "ambulatory"},
    "EMER": {"system": ACT_CODE, "code": "EMER", "display": "emergency"},
}


def _instant(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Visit:
    """One planned encounter before it is written."""

    when: datetime
    kind: str  # wellness | follow_up | diagnosis | acute | specialist
    clinician: Clinician
    conditions: list[str] = field(default_factory=list)  # chronic keys this visit addresses
    acute: Acute | None = None
    diagnoses: list[str] = field(default_factory=list)  # chronic keys first diagnosed here
    referral_to: str | None = None  # specialty


@dataclass
class Options:
    today: date
    history_years: int


class ChartWriter:
    def __init__(
        self,
        person: Person,
        *,
        ids: IdSource,
        rng: random.Random,
        fake: Faker,
        directory: Directory,
        clinic_index: int,
        options: Options,
        mrn: str,
        patient_id: str | None = None,
    ) -> None:
        self.person = person
        self.ids = ids
        self.rng = rng
        self.fake = fake
        self.directory = directory
        self.options = options
        self.mrn = mrn
        self.clinic = directory.clinics[clinic_index % len(directory.clinics)]
        specialty = "pediatrics" if person.age < 18 else rng.choice(("family_medicine", "internal_medicine"))
        staff = self.clinic.staff(specialty) or self.clinic.clinicians
        self.pcp = rng.choice(staff)
        # A case patient keeps the readable id its case file gives it; its fullUrl is still a urn:uuid.
        patient_uuid = ids.next()
        self.patient_id = patient_id or patient_uuid
        self.patient_ref = f"urn:uuid:{patient_uuid}"
        self.resources: list[Resource] = []
        self.by_id: dict[str, Resource] = {}
        self.full_urls: dict[str, str] = {}  # resource id -> fullUrl
        self.condition_ids: dict[str, str] = {}  # chronic key -> Condition id
        self.treated: set[str] = set()  # chronic keys whose medications have been started
        self.active_drugs: set[str] = set()  # RxNorm codes of long-term prescriptions
        self.last_panel: dict[str, date] = {}
        self.given_vaccines: set[str] = set()
        self.name = ""
        self.fixed_name: tuple[tuple[str, ...], str] | None = None  # a training case's given names and family
        self.presenting: _Context | None = None  # a training case's encounter of today, once written

    # ---- plumbing -------------------------------------------------------------------------

    def _add(self, resource: Resource) -> str:
        rid = resource["id"]
        self.resources.append(resource)
        self.by_id[rid] = resource
        self.full_urls[rid] = f"urn:uuid:{rid}"
        return rid

    def _ref(self, rid: str) -> dict[str, str]:
        return {"reference": f"urn:uuid:{rid}"}

    def _subject(self) -> dict[str, str]:
        return {"reference": self.patient_ref, "display": self.name}

    @staticmethod
    def _who(clinician: Clinician) -> dict[str, str]:
        return {"reference": f"Practitioner/{clinician.id}", "display": clinician.display}

    # ---- the chart ------------------------------------------------------------------------

    def write(self) -> list[Resource]:
        self._patient()
        self._coverage()
        self._allergies()
        for key in sorted(self.person.chronic, key=lambda k: (self.person.chronic[k], k)):
            self._chronic_condition(key)
        for visit in self._plan():
            self._encounter(visit)
        self._code_status()
        return self.resources

    def _patient(self) -> None:
        person, fake, rng = self.person, self.fake, self.rng
        male = person.sex == "male"
        given = fake.first_name_male() if male else fake.first_name_female()
        middle = fake.first_name_male() if male else fake.first_name_female()
        family = fake.last_name()
        given_names = [given, middle]
        if self.fixed_name:
            given_names, family = list(self.fixed_name[0]), self.fixed_name[1]
            given = given_names[0]
        self.name = f"{given} {family}"
        state = self.clinic.state
        patient: Resource = {
            "resourceType": "Patient",
            "id": self.patient_id,
            "identifier": [
                {
                    "use": "usual",
                    "type": _concept(IDENTIFIER_TYPE, "MR", "Medical record number"),
                    "system": MRN_SYSTEM,
                    "value": self.mrn,
                }
            ],
            "active": True,
            "name": [{"use": "official", "family": family, "given": given_names}],
            "telecom": [
                {"system": "phone", "value": fake.numerify(FICTIONAL_PHONE), "use": "home"},
                {"system": "email", "value": f"{given}.{family}{rng.randint(1, 99)}@example.com".lower()},
            ],
            "gender": person.sex,
            "birthDate": person.birth_date.isoformat(),
        }
        if person.deceased:
            patient["deceasedDateTime"] = _instant(self._at(person.deceased, 3))
        patient["address"] = [
            {
                "use": "home",
                "line": [fake.street_address()],
                "city": fake.city(),
                "state": state,
                "postalCode": fake.zipcode_in_state(state),
                "country": "US",
            }
        ]
        if person.age >= 18:
            status = rng.choice((("M", "Married"), ("S", "Never Married"), ("D", "Divorced"), ("W", "Widowed")))
            patient["maritalStatus"] = _concept(MARITAL_STATUS, status[0], status[1])
        patient["communication"] = [
            {"language": _concept("urn:ietf:bcp:47", "en-US", "English (United States)"), "preferred": True}
        ]
        patient["generalPractitioner"] = [self._who(self.pcp)]
        patient["managingOrganization"] = {"reference": f"Organization/{self.clinic.id}", "display": self.clinic.name}
        self.resources.append(patient)
        self.full_urls[self.patient_id] = self.patient_ref

    def _coverage(self) -> None:
        person, payers = self.person, self.directory.payers
        if person.age >= 65:
            payer = payers["medicare"]
        elif self.rng.random() < (0.4 if person.age < 18 else 0.18):
            payer = payers["medicaid"]
        else:
            payer = payers[self.rng.choice(("private", "private2"))]
        start = max(person.birth_date, self._window_start())
        member = self.fake.bothify("??#########").upper()
        coverage: Resource = {
            "resourceType": "Coverage",
            "id": self.ids.next(),
            "identifier": [{"system": MEMBER_SYSTEM, "value": member}],
            "status": "active" if not person.deceased else "cancelled",
            "type": _concept(PAYER_TYPE, payer.sop_code, payer.sop_display),
            "subscriberId": member,
            "beneficiary": self._subject(),
            "relationship": _concept("http://terminology.hl7.org/CodeSystem/subscriber-relationship", "self", "Self"),
            "period": {"start": start.isoformat()},
            "payor": [{"reference": f"Organization/{payer.id}", "display": payer.name}],
        }
        if person.deceased:
            coverage["period"]["end"] = person.deceased.isoformat()
        self._add(coverage)

    def _allergies(self) -> None:
        for fact in self.person.allergies:
            allergen = fact.allergen
            self._add(
                {
                    "resourceType": "AllergyIntolerance",
                    "id": self.ids.next(),
                    "clinicalStatus": _ALLERGY_ACTIVE,
                    "verificationStatus": _ALLERGY_CONFIRMED,
                    "type": "allergy",
                    "category": [allergen.category],
                    "criticality": fact.criticality,
                    "code": _concept(allergen.system, allergen.code, allergen.display),
                    "patient": self._subject(),
                    "onsetDateTime": fact.onset.isoformat(),
                    "recordedDate": _instant(self._at(max(fact.onset, self._window_start()), 1)),
                    "recorder": self._who(self.pcp),
                    "reaction": [
                        {
                            "manifestation": [_concept(SNOMED, fact.reaction[0], fact.reaction[1])],
                            "severity": fact.severity,
                        }
                    ],
                }
            )

    def _chronic_condition(self, key: str) -> None:
        condition = CHRONIC_BY_KEY[key]
        onset = self.person.chronic[key]
        rid = self.ids.next()
        self.condition_ids[key] = rid
        self._add(
            {
                "resourceType": "Condition",
                "id": rid,
                "clinicalStatus": _ACTIVE,
                "verificationStatus": _CONFIRMED,
                "category": _PROBLEM_CATEGORY,
                "code": _concept(SNOMED, condition.snomed, condition.display),
                "subject": self._subject(),
                "onsetDateTime": onset.isoformat(),
                "recordedDate": max(onset, self._window_start()).isoformat(),
                "recorder": self._who(self.pcp),
            }
        )

    def _code_status(self) -> None:
        """Code status, recorded at the latest visit, for the adults whose chart has one.

        Drawn from a stream and ids of its own (``{scope}/code-status``), so that adding it left every other
        value and id of a chart as it was.
        """
        person = self.person
        age = person.age_on(person.last_day)
        band = next((b for b in reversed(_CODE_STATUS_BANDS) if age >= b[0]), None)
        visits = [r for r in self.resources if r["resourceType"] == "Encounter"]
        if band is None or not visits:
            return
        rng = random.Random(f"{self.ids.scope}/code-status")
        _, share, dnr_share = band
        if any(person.has(key) for key in _SERIOUS):
            share, dnr_share = min(1.0, share + 0.3), min(1.0, dnr_share + 0.15)
        if rng.random() >= share:
            return
        value = code_status_value("dnr" if rng.random() < dnr_share else "full")
        visit = visits[-1]
        when = visit["period"]["start"]
        self._add(
            {
                "resourceType": "Observation",
                "id": IdSource(f"{self.ids.scope}/code-status").next(),
                "status": "final",
                "code": code_status_code(),
                "subject": self._subject(),
                "encounter": self._ref(visit["id"]),
                "effectiveDateTime": when,
                "issued": when,
                "performer": [visit["participant"][0]["individual"]],
                "valueCodeableConcept": value,
            }
        )

    # ---- the timeline ---------------------------------------------------------------------

    def _window_start(self) -> date:
        start = self.options.today - timedelta(days=round(365.25 * self.options.history_years))
        return max(start, self.person.birth_date)

    def _at(self, day: date, hour_slot: int | None = None) -> datetime:
        """A clinic time on ``day`` (UTC, daytime in the continental US)."""
        hour = 14 + (hour_slot if hour_slot is not None else self.rng.randint(0, 7))
        minute = 0 if hour_slot is not None else self.rng.choice((0, 15, 30, 45))
        return datetime(day.year, day.month, day.day, hour, minute)

    def _plan(self) -> list[Visit]:
        person, rng = self.person, self.rng
        # The day of death has no visits: its time of death would have to fall after the last one.
        start, end = self._window_start(), person.deceased - timedelta(days=1) if person.deceased else person.today
        visits: list[Visit] = []

        # Well visits: the well-child schedule, then yearly.
        birth = person.birth_date
        well_days = [_add_months(birth, m) for m in _WELL_CHILD_MONTHS]
        anchor = _add_months(birth, 60 + rng.randint(0, 6))
        while anchor <= end:
            well_days.append(anchor)
            anchor = _add_months(anchor, 12) + timedelta(days=rng.randint(-20, 20))
        for day in well_days:
            if start <= day <= end:
                visits.append(Visit(self._at(day), "wellness", self.pcp))

        # Chronic conditions: a diagnosis visit (if within the window), then follow-ups at the condition's cadence.
        for key, onset in sorted(person.chronic.items(), key=lambda kv: (kv[1], kv[0])):
            condition = CHRONIC_BY_KEY[key]
            if start <= onset <= end:
                visits.append(Visit(self._at(onset), "diagnosis", self.pcp, [key], diagnoses=[key]))
                referred = condition.specialty and rng.random() < condition.referral_rate
                if referred and onset + timedelta(days=45) <= end:
                    visits[-1].referral_to = condition.specialty
                    specialist = rng.choice(self.directory.specialists(condition.specialty or ""))
                    visit_day = onset + timedelta(days=rng.randint(14, 42))
                    visits.append(Visit(self._at(visit_day), "specialist", specialist, [key]))
            if key == "obesity":
                continue  # weight is addressed at well visits
            day = max(onset, start) + timedelta(days=rng.randint(20, 60))
            while day <= end:
                visits.append(Visit(self._at(day), "follow_up", self.pcp, [key]))
                day = _add_months(day, condition.follow_up_months) + timedelta(days=rng.randint(-14, 14))

        # Acute problems, at their yearly rates.
        year_start = start
        while year_start <= end:
            for acute in ACUTE:
                lo, hi = acute.ages
                if lo <= person.age_on(year_start) < hi and rng.random() < acute.yearly_rate:
                    day = random_date(rng, year_start, min(end, year_start + timedelta(days=364)))
                    kind = "acute"
                    clinician = self.pcp
                    if acute.key == "sprain":
                        clinician = rng.choice(self.directory.specialists("emergency"))
                    visits.append(Visit(self._at(day), kind, clinician, acute=acute))
            year_start += timedelta(days=365)

        # Follow-ups that fall within a month of each other become one visit.
        visits.sort(key=lambda v: (v.when, v.kind))
        merged: list[Visit] = []
        for visit in visits:
            last = merged[-1] if merged else None
            if (
                last is not None
                and visit.kind == "follow_up"
                and last.kind in ("follow_up", "diagnosis", "wellness")
                and (visit.when - last.when).days < 30
            ):
                last.conditions.extend(k for k in visit.conditions if k not in last.conditions)
                continue
            merged.append(visit)
        return merged

    # ---- one encounter --------------------------------------------------------------------

    def _encounter(self, visit: Visit) -> None:
        person = self.person
        day = visit.when.date()
        age = person.age_on(day)
        minutes = {"wellness": 30, "follow_up": 20, "diagnosis": 30, "acute": 20, "specialist": 40}[visit.kind]
        if visit.acute and visit.acute.key == "sprain":
            minutes = 120
        start, end = visit.when, visit.when + timedelta(minutes=minutes)
        acute_condition_id: str | None = None
        if visit.acute:
            acute_condition_id = self.ids.next()
        if visit.kind == "wellness":
            type_key = "well_child" if age < 18 else "wellness"
        elif visit.kind == "acute":
            type_key = "emergency" if visit.acute and visit.acute.key == "sprain" else "symptom"
        elif visit.kind == "diagnosis":
            type_key = "symptom"
        else:
            type_key = "follow_up"
        encounter_id = self.ids.next()
        organization = visit.clinician.organization
        encounter: Resource = {
            "resourceType": "Encounter",
            "id": encounter_id,
            "status": "finished",
            "class": _CLASSES["EMER" if type_key == "emergency" else "AMB"],
            "type": [_concept(SNOMED, *ENCOUNTER_TYPES[type_key])],
            "subject": self._subject(),
            "participant": [
                {
                    "type": _PRIMARY_PERFORMER,
                    "period": {"start": _instant(start), "end": _instant(end)},
                    "individual": self._who(visit.clinician),
                }
            ],
            "period": {"start": _instant(start), "end": _instant(end)},
        }
        reasons = [self._ref(self.condition_ids[k]) for k in visit.conditions if k in self.condition_ids]
        if acute_condition_id:
            reasons.append(self._ref(acute_condition_id))
        if reasons:
            encounter["reasonReference"] = reasons
        encounter["serviceProvider"] = {"reference": f"Organization/{organization.id}", "display": organization.name}
        self._add(encounter)
        context = _Context(encounter_id, start, end, visit.clinician)

        # Conditions diagnosed at this encounter point back to it.
        for key in visit.diagnoses:
            self.by_id[self.condition_ids[key]]["encounter"] = self._ref(encounter_id)
        if visit.acute:
            self._acute_condition(visit.acute, acute_condition_id or "", context)

        active = [k for k in person.chronic if person.has(k, day)]
        full_vitals = visit.kind in ("wellness", "diagnosis", "specialist")
        self._vitals(context, day, active, visit, full=full_vitals)
        if visit.kind == "wellness" and age >= 13:
            self._smoking(context)
        panels = self._due_panels(day, active, visit)
        for panel in panels:
            self._lab_panel(panel, context, active)
        for key in visit.diagnoses:
            for code in CHRONIC_BY_KEY[key].procedures:
                self._procedure(code, context, reason=key)
        if visit.referral_to:
            self._referral(visit.referral_to, context, visit.diagnoses[0])
        if visit.kind == "wellness":
            self._screenings(context, day, age)
            self._immunizations(context, day, age)
        for key in visit.conditions:
            self._start_medications(key, context)
        if visit.acute:
            self._acute_medication(visit.acute, acute_condition_id or "", context)

    def presenting_encounter(self, reason: Code, encounter_class: str, vitals: dict[str, float]) -> None:
        """Today's encounter, in progress, for a training case: the reason the trainee sees the patient.

        It records the reason as a provisional encounter diagnosis and the vital signs the case gives;
        what follows (orders, referrals, notes) is the trainee's task.
        """
        today = self.options.today
        start = datetime(today.year, today.month, today.day, 15, 0)
        encounter_id = self.ids.next()
        condition_id = self.ids.next()
        self._add(
            {
                "resourceType": "Encounter",
                "id": encounter_id,
                "status": "in-progress",
                "class": _CLASSES[encounter_class],
                "type": [_concept(SNOMED, *ENCOUNTER_TYPES["symptom"])],
                "subject": self._subject(),
                "participant": [
                    {
                        "type": _PRIMARY_PERFORMER,
                        "period": {"start": _instant(start)},
                        "individual": self._who(self.pcp),
                    }
                ],
                "period": {"start": _instant(start)},
                "reasonCode": [_concept(SNOMED, *reason)],
                "serviceProvider": {"reference": f"Organization/{self.clinic.id}", "display": self.clinic.name},
            }
        )
        self._add(
            {
                "resourceType": "Condition",
                "id": condition_id,
                "clinicalStatus": _ACTIVE,
                "verificationStatus": _PROVISIONAL,
                "category": _ENCOUNTER_DIAGNOSIS,
                "code": _concept(SNOMED, *reason),
                "subject": self._subject(),
                "encounter": self._ref(encounter_id),
                "onsetDateTime": today.isoformat(),
                "recordedDate": _instant(start),
                "recorder": self._who(self.pcp),
            }
        )
        ctx = _Context(encounter_id, start, start, self.pcp)
        self.presenting = ctx
        if "systolic" in vitals and "diastolic" in vitals:
            self._bp(ctx, int(vitals["systolic"]), int(vitals["diastolic"]))
        for key in ("heart_rate", "respiratory_rate", "temperature", "spo2"):
            if key in vitals:
                self._vital(ctx, key, vitals[key])

    def _acute_condition(self, acute: Acute, rid: str, ctx: _Context) -> None:
        onset = ctx.start.date() - timedelta(days=self.rng.randint(1, 4))
        abated = ctx.start.date() + timedelta(days=acute.days)
        resolved = abated <= self.person.last_day
        condition: Resource = {
            "resourceType": "Condition",
            "id": rid,
            "clinicalStatus": _RESOLVED if resolved else _ACTIVE,
            "verificationStatus": _CONFIRMED,
            "category": _ENCOUNTER_DIAGNOSIS,
            "code": _concept(SNOMED, acute.snomed, acute.display),
            "subject": self._subject(),
            "encounter": self._ref(ctx.encounter_id),
            "onsetDateTime": max(onset, self.person.birth_date).isoformat(),
        }
        if resolved:
            condition["abatementDateTime"] = abated.isoformat()
        condition["recordedDate"] = _instant(ctx.start)
        condition["recorder"] = self._who(ctx.clinician)
        self._add(condition)

    def _vitals(self, ctx: _Context, day: date, active: list[str], visit: Visit, *, full: bool) -> None:
        person, rng = self.person, self.rng
        age = person.age_on(day)
        treated_bp = "hypertension" in self.treated
        if "hypertension" in active:
            systolic = rng.randint(128, 146) if treated_bp else rng.randint(138, 165)
            diastolic = rng.randint(82, 96)
        elif age < 13:
            systolic, diastolic = rng.randint(88, 112), rng.randint(50, 70)
        else:
            systolic, diastolic = rng.randint(104, 128), rng.randint(64, 80)
        if age >= 3:
            self._bp(ctx, systolic, diastolic)
        if age < 2:
            heart_rate = rng.randint(100, 150)
        elif age < 12:
            heart_rate = rng.randint(75, 115)
        elif "atrial_fibrillation" in active:
            heart_rate = rng.randint(82, 118)
        else:
            heart_rate = rng.randint(58, 92)
        self._vital(ctx, "heart_rate", heart_rate)
        height = person.height_on(day)
        bmi = person.bmi if age >= 18 else round(rng.uniform(14.5, 19.5), 1)
        if age >= 18:
            bmi = round(bmi + rng.uniform(-0.6, 0.6), 1)
            if "obesity" in active:
                bmi = max(bmi, 30.1)
            elif person.has("obesity"):
                bmi = min(bmi, 29.4)  # before the diagnosis
            else:
                bmi = min(bmi, 29.8)
        weight = round(bmi * (height / 100) ** 2, 1)
        self._vital(ctx, "weight", weight)
        respiratory = "copd" in active or "asthma" in active or "heart_failure" in active
        if visit.acute and visit.acute.key in ("bronchitis", "sinusitis", "strep", "otitis", "uti"):
            self._vital(ctx, "temperature", round(rng.uniform(37.8, 39.2), 1))
        elif full:
            self._vital(ctx, "temperature", round(rng.uniform(36.4, 37.2), 1))
        if full or respiratory:
            if "copd" in active:
                spo2 = rng.randint(88, 94)
            elif "heart_failure" in active:
                spo2 = rng.randint(92, 96)
            else:
                spo2 = rng.randint(96, 100)
            self._vital(ctx, "spo2", spo2)
        if full:
            rate = rng.randint(24, 40) if age < 2 else (rng.randint(18, 26) if age < 12 else rng.randint(12, 18))
            if "copd" in active:
                rate = rng.randint(18, 24)
            self._vital(ctx, "respiratory_rate", rate)
            self._vital(ctx, "height", height)
            if age >= 2:
                self._vital(ctx, "bmi", bmi)

    def _observation(self, ctx: _Context, category: list[dict[str, Any]], code: str, display: str, **value: Any) -> str:
        rid = self.ids.next()
        observation: Resource = {
            "resourceType": "Observation",
            "id": rid,
            "status": "final",
            "category": category,
            "code": _concept(LOINC, code, display),
            "subject": self._subject(),
            "encounter": self._ref(ctx.encounter_id),
            "effectiveDateTime": ctx.start_instant,
            "issued": ctx.start_instant,
        }
        observation.update(value)
        self._add(observation)
        return rid

    def _quantity(self, value: float, unit: str) -> dict[str, Any]:
        return {"value": value, "unit": unit, "system": UCUM, "code": unit}

    def _vital(self, ctx: _Context, key: str, value: float) -> None:
        code, display, unit, _ = VITAL_CODES[key]
        self._observation(ctx, _VITAL_CATEGORY, code, display, valueQuantity=self._quantity(value, unit))

    def _bp(self, ctx: _Context, systolic: int, diastolic: int) -> None:
        code, display, unit, _ = VITAL_CODES["bp"]
        components = []
        for key, value in (("systolic", systolic), ("diastolic", diastolic)):
            c_code, c_display, _, _ = VITAL_CODES[key]
            components.append(
                {"code": _concept(LOINC, c_code, c_display), "valueQuantity": self._quantity(value, unit)}
            )
        self._observation(ctx, _VITAL_CATEGORY, code, display, component=components)

    def _smoking(self, ctx: _Context) -> None:
        code, display = SMOKING_VALUES[self.person.smoking]
        self._observation(
            ctx,
            _SOCIAL_CATEGORY,
            SMOKING_STATUS_LOINC[0],
            SMOKING_STATUS_LOINC[1],
            valueCodeableConcept=_concept(SNOMED, code, display),
        )

    def _due_panels(self, day: date, active: list[str], visit: Visit) -> list[str]:
        age = self.person.age_on(day)
        wanted: dict[str, int] = {}
        for key in active:
            if key in visit.conditions or visit.kind == "wellness":
                for panel in CHRONIC_BY_KEY[key].labs:
                    wanted[panel] = _PANEL_INTERVAL[panel]
        if visit.kind == "wellness" and age >= 20:
            wanted.setdefault("lipids", 5 * 365)
        if visit.kind == "wellness" and age >= 35:
            wanted.setdefault("bmp", 3 * 365)
        due = []
        for panel, interval in wanted.items():
            last = self.last_panel.get(panel)
            if last is None or (day - last).days >= interval - 30:
                self.last_panel[panel] = day
                due.append(panel)
        return due

    def _lab_value(self, loinc: str, active: list[str]) -> float:
        lab = LABS[loinc]
        low, high = lab.low, lab.high
        for key in active:
            effect = LAB_EFFECTS.get(key, {}).get(loinc)
            if effect:
                low, high = effect
        value = round(self.rng.uniform(low, high), lab.decimals)
        return int(value) if lab.decimals == 0 else value

    def _lab_panel(self, panel: str, ctx: _Context, active: list[str]) -> None:
        (report_code, report_display), members = LAB_PANELS[panel]
        category = _SURVEY_CATEGORY if panel == "phq9" else _LAB_CATEGORY
        results = []
        for loinc in members:
            lab = LABS[loinc]
            rid = self._observation(
                ctx,
                category,
                lab.loinc,
                lab.display,
                valueQuantity=self._quantity(self._lab_value(loinc, active), lab.unit),
            )
            results.append(self._ref(rid))
        if panel in ("phq9", "fev1"):
            return  # a questionnaire score or a spirometry result, not a laboratory report
        self._add(
            {
                "resourceType": "DiagnosticReport",
                "id": self.ids.next(),
                "status": "final",
                "category": _LAB_SERVICE,
                "code": _concept(LOINC, report_code, report_display),
                "subject": self._subject(),
                "encounter": self._ref(ctx.encounter_id),
                "effectiveDateTime": _instant(ctx.start),
                "issued": _instant(ctx.end),
                "performer": [self._who(ctx.clinician)],
                "result": results,
            }
        )

    def _procedure(self, code: Code, ctx: _Context, reason: str | None = None) -> None:
        procedure: Resource = {
            "resourceType": "Procedure",
            "id": self.ids.next(),
            "status": "completed",
            "code": _concept(SNOMED, code[0], code[1]),
            "subject": self._subject(),
            "encounter": self._ref(ctx.encounter_id),
            "performedPeriod": {"start": _instant(ctx.start), "end": _instant(ctx.end)},
            "performer": [{"actor": self._who(ctx.clinician)}],
        }
        if reason and reason in self.condition_ids:
            procedure["reasonReference"] = [self._ref(self.condition_ids[reason])]
        self._add(procedure)

    def case_orders(self, orders: Sequence[Order]) -> None:
        """A training case's medication orders placed at today's visit, active, for the trainee to verify."""
        ctx = self.presenting
        for order in orders:
            assert ctx is not None  # the case parser requires a presenting encounter for orders
            medication = MED[order.medication]
            reason_id = self.ids.next()
            self._add(
                {
                    "resourceType": "Condition",
                    "id": reason_id,
                    "clinicalStatus": _ACTIVE,
                    "verificationStatus": _CONFIRMED,
                    "category": _ENCOUNTER_DIAGNOSIS,
                    "code": _concept(SNOMED, order.reason_code, order.reason_display),
                    "subject": self._subject(),
                    "encounter": self._ref(ctx.encounter_id),
                    "onsetDateTime": self.options.today.isoformat(),
                    "recordedDate": _instant(ctx.start),
                    "recorder": self._who(ctx.clinician),
                }
            )
            self._add(
                {
                    "resourceType": "MedicationRequest",
                    "id": self.ids.next(),
                    "status": "active",
                    "intent": "order",
                    "medicationCodeableConcept": _concept(RXNORM, medication.rxnorm, medication.display),
                    "subject": self._subject(),
                    "encounter": self._ref(ctx.encounter_id),
                    "authoredOn": _instant(ctx.start),
                    "requester": self._who(ctx.clinician),
                    "reasonReference": [self._ref(reason_id)],
                    "dosageInstruction": [
                        {
                            "text": medication.dosage,
                            "timing": {"repeat": {"frequency": medication.per_day, "period": 1, "periodUnit": "d"}},
                        }
                    ],
                }
            )

    def sent_referrals(self, referrals: Sequence[SentReferral]) -> None:
        """A training case's referrals sent weeks ago, each tracked by a Task that is still open; when the
        specialist has answered, their consult note (a DocumentReference) and a Communication pointing at it,
        as a consult note arrives from outside.  Closing the loop is the trainee's work."""
        today = self.options.today
        for referral in referrals:
            specialist = self.directory.specialists(referral.specialty)[0]
            role = {"reference": f"PractitionerRole/{specialist.role_id}", "display": specialist.display}
            _, _, sct, sct_display = SPECIALTIES[referral.specialty]
            sent = datetime(today.year, today.month, today.day, 10, 0) - timedelta(weeks=referral.weeks_ago)
            referral_id, task_id = self.ids.next(), self.ids.next()
            self._add(
                {
                    "resourceType": "ServiceRequest",
                    "id": referral_id,
                    "status": "active",
                    "intent": "order",
                    "priority": "routine",
                    "category": [_concept(SNOMED, "3457005", "Patient referral")],
                    "code": _concept(SNOMED, REFERRAL_PROCEDURE[0], REFERRAL_PROCEDURE[1]),
                    "subject": self._subject(),
                    "authoredOn": _instant(sent),
                    "requester": self._who(self.pcp),
                    "performerType": _concept(SNOMED, sct, sct_display),
                    "performer": [role],
                    "reasonReference": [self._ref(self.condition_ids[referral.reason])],
                }
            )
            self._add(
                {
                    "resourceType": "Task",
                    "id": task_id,
                    "status": "in-progress",
                    "intent": "order",
                    "description": f"Track the {sct_display.lower()} referral until the consult note comes back",
                    "focus": self._ref(referral_id),
                    "for": self._subject(),
                    "authoredOn": _instant(sent),
                    "requester": self._who(self.pcp),
                    "owner": role,
                }
            )
            if referral.consult_note is None:
                continue
            answered = datetime(today.year, today.month, today.day, 9, 0) - timedelta(days=2)
            note_id = self.ids.next()
            self._add(
                {
                    "resourceType": "DocumentReference",
                    "id": note_id,
                    "status": "current",
                    "type": _concept(LOINC, "11488-4", "Consult note"),
                    "subject": self._subject(),
                    "date": _instant(answered),
                    "author": [role],
                    "description": f"{sct_display} consult",
                    "content": [
                        {
                            "attachment": {
                                "contentType": "text/plain",
                                "data": base64.b64encode(referral.consult_note.encode()).decode(),
                            }
                        }
                    ],
                }
            )
            self._add(
                {
                    "resourceType": "Communication",
                    "id": self.ids.next(),
                    "status": "completed",
                    "basedOn": [self._ref(referral_id)],
                    "subject": self._subject(),
                    "sent": _instant(answered),
                    "sender": role,
                    "recipient": [self._who(self.pcp)],
                    "payload": [
                        {"contentString": f"{sct_display} consult note attached."},
                        {"contentReference": self._ref(note_id)},
                    ],
                }
            )

    def _referral(self, specialty: str, ctx: _Context, reason: str) -> None:
        _, _, sct, sct_display = SPECIALTIES[specialty]
        self._add(
            {
                "resourceType": "ServiceRequest",
                "id": self.ids.next(),
                "status": "completed",
                "intent": "order",
                "category": [_concept(SNOMED, "3457005", "Patient referral")],
                "code": _concept(SNOMED, REFERRAL_PROCEDURE[0], REFERRAL_PROCEDURE[1]),
                "subject": self._subject(),
                "encounter": self._ref(ctx.encounter_id),
                "authoredOn": _instant(ctx.end),
                "requester": self._who(ctx.clinician),
                "performerType": _concept(SNOMED, sct, sct_display),
                "reasonReference": [self._ref(self.condition_ids[reason])],
            }
        )

    def _screenings(self, ctx: _Context, day: date, age: int) -> None:
        for key, (code, sex, low, high, interval) in SCREENINGS.items():
            if (sex is None or sex == self.person.sex) and low <= age < high:
                last = self.last_panel.get(f"screen:{key}")
                if last is None or (day - last).days >= 365 * interval - 30:
                    if last is None and self.rng.random() < 0.5:
                        continue  # many are screened elsewhere or not at all; unknown before the window
                    self.last_panel[f"screen:{key}"] = day
                    self._procedure(code, ctx)

    def _immunizations(self, ctx: _Context, day: date, age: int) -> None:
        birth = self.person.birth_date
        due: list[Code] = []
        # Doses due since the window opened and not yet given are given now (a late visit catches up);
        # doses due before the window are history this chart does not hold.
        window_start = self._window_start()
        for n, (cvx, display, months) in enumerate(CHILD_SCHEDULE):
            dose_day = _add_months(birth, months)
            if f"dose:{n}" not in self.given_vaccines and window_start <= dose_day <= day + timedelta(days=14):
                self.given_vaccines.add(f"dose:{n}")
                due.append((cvx, display))
        months_old = (day - birth).days / 30.4
        if months_old >= 6 and self.rng.random() < (0.6 if age < 18 or age >= 65 else 0.4):
            due.append(INFLUENZA)
        if age >= 19 and (age - 11) % 10 == 0 and f"td:{age}" not in self.given_vaccines:
            self.given_vaccines.add(f"td:{age}")
            due.append(TD_ADULT)
        if 50 <= age <= 51 and "zoster" not in self.given_vaccines:
            self.given_vaccines.add("zoster")
            due.append(ZOSTER)
        if 65 <= age <= 66 and "ppsv23" not in self.given_vaccines:
            self.given_vaccines.add("ppsv23")
            due.append(PNEUMO_ADULT)
        for cvx, display in due:
            self._add(
                {
                    "resourceType": "Immunization",
                    "id": self.ids.next(),
                    "status": "completed",
                    "vaccineCode": _concept(CVX, cvx, display),
                    "patient": self._subject(),
                    "encounter": self._ref(ctx.encounter_id),
                    "occurrenceDateTime": _instant(ctx.start),
                    "recorded": _instant(ctx.end),
                    "primarySource": True,
                    "lotNumber": self.fake.bothify("??####").upper(),
                    "performer": [{"actor": self._who(ctx.clinician)}],
                }
            )

    def _start_medications(self, key: str, ctx: _Context) -> None:
        condition = CHRONIC_BY_KEY[key]
        if not condition.medications or key not in self.condition_ids:
            return
        if key in self.treated:
            return
        self.treated.add(key)
        count = 1 if len(condition.medications) == 1 or self.rng.random() < 0.6 else 2
        status = "stopped" if self.person.deceased else "active"
        for medication in condition.medications[:count]:
            medication = self._safe(medication)
            if medication.rxnorm in self.active_drugs:
                continue  # already taken for another condition: one prescription, not two
            self.active_drugs.add(medication.rxnorm)
            self._medication_request(medication, ctx, self.condition_ids[key], status)

    def _safe(self, medication: Medication) -> Medication:
        """NSAIDs harm kidneys and hearts and add to anticoagulants' bleeding: acetaminophen instead."""
        if medication.rxnorm in _NSAIDS and any(self.person.has(k) for k in _NO_NSAIDS):
            return MED["acetaminophen"]
        return medication

    def _acute_medication(self, acute: Acute, condition_id: str, ctx: _Context) -> None:
        choice = acute.medication
        if choice and acute.avoid_if_allergic and self.person.allergic_to(acute.avoid_if_allergic):
            choice = acute.alternative
        if choice:
            self._medication_request(self._safe(MED[choice]), ctx, condition_id, "completed")

    def _medication_request(self, medication: Medication, ctx: _Context, reason_id: str, status: str) -> None:
        self._add(
            {
                "resourceType": "MedicationRequest",
                "id": self.ids.next(),
                "status": status,
                "intent": "order",
                "medicationCodeableConcept": _concept(RXNORM, medication.rxnorm, medication.display),
                "subject": self._subject(),
                "encounter": self._ref(ctx.encounter_id),
                "authoredOn": _instant(ctx.end),
                "requester": self._who(ctx.clinician),
                "reasonReference": [self._ref(reason_id)],
                "dosageInstruction": [
                    {
                        "text": medication.dosage,
                        "timing": {"repeat": {"frequency": medication.per_day, "period": 1, "periodUnit": "d"}},
                    }
                ],
            }
        )


@dataclass
class _Context:
    encounter_id: str
    start: datetime
    end: datetime
    clinician: Clinician

    def __post_init__(self) -> None:
        self.start_instant = _instant(self.start)
        self.end_instant = _instant(self.end)


def _add_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    year = day.year + month // 12
    month = month % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))
