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
