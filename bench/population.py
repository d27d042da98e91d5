"""A benchmark store: patients with encounters, conditions and LOINC-coded observations.

Resources go in through ``Repository.write`` (the one write path, so the
search index is the real one), one database transaction per patient.  The
clinical content is plausible rather than realistic: the benchmark needs the
shape and the index volume of a real chart (about 100 resources a patient,
with several observations per LOINC code so that a patient-scoped code search
returns a full page), not a clinical model.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sandbox.app import ensure_default_sandbox
from sandbox.fhir.search_params import registry
from sandbox.store.database import Database
from sandbox.store.layers import DEFAULT_SANDBOX, View
from sandbox.store.repository import Actor, Repository

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"

# Vital signs taken at every encounter: (code, display, unit, low, high, decimals).
VITALS = [
    ("8867-4", "Heart rate", "/min", 55, 110, 0),
    ("9279-1", "Respiratory rate", "/min", 12, 22, 0),
    ("8310-5", "Body temperature", "Cel", 36.1, 38.4, 1),
    ("29463-7", "Body weight", "kg", 45, 120, 1),
    ("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", 18, 38, 1),
]
# Laboratory results, drawn at some encounters.
LABS = [
    ("2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", 70, 180, 0),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 10, 17, 1),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.6, 1.6, 2),
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.4, 5.2, 1),
]
CONDITIONS = [
    ("44054006", "Diabetes mellitus type 2"),
    ("38341003", "Hypertensive disorder"),
    ("195967001", "Asthma"),
    ("55822004", "Hyperlipidemia"),
    ("40055000", "Chronic sinusitis"),
    ("162864005", "Body mass index 30+ - obesity"),
    ("10509002", "Acute bronchitis"),
    ("444814009", "Viral sinusitis"),
    ("68496003", "Polyp of colon"),
    ("271737000", "Anemia"),
]
ENCOUNTER_TYPES = [
    ("185349003", "Encounter for check up"),
    ("390906007", "Follow-up encounter"),
    ("185345009", "Encounter for symptom"),
]
GIVEN = ["Maria", "James", "Aiko", "Olu", "Sofia", "Liam", "Chen", "Fatima", "Noah", "Elena", "Ravi", "Grace"]
FAMILY = ["Garcia", "Smith", "Tanaka", "Adeyemi", "Rossi", "Murphy", "Wang", "Haddad", "Kowalski", "Novak"]

ENCOUNTERS_PER_PATIENT = 12
LAB_ENCOUNTERS = 5  # the last few encounters draw labs
CONDITIONS_PER_PATIENT = 8
SEARCH_CODES = [code for code, *_ in VITALS]  # each patient has ENCOUNTERS_PER_PATIENT results per vital code


@dataclass(frozen=True)
class Loaded:
    patients: int
    resources: int


def patient_chart(rng: random.Random) -> list[dict[str, Any]]:
    """One patient and their chart: 1 + 12 encounters + 8 conditions + 60 vitals + 20 labs = 101 resources."""
    pid = _uuid(rng)
    patient_ref = {"reference": f"Patient/{pid}"}
    gender = rng.choice(["female", "male"])
    birth = datetime(1940, 1, 1, tzinfo=UTC) + timedelta(days=rng.randrange(0, 365 * 65))
    chart: list[dict[str, Any]] = [
        {
            "resourceType": "Patient",
            "id": pid,
            "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.3.25", "value": f"MRN{rng.randrange(10**8):08d}"}],
            "name": [{"use": "official", "family": rng.choice(FAMILY), "given": [rng.choice(GIVEN)]}],
            "gender": gender,
            "birthDate": birth.date().isoformat(),
            "address": [{"line": [f"{rng.randrange(1, 999)} Main St"], "city": "Springfield", "state": "MA"}],
        }
    ]
    start = datetime(2015, 1, 1, 9, tzinfo=UTC) + timedelta(days=rng.randrange(0, 365))
    for n in range(ENCOUNTERS_PER_PATIENT):
        when = start + timedelta(days=n * 150 + rng.randrange(0, 60), minutes=rng.randrange(0, 480))
        eid = _uuid(rng)
        etype = rng.choice(ENCOUNTER_TYPES)
        chart.append(
            {
                "resourceType": "Encounter",
                "id": eid,
                "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "type": [{"coding": [{"system": SNOMED, "code": etype[0], "display": etype[1]}]}],
                "subject": patient_ref,
                "period": {"start": _instant(when), "end": _instant(when + timedelta(minutes=30))},
            }
        )
        encounter_ref = {"reference": f"Encounter/{eid}"}
        panels = VITALS + (LABS if n >= ENCOUNTERS_PER_PATIENT - LAB_ENCOUNTERS else [])
        for code, display, unit, low, high, decimals in panels:
            category = "vital-signs" if (code, display, unit, low, high, decimals) in VITALS else "laboratory"
            value = Decimal(str(round(rng.uniform(low, high), decimals)))
            chart.append(
                {
                    "resourceType": "Observation",
                    "id": _uuid(rng),
                    "status": "final",
                    "category": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                    "code": category,
                                }
                            ]
                        }
                    ],
                    "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
                    "subject": patient_ref,
                    "encounter": encounter_ref,
                    "effectiveDateTime": _instant(when + timedelta(minutes=5)),
                    "issued": _instant(when + timedelta(minutes=40)),
                    "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
                }
            )
    for code, display in rng.sample(CONDITIONS, CONDITIONS_PER_PATIENT):
        onset = start + timedelta(days=rng.randrange(0, 1800))
        chart.append(
            {
                "resourceType": "Condition",
                "id": _uuid(rng),
                "clinicalStatus": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
                },
                "verificationStatus": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}
                    ]
                },
                "code": {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": display},
                "subject": patient_ref,
                "onsetDateTime": _instant(onset),
                "recordedDate": _instant(onset + timedelta(days=1)),
            }
        )
    return chart


def charts(patients: int, seed: int) -> Iterator[list[dict[str, Any]]]:
    rng = random.Random(seed)
    for _ in range(patients):
        yield patient_chart(rng)


def load(db: Database, patients: int, *, seed: int = 1, progress: bool = False) -> Loaded:
    """Write ``patients`` charts into the default sandbox of a fresh store, one transaction per patient.

    ``Repository.create_many`` stores the same rows as ``Repository.write`` in one
    statement per table: the charts' ids are new, and per-resource writes made
    loading 100,000 resources into PostgreSQL take over 20 minutes.
    """
    db.create_schema()
    ensure_default_sandbox(db)
    repo = Repository(registry())
    view = View(DEFAULT_SANDBOX, (DEFAULT_SANDBOX,))
    actor = Actor("bench-loader", "loader")
    count = 0
    for n, chart in enumerate(charts(patients, seed), 1):
        with db.write() as conn:
            repo.create_many(conn, view, [(r["resourceType"], r["id"], r) for r in chart], actor)
        count += len(chart)
        if progress and n % 100 == 0:
            print(f"loaded {n} patients, {count} resources", flush=True)
    return Loaded(patients, count)


def load_generated(db: Database, patients: int, *, seed: int = 1, progress: bool = False) -> Loaded:
    """Load ``synthetic_data.generate_population`` through the transaction processor, as ``ehr-sandbox load`` does.

    The realistic path (validation, reference resolution, per-resource writes), and the slow one.
    """
    from sandbox.fhir.context import FhirContext
    from sandbox.fhir.interactions import Interactions
    from sandbox.fhir.transaction import BundleProcessor
    from synthetic_data import generate_population

    db.create_schema()
    ensure_default_sandbox(db)
    reg = registry()
    view = View(DEFAULT_SANDBOX, (DEFAULT_SANDBOX,))
    ctx = FhirContext(
        db, Interactions(Repository(reg), reg), view, Actor("bench-loader", "loader"), "http://bench/fhir"
    )
    count = 0
    for n, bundle in enumerate(generate_population(patients=patients, seed=seed)):
        BundleProcessor(ctx, prefer="minimal").process(bundle)
        count += len(bundle.get("entry", []))
        if progress and n % 100 == 0:
            print(f"loaded {n} patients, {count} resources", flush=True)
    return Loaded(patients, count)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _instant(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S+00:00")
