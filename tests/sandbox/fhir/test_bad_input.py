"""Bad input gets a clear OperationOutcome and writes nothing."""

from __future__ import annotations

import pytest


def _count(client, rtype: str = "Patient") -> int:
    return client.get(f"/fhir/{rtype}?_summary=count").json()["total"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "structure"),
        (b"", 400, "structure"),
        (b"[1, 2]", 400, "structure"),
        (b'{"resourceType": "Observation", "status": "final", "code": {"text": "x"}}', 400, "invalid"),
        (b'{"resourceType": "Spaceship"}', 400, "not-supported"),
        (b'{"resourceType": "Patient", "gender": "robot"}', 422, "code-invalid"),
        (b'{"resourceType": "Patient", "birthDate": "1990-13-01"}', 422, "value"),
        (b'{"resourceType": "Patient", "name": []}', 422, "structure"),
        (b'{"resourceType": "Patient", "active": null}', 422, "structure"),
        (b'{"resourceType": "Patient", "favouriteColour": "blue"}', 422, "structure"),
    ],
)
def test_bad_create_is_rejected_with_outcome_and_nothing_written(client, body, status, code):
    r = client.post("/fhir/Patient", content=body, headers={"content-type": "application/fhir+json"})
    assert r.status_code == status, r.text
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert code in [i["code"] for i in outcome["issue"]]
    assert _count(client) == 0


def test_every_problem_is_its_own_issue_with_its_location(client):
    body = {"resourceType": "Patient", "gender": "robot", "birthDate": "1990-13-01", "name": [{"family": 7}]}
    r = client.post("/fhir/Patient", json=body)
    assert r.status_code == 422
    locations = {loc for issue in r.json()["issue"] for loc in issue.get("expression", [])}
    assert {"Patient.gender", "Patient.birthDate", "Patient.name[0].family"} <= locations


def test_oversized_body_is_413(client, app):
    limit = app.state.settings.max_body_bytes
    r = client.post("/fhir/Patient", content=b" " * (limit + 1), headers={"content-type": "application/fhir+json"})
    assert r.status_code == 413
    assert r.json()["issue"][0]["code"] == "too-costly"


def test_unknown_type_in_url_is_404_outcome(client):
    r = client.get("/fhir/Spaceship/1")
    assert r.status_code == 404
    assert r.json()["resourceType"] == "OperationOutcome"


def test_update_with_mismatched_id_is_400(client):
    r = client.put("/fhir/Patient/a", json={"resourceType": "Patient", "id": "b"})
    assert r.status_code == 400
    assert client.get("/fhir/Patient/a").status_code == 404


def test_invalid_id_in_url_is_400(client):
    r = client.put("/fhir/Patient/bad id!", json={"resourceType": "Patient", "id": "bad id!"})
    assert r.status_code == 400
