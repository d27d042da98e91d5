"""Create, read, vread, update, delete: the basic interactions and their headers."""

from __future__ import annotations

from datetime import datetime
from email.utils import parsedate_to_datetime

PATIENT = {"resourceType": "Patient", "name": [{"family": "Chalmers", "given": ["Peter"]}], "gender": "male"}


def test_create_assigns_id_and_meta_and_answers_201_with_location(client):
    r = client.post("/fhir/Patient", json=PATIENT)
    assert r.status_code == 201
    body = r.json()
    assert body["meta"]["versionId"] == "1"
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["location"].endswith(f"/fhir/Patient/{body['id']}/_history/1")
    assert r.headers["content-type"].startswith("application/fhir+json")
    # Last-Modified is meta.lastUpdated to the second, as an HTTP date (RFC 9110's IMF-fixdate).
    modified = parsedate_to_datetime(r.headers["last-modified"])
    assert r.headers["last-modified"].endswith(" GMT") and len(r.headers["last-modified"]) == 29
    assert modified == datetime.fromisoformat(body["meta"]["lastUpdated"]).replace(microsecond=0)
    read = client.get(f"/fhir/Patient/{body['id']}")
    assert read.headers["last-modified"] == r.headers["last-modified"]


def test_read_returns_stored_bytes_exactly_with_decimals_kept(client):
    body = (
        b'{"resourceType":"Observation","status":"final","code":{"text":"weight"},'
        b'"valueQuantity":{"value":72.50,"unit":"kg"},"effectiveDateTime":"2024-01-02T10:00:00.120+01:00"}'
    )
    created = client.post("/fhir/Observation", content=body, headers={"content-type": "application/fhir+json"})
    assert created.status_code == 201
    read = client.get(f"/fhir/Observation/{created.json()['id']}")
    assert read.status_code == 200
    assert b'"value":72.50' in read.content
    assert b'"2024-01-02T10:00:00.120+01:00"' in read.content


def test_update_makes_version_2_and_vread_finds_both(client):
    pid = client.post("/fhir/Patient", json=PATIENT).json()["id"]
    r = client.put(f"/fhir/Patient/{pid}", json={**PATIENT, "id": pid, "gender": "other"})
    assert r.status_code == 200
    assert r.json()["meta"]["versionId"] == "2"
    assert client.get(f"/fhir/Patient/{pid}/_history/1").json()["gender"] == "male"
    assert client.get(f"/fhir/Patient/{pid}/_history/2").json()["gender"] == "other"
    assert client.get(f"/fhir/Patient/{pid}/_history/3").status_code == 404


def test_update_as_create_answers_201(client):
    r = client.put("/fhir/Patient/chosen-id", json={**PATIENT, "id": "chosen-id"})
    assert r.status_code == 201
    assert client.get("/fhir/Patient/chosen-id").status_code == 200


def test_if_match_mismatch_is_412_and_changes_nothing(client):
    pid = client.post("/fhir/Patient", json=PATIENT).json()["id"]
    r = client.put(
        f"/fhir/Patient/{pid}", json={**PATIENT, "id": pid, "gender": "other"}, headers={"If-Match": 'W/"7"'}
    )
    assert r.status_code == 412
    assert r.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"/fhir/Patient/{pid}").json()["gender"] == "male"
    ok = client.put(f"/fhir/Patient/{pid}", json={**PATIENT, "id": pid}, headers={"If-Match": 'W/"1"'})
    assert ok.status_code == 200


def test_delete_then_read_is_410_and_unknown_is_404(client):
    pid = client.post("/fhir/Patient", json=PATIENT).json()["id"]
    assert client.delete(f"/fhir/Patient/{pid}").status_code == 204
    gone = client.get(f"/fhir/Patient/{pid}")
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    assert client.get("/fhir/Patient/never-was").status_code == 404
    assert client.delete("/fhir/Patient/never-was").status_code == 204


def test_prefer_return_minimal_and_operation_outcome(client):
    minimal = client.post("/fhir/Patient", json=PATIENT, headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.content == b""
    assert "location" in minimal.headers
    outcome = client.post("/fhir/Patient", json=PATIENT, headers={"Prefer": "return=OperationOutcome"})
    assert outcome.json()["resourceType"] == "OperationOutcome"


def test_if_none_match_gives_304(client):
    r = client.post("/fhir/Patient", json=PATIENT)
    again = client.get(f"/fhir/Patient/{r.json()['id']}", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304
