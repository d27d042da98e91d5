"""Batch Bundles: every entry on its own, each failure answered in its own entry (FHIR R4 http.html#transaction)."""

from __future__ import annotations

from tests.sandbox.fhir.test_transaction import PATIENT, bundle, count, create_patient, observation, post, put


def batch(*entries):
    return bundle(*entries, kind="batch")


def test_one_bad_entry_fails_alone_and_the_others_are_stored(client):
    r = client.post(
        "/fhir",
        json=batch(
            post(PATIENT),
            post({**observation("Patient/x"), "status": "bogus"}),
            post({**PATIENT, "gender": "male"}),
        ),
    )
    assert r.status_code == 200
    body = r.json()
    assert body["type"] == "batch-response"
    first, bad, third = body["entry"]
    assert first["response"]["status"] == "201 Created" and third["response"]["status"] == "201 Created"
    assert bad["response"]["status"] == "422 Unprocessable Entity"
    assert "resource" not in bad
    issue = bad["response"]["outcome"]["issue"][0]
    assert issue["expression"] == ["Bundle.entry[1].resource.status"]
    assert count(client, "Patient") == 2
    assert count(client, "Observation") == 0


def test_entries_reference_each_other_by_urn_uuid(client):
    r = client.post(
        "/fhir",
        json=batch(post(observation("urn:uuid:p"), "urn:uuid:o"), post(PATIENT, "urn:uuid:p")),
    )
    assert r.status_code == 200
    obs, patient = r.json()["entry"]
    pid = patient["resource"]["id"]
    assert obs["resource"]["subject"]["reference"] == f"Patient/{pid}"
    assert count(client, f"Observation?patient={pid}") == 1


def test_conditional_references_resolve_per_entry(client):
    pid = create_patient(client, "5")
    r = client.post(
        "/fhir",
        json=batch(
            post(observation("Patient?identifier=urn:mrn|5")), post(observation("Patient?identifier=urn:mrn|6"))
        ),
    )
    found, missing = r.json()["entry"]
    assert found["resource"]["subject"]["reference"] == f"Patient/{pid}"
    assert missing["response"]["status"] == "412 Precondition Failed"
    assert missing["response"]["outcome"]["issue"][0]["expression"] == ["Bundle.entry[1].resource.subject.reference"]
    assert count(client, "Observation") == 1


def test_an_entry_referring_to_a_failed_entry_fails_too(client):
    r = client.post(
        "/fhir",
        json=batch(post({**PATIENT, "gender": "robot"}, "urn:uuid:p"), post(observation("urn:uuid:p"))),
    )
    patient, obs = r.json()["entry"]
    assert patient["response"]["status"].startswith("422")
    assert obs["response"]["status"].startswith("400")
    assert "Bundle.entry[0]" in obs["response"]["outcome"]["issue"][0]["diagnostics"]
    assert count(client, "Observation") == 0


def test_a_version_conflict_fails_only_its_entry(client):
    pid = create_patient(client)
    r = client.post(
        "/fhir",
        json=batch(
            put(f"Patient/{pid}", {**PATIENT, "id": pid, "gender": "male"}, ifMatch='W/"9"'),
            post(PATIENT),
        ),
    )
    conflict, created = r.json()["entry"]
    assert conflict["response"]["status"] == "412 Precondition Failed"
    assert created["response"]["status"] == "201 Created"
    assert client.get(f"/fhir/Patient/{pid}").json()["gender"] == "female"


def test_reads_searches_and_malformed_entries_answer_per_entry(client):
    pid = create_patient(client, "r")
    r = client.post(
        "/fhir",
        json=batch(
            {"request": {"method": "GET", "url": f"Patient/{pid}"}},
            {"request": {"method": "GET", "url": "Patient/never-was"}},
            {"request": {"method": "GET", "url": "Patient?identifier=urn:mrn|r"}},
            {"resource": PATIENT, "request": {"method": "POST", "url": "Unicorn"}},
            {"resource": PATIENT},
            {"request": {"method": "HEAD", "url": f"Patient/{pid}"}},
        ),
    )
    assert r.status_code == 200
    read, missing, search, unknown, no_request, head = r.json()["entry"]
    assert read["resource"]["id"] == pid and read["response"]["etag"] == 'W/"1"'
    assert missing["response"]["status"] == "404 Not Found"
    assert search["resource"]["total"] == 1
    assert unknown["response"]["status"] == "400 Bad Request"
    assert no_request["response"]["outcome"]["issue"][0]["expression"] == ["Bundle.entry[4]"]
    assert "resource" not in head and head["response"]["status"] == "200 OK"


def test_the_same_resource_may_be_changed_by_several_entries_deletes_first(client):
    pid = create_patient(client)
    r = client.post(
        "/fhir",
        json=batch(
            put(f"Patient/{pid}", {**PATIENT, "id": pid, "gender": "male"}),
            {"request": {"method": "DELETE", "url": f"Patient/{pid}"}},
        ),
    )
    # Batches keep the transaction's order (DELETE before PUT), so the PUT brings the patient back.
    assert [e["response"]["status"] for e in r.json()["entry"]] == ["201 Created", "204 No Content"]
    assert client.get(f"/fhir/Patient/{pid}").json()["gender"] == "male"


def test_a_malformed_batch_is_rejected_whole(client):
    r = client.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [post(PATIENT), "not an entry"]})
    assert r.status_code == 400
    dup = client.post("/fhir", json=batch(post(PATIENT, "urn:uuid:x"), post(PATIENT, "urn:uuid:x")))
    assert dup.status_code == 400
    assert count(client, "Patient") == 0
