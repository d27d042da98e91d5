"""Synthea's bundles load as they are, and every reference in them resolves afterwards."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

SYNTHEA = Path(__file__).resolve().parents[4] / "shared" / "data" / "synthea"


def synthea_files() -> list[Path]:
    """Organizations and practitioners first: the patient files refer to them."""
    files = sorted(SYNTHEA.glob("*.json"))
    return sorted(files, key=lambda f: not f.name.startswith(("hospitalInformation", "practitionerInformation")))


def references(node, found: list[str]) -> list[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                found.append(value)
            else:
                references(value, found)
    elif isinstance(node, list):
        for item in node:
            references(item, found)
    return found


@pytest.mark.skipif(not SYNTHEA.is_dir(), reason="the Synthea samples are not next to the checkout")
def test_every_synthea_sample_loads_and_every_reference_resolves(client):
    files = synthea_files()
    assert files[0].name.startswith("hospitalInformation") and len(files) == 7
    expected: Counter[str] = Counter()
    for path in files:
        sent = json.loads(path.read_bytes())
        expected.update(e["resource"]["resourceType"] for e in sent["entry"])
        r = client.post("/fhir", content=path.read_bytes(), headers={"content-type": "application/fhir+json"})
        assert r.status_code == 200, path.name
        statuses = {e["response"]["status"] for e in r.json()["entry"]}
        assert statuses == {"201 Created"}, (path.name, r.text[:2000])

    stored = {rtype: client.get(f"/fhir/{rtype}", params={"_summary": "count"}).json()["total"] for rtype in expected}
    assert stored == expected

    patients = client.get("/fhir/Patient", params={"_count": 100}).json()["entry"]
    assert len(patients) == 5
    for patient in patients:
        pid = patient["resource"]["id"]
        observations = client.get("/fhir/Observation", params={"patient": pid, "_count": 1000}).json()
        encounters = client.get("/fhir/Encounter", params={"patient": pid, "_count": 1000}).json()
        assert encounters["total"] > 0
        for obs in observations.get("entry", []):
            assert obs["resource"]["subject"]["reference"] == f"Patient/{pid}"
    assert client.get("/fhir/Observation", params={"_summary": "count"}).json()["total"] == 64

    # Every reference of every stored resource (contained ones aside) now reads back.
    checked: set[str] = set()
    for rtype in ("Encounter", "Immunization", "Observation", "Condition", "Claim", "ExplanationOfBenefit", "CarePlan"):
        for entry in client.get(f"/fhir/{rtype}", params={"_count": 1000}).json()["entry"]:
            for ref in references(entry["resource"], []):
                assert not ref.startswith("urn:"), (rtype, ref)
                if ref.startswith("#") or ref in checked:
                    continue
                assert client.get(f"/fhir/{ref}").status_code == 200, (rtype, ref)
                checked.add(ref)
    assert len(checked) > 100


@pytest.mark.skipif(not SYNTHEA.is_dir(), reason="the Synthea samples are not next to the checkout")
def test_newer_synthea_bundles_reach_practitioners_by_conditional_reference(client):
    """Synthea's current output: practitioners created once (ifNoneExist), then referenced by identifier."""
    practitioners = json.loads((SYNTHEA / "practitionerInformation1603148702656.json").read_bytes())
    for entry in practitioners["entry"]:
        npi = entry["resource"]["identifier"][0]
        entry["request"]["ifNoneExist"] = f"identifier={npi['system']}|{npi['value']}"
    for _ in range(2):  # loading it twice creates nothing new
        r = client.post("/fhir", json=practitioners)
        assert r.status_code == 200
    assert client.get("/fhir/Practitioner", params={"_summary": "count"}).json()["total"] == len(practitioners["entry"])
    npi = practitioners["entry"][0]["resource"]["identifier"][0]
    encounter = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": "urn:uuid:3f5a2ba1-0000-4000-8000-000000000001"},
        "participant": [{"individual": {"reference": f"Practitioner?identifier={npi['system']}|{npi['value']}"}}],
    }
    patient = {"resourceType": "Patient", "name": [{"family": "Doe"}]}
    r = client.post(
        "/fhir",
        json={
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {
                    "fullUrl": "urn:uuid:3f5a2ba1-0000-4000-8000-000000000001",
                    "resource": patient,
                    "request": {"method": "POST", "url": "Patient"},
                },
                {"resource": encounter, "request": {"method": "POST", "url": "Encounter"}},
            ],
        },
    )
    assert r.status_code == 200
    stored = r.json()["entry"][1]["resource"]
    practitioner = client.get(f"/fhir/{stored['participant'][0]['individual']['reference']}").json()
    assert practitioner["identifier"][0] == npi
    found = client.get("/fhir/Encounter", params={"practitioner": f"Practitioner/{practitioner['id']}"}).json()
    assert found["total"] == 1
