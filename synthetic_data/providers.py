"""The shared directory every patient's chart points into: clinics, a hospital, payers, clinicians.

It is written once per population (its own transaction bundle); patient
bundles reach it by literal ``Practitioner/{id}`` and ``Organization/{id}``
references, which hold because every bundle entry is a PUT with the id it has here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from faker import Faker

from synthetic_data.codes import (
    FICTIONAL_PHONE,
    NPI_SYSTEM,
    NUCC_TAXONOMY,
    ORGANIZATION_TYPE,
    SNOMED,
    SPECIALTIES,
    US_STATES,
)
from synthetic_data.ids import IdSource, make_npi

PATIENTS_PER_CLINIC = 200
_CLINIC_STAFF = ("family_medicine", "family_medicine", "internal_medicine", "pediatrics")
_HOSPITAL_STAFF = (
    "cardiology",
    "cardiology",
    "endocrinology",
    "pulmonology",
    "nephrology",
    "orthopedics",
    "emergency",
    "emergency",
)


@cache
def faker() -> Faker:
    """One Faker per process (building one is slow); callers reseed it before each use."""
    return Faker("en_US")


@dataclass
class Clinician:
    id: str
    display: str
    specialty: str
    organization: Organization
    role_id: str


@dataclass
class Organization:
    id: str
    name: str
    kind: str  # clinic | hospital | payer
    state: str
    clinicians: list[Clinician] = field(default_factory=list)

    def staff(self, specialty: str) -> list[Clinician]:
        return [c for c in self.clinicians if c.specialty == specialty]


@dataclass
class Payer:
    id: str
    name: str
    sop_code: str  # Source of Payment Typology: 1 Medicare, 2 Medicaid, 5 private
    sop_display: str


@dataclass
class Directory:
    clinics: list[Organization]
    hospital: Organization
    payers: dict[str, Payer]
    resources: list[dict[str, Any]]

    def specialists(self, specialty: str) -> list[Clinician]:
        return self.hospital.staff(specialty)


def build_directory(seed: int, patients: int) -> Directory:
    rng = random.Random(f"{seed}:directory")
    fake = faker()
    fake.seed_instance(rng.getrandbits(64))
    ids = IdSource(f"{seed}/directory")
    resources: list[dict[str, Any]] = []
    clinic_count = max(1, -(-patients // PATIENTS_PER_CLINIC))
    state = rng.choice(US_STATES)

    def organization(name: str, kind: str) -> Organization:
        org = Organization(ids.next(), name, kind, state)
        address = _address(fake, state)
        resources.append(
            {
                "resourceType": "Organization",
                "id": org.id,
                "identifier": [{"system": NPI_SYSTEM, "value": make_npi(rng)}],
                "active": True,
                "type": [_org_type("prov", "Healthcare Provider")],
                "name": name,
                "telecom": [{"system": "phone", "value": fake.numerify(FICTIONAL_PHONE), "use": "work"}],
                "address": [address],
            }
        )
        return org

    def staff(org: Organization, specialties: tuple[str, ...]) -> None:
        for specialty in specialties:
            sex = rng.choice(("male", "female"))
            given = fake.first_name_male() if sex == "male" else fake.first_name_female()
            family = fake.last_name()
            clinician = Clinician(ids.next(), f"Dr. {given} {family}", specialty, org, ids.next())
            org.clinicians.append(clinician)
            nucc, nucc_display, sct, sct_display = SPECIALTIES[specialty]
            resources.append(
                {
                    "resourceType": "Practitioner",
                    "id": clinician.id,
                    "identifier": [{"system": NPI_SYSTEM, "value": make_npi(rng)}],
                    "active": True,
                    "name": [{"use": "official", "family": family, "given": [given], "prefix": ["Dr."]}],
                    "telecom": [
                        {
                            "system": "email",
                            "value": f"{given}.{family}@clinic.example.org".lower(),
                            "use": "work",
                        }
                    ],
                    "gender": sex,
                    "qualification": [
                        {"code": {"coding": [{"system": NUCC_TAXONOMY, "code": nucc, "display": nucc_display}]}}
                    ],
                }
            )
            resources.append(
                {
                    "resourceType": "PractitionerRole",
                    "id": clinician.role_id,
                    "active": True,
                    "practitioner": {"reference": f"Practitioner/{clinician.id}", "display": clinician.display},
                    "organization": {"reference": f"Organization/{org.id}", "display": org.name},
                    "code": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/practitioner-role",
                                    "code": "doctor",
                                    "display": "Doctor",
                                }
                            ]
                        }
                    ],
                    "specialty": [{"coding": [{"system": SNOMED, "code": sct, "display": sct_display}]}],
                }
            )

    clinics = []
    for _ in range(clinic_count):
        clinic = organization(
            f"{fake.last_name()} {rng.choice(('Family Health', 'Primary Care', 'Medical Group'))}", "clinic"
        )
        staff(clinic, _CLINIC_STAFF)
        clinics.append(clinic)
    hospital = organization(f"{fake.city()} General Hospital", "hospital")
    staff(hospital, _HOSPITAL_STAFF)

    payers: dict[str, Payer] = {}
    for key, name, code, display in (
        ("medicare", "Medicare", "1", "MEDICARE"),
        ("medicaid", "Medicaid", "2", "MEDICAID"),
        ("private", f"{fake.last_name()} Mutual Health Plan", "5", "PRIVATE HEALTH INSURANCE"),
        ("private2", f"{fake.city()} Health Cooperative", "5", "PRIVATE HEALTH INSURANCE"),
    ):
        payer = Payer(ids.next(), name, code, display)
        payers[key] = payer
        resources.append(
            {
                "resourceType": "Organization",
                "id": payer.id,
                "active": True,
                "type": [_org_type("pay", "Payer")],
                "name": name,
                "telecom": [{"system": "phone", "value": fake.numerify("800-555-01##"), "use": "work"}],
            }
        )
    return Directory(clinics, hospital, payers, resources)


def _org_type(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": ORGANIZATION_TYPE, "code": code, "display": display}], "text": display}


def _address(fake: Faker, state: str) -> dict[str, Any]:
    return {
        "use": "work",
        "line": [fake.street_address()],
        "city": fake.city(),
        "state": state,
        "postalCode": fake.zipcode_in_state(state),
        "country": "US",
    }
