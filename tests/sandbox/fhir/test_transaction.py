"""Transaction Bundles: all or nothing, in the order the spec gives, with references resolved (R4 http.html)."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qsl

from sandbox.store.layers import View

PATIENT = {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "1"}], "gender": "female"}
CODE = {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}


def observation(subject: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": CODE, "subject": {"reference": subject}, **extra}


def post(resource: dict[str, Any], full_url: str | None = None, **request: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"], **request},
    }
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def put(url: str, resource: dict[str, Any], **request: Any) -> dict[str, Any]:
    return {"resource": resource, "request": {"method": "PUT", "url": url, **request}}


def bundle(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def count(client, query: str) -> int:
    rtype, _, criteria = query.partition("?")
    params = [*parse_qsl(criteria), ("_summary", "count")]
    return client.get(f"/fhir/{rtype}", params=params).json()["total"]


def create_patient(client, mrn: str = "1") -> str:
    resource = {**PATIENT, "identifier": [{"system": "urn:mrn", "value": mrn}]}
    return client.post("/fhir/Patient", json=resource).json()["id"]


# ---- success ------------------------------------------------------------------------------------------


def test_creates_answer_a_transaction_response_with_status_location_etag_and_resource(client):
    r = client.post("/fhir", json=bundle(post(PATIENT, "urn:uuid:a1"), post(observation("urn:uuid:a1"))))
    assert r.status_code == 200
    body = r.json()
    assert body["resourceType"] == "Bundle" and body["type"] == "transaction-response"
    patient_entry, obs_entry = body["entry"]
    pid = patient_entry["resource"]["id"]
    assert patient_entry["response"]["status"] == "201 Created"
    assert patient_entry["response"]["location"] == f"Patient/{pid}/_history/1"
    assert patient_entry["response"]["etag"] == 'W/"1"'
    assert patient_entry["response"]["lastModified"] == patient_entry["resource"]["meta"]["lastUpdated"]
    assert patient_entry["fullUrl"].endswith(f"/fhir/Patient/{pid}")
    assert obs_entry["resource"]["subject"]["reference"] == f"Patient/{pid}"


def test_urn_uuid_and_urn_oid_references_are_rewritten_everywhere_including_extensions(client):
    obs = observation(
        "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
        performer=[{"reference": "urn:oid:1.2.3.4"}],
        extension=[{"url": "http://example.org/focus", "valueReference": {"reference": "urn:oid:1.2.3.4"}}],
        component=[
            {
                "code": CODE,
                "extension": [
                    {
                        "url": "http://example.org/nested",
                        "extension": [{"url": "who", "valueReference": {"reference": "urn:oid:1.2.3.4"}}],
                    }
                ],
            }
        ],
    )
    practitioner = {"resourceType": "Practitioner", "name": [{"family": "Kildare"}]}
    r = client.post(
        "/fhir",
        json=bundle(
            post(obs, "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"),
            post(PATIENT, "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"),
            post(practitioner, "urn:oid:1.2.3.4"),
        ),
    )
    assert r.status_code == 200, r.text
    obs_id = r.json()["entry"][0]["resource"]["id"]
    pid = r.json()["entry"][1]["resource"]["id"]
    prid = r.json()["entry"][2]["resource"]["id"]
    stored = client.get(f"/fhir/Observation/{obs_id}").json()
    assert stored["subject"]["reference"] == f"Patient/{pid}"
    assert stored["performer"][0]["reference"] == f"Practitioner/{prid}"
    assert stored["extension"][0]["valueReference"]["reference"] == f"Practitioner/{prid}"
    nested = stored["component"][0]["extension"][0]["extension"][0]
    assert nested["valueReference"]["reference"] == f"Practitioner/{prid}"
    assert client.get("/fhir/Observation", params={"subject": f"Patient/{pid}"}).json()["total"] == 1


def test_references_to_a_put_entry_resolve_to_the_id_in_its_url(client):
    r = client.post(
        "/fhir",
        json=bundle(
            post(observation("urn:uuid:p")),
            {"fullUrl": "urn:uuid:p", **put("Patient/chosen", {**PATIENT, "id": "chosen"})},
        ),
    )
    assert r.status_code == 200, r.text
    assert r.json()["entry"][0]["resource"]["subject"]["reference"] == "Patient/chosen"
    assert r.json()["entry"][1]["response"]["status"] == "201 Created"


def test_absolute_full_urls_on_this_server_resolve_relative_references_and_get_new_ids(client):
    r = client.post(
        "/fhir",
        json=bundle(
            post(PATIENT, "http://testserver/fhir/Patient/client-chosen"),
            {
                "resource": observation("Patient/client-chosen"),
                "request": {"method": "POST", "url": "http://testserver/fhir/Observation"},
            },
        ),
    )
    assert r.status_code == 200, r.text
    patient, obs = r.json()["entry"]
    pid = patient["resource"]["id"]
    assert pid != "client-chosen"  # POST always assigns the id
    assert obs["resource"]["subject"]["reference"] == f"Patient/{pid}"


def test_puts_create_new_resources_and_update_existing_and_deleted_ones(client, app):
    existing = create_patient(client, "existing")
    deleted = create_patient(client, "deleted")
    client.delete(f"/fhir/Patient/{deleted}")
    r = client.post(
        "/fhir",
        json=bundle(
            put("Patient/new-1", {**PATIENT, "id": "new-1"}),
            {"fullUrl": "urn:uuid:new-2", **put("Patient/new-2", {**PATIENT, "id": "new-2"})},
            put(f"Patient/{existing}", {**PATIENT, "id": existing, "gender": "male"}),
            put(f"Patient/{deleted}", {**PATIENT, "id": deleted}),
            put("Observation/obs-1", {**observation("urn:uuid:new-2"), "id": "obs-1"}),
        ),
    )
    assert r.status_code == 200, r.text
    responses = [(e["response"]["status"], e["response"]["etag"]) for e in r.json()["entry"]]
    assert responses == [
        ("201 Created", 'W/"1"'),
        ("201 Created", 'W/"1"'),
        ("200 OK", 'W/"2"'),
        ("201 Created", 'W/"3"'),  # a deleted resource comes back with its numbering continued
        ("201 Created", 'W/"1"'),
    ]
    assert client.get("/fhir/Observation/obs-1").json()["subject"]["reference"] == "Patient/new-2"
    assert count(client, "Observation?patient=new-2") == 1
    with app.state.db.read() as conn:
        versions, _ = app.state.repo.history(conn, View("default", ("default",)), rtype="Patient", rid="new-1")
    assert [(v.method, v.actor) for v in versions] == [("PUT", "anonymous")]


def test_a_put_whose_id_differs_from_its_url_fails_the_transaction(client):
    r = client.post("/fhir", json=bundle(post(PATIENT), put("Patient/a", {**PATIENT, "id": "b"})))
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"][0].startswith("Bundle.entry[1]")
    assert count(client, "Patient") == 0


def test_narrative_links_to_bundle_entries_are_rewritten(client):
    div = '<div xmlns="http://www.w3.org/1999/xhtml"><a href="urn:uuid:p">the patient</a></div>'
    obs = observation("urn:uuid:p", text={"status": "generated", "div": div})
    r = client.post("/fhir", json=bundle(post(PATIENT, "urn:uuid:p"), post(obs)))
    pid = r.json()["entry"][0]["resource"]["id"]
    assert f'href="Patient/{pid}"' in r.json()["entry"][1]["resource"]["text"]["div"]


def test_entries_run_delete_then_post_then_put_then_get_and_answer_in_request_order(client):
    old = create_patient(client, "old")
    kept = create_patient(client, "kept")
    r = client.post(
        "/fhir",
        json=bundle(
            {"request": {"method": "GET", "url": "Patient?identifier=urn:mrn|new"}},
            put(f"Patient/{kept}", {**PATIENT, "id": kept, "gender": "other"}),
            post({**PATIENT, "identifier": [{"system": "urn:mrn", "value": "new"}]}),
            {"request": {"method": "DELETE", "url": f"Patient/{old}"}},
            {"request": {"method": "GET", "url": f"Patient/{kept}"}},
        ),
    )
    assert r.status_code == 200, r.text
    search, updated, created, deleted, read = r.json()["entry"]
    assert search["resource"]["type"] == "searchset"  # the GET ran after the POST it comes before
    assert search["resource"]["total"] == 1
    assert search["resource"]["entry"][0]["resource"]["id"] == created["resource"]["id"]
    assert updated["response"]["status"] == "200 OK" and updated["response"]["etag"] == 'W/"2"'
    assert created["response"]["status"] == "201 Created"
    assert deleted["response"]["status"] == "204 No Content"
    assert read["resource"]["gender"] == "other"  # ... and after the PUT
    assert client.get(f"/fhir/Patient/{old}").status_code == 410


def test_prefer_return_minimal_and_operation_outcome(client):
    minimal = client.post("/fhir", json=bundle(post(PATIENT)), headers={"Prefer": "return=minimal"}).json()
    assert "resource" not in minimal["entry"][0]
    assert minimal["entry"][0]["response"]["location"].startswith("Patient/")
    outcome = client.post("/fhir", json=bundle(post(PATIENT)), headers={"Prefer": "return=OperationOutcome"}).json()
    assert outcome["entry"][0]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert "resource" not in outcome["entry"][0]


def test_patch_entry_applies_a_json_patch_carried_in_a_binary(client):
    pid = create_patient(client)
    operations = [{"op": "replace", "path": "/gender", "value": "male"}]
    binary = {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(json.dumps(operations).encode()).decode(),
    }
    r = client.post("/fhir", json=bundle({"resource": binary, "request": {"method": "PATCH", "url": f"Patient/{pid}"}}))
    assert r.status_code == 200, r.text
    assert r.json()["entry"][0]["response"]["etag"] == 'W/"2"'
    assert client.get(f"/fhir/Patient/{pid}").json()["gender"] == "male"


def test_an_empty_transaction_succeeds_with_no_entries(client):
    r = client.post("/fhir", json=bundle())
    assert r.status_code == 200
    assert r.json()["type"] == "transaction-response" and "entry" not in r.json()


def test_writes_are_attributed_to_the_requests_actor(client, app, admin_headers):
    r = client.post("/sandboxes/default/fhir", json=bundle(post(PATIENT)), headers=admin_headers)
    assert r.status_code == 200, r.text
    pid = r.json()["entry"][0]["resource"]["id"]
    with app.state.db.read() as conn:
        versions, _ = app.state.repo.history(conn, View("default", ("default",)), rtype="Patient", rid=pid)
    assert [(v.actor, v.route, v.method) for v in versions] == [("admin", "fhir-api", "POST")]


def test_other_sandboxes_need_credentials(client):
    assert (
        client.post(
            "/sandboxes/default/fhir", json=bundle(post(PATIENT)), headers={"Authorization": "Bearer no"}
        ).status_code
        == 401
    )


# ---- conditional operations and references --------------------------------------------------------------


def test_conditional_references_are_resolved_by_search(client):
    pid = create_patient(client, "42")
    r = client.post("/fhir", json=bundle(post(observation("Patient?identifier=urn:mrn|42"))))
    assert r.status_code == 200, r.text
    assert r.json()["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{pid}"


def test_a_conditional_reference_matching_nothing_fails_the_transaction_naming_the_entry(client):
    r = client.post(
        "/fhir",
        json=bundle(post(PATIENT), post(observation("Patient?identifier=urn:mrn|nobody"))),
    )
    assert r.status_code == 412
    issue = r.json()["issue"][0]
    assert issue["expression"] == ["Bundle.entry[1].resource.subject.reference"]
    assert "Bundle.entry[1]" in issue["diagnostics"]
    assert count(client, "Patient") == 0


def test_a_conditional_reference_matching_two_resources_fails(client):
    create_patient(client, "twin")
    create_patient(client, "twin")
    r = client.post("/fhir", json=bundle(post(observation("Patient?identifier=urn:mrn|twin"))))
    assert r.status_code == 412
    assert r.json()["issue"][0]["code"] == "multiple-matches"
    assert count(client, "Observation") == 0


def test_if_none_exist_returns_the_existing_resource_and_its_references_point_there(client):
    pid = create_patient(client, "7")
    r = client.post(
        "/fhir",
        json=bundle(
            post(PATIENT, "urn:uuid:p", ifNoneExist="identifier=urn:mrn|7"),
            post(observation("urn:uuid:p")),
        ),
    )
    assert r.status_code == 200, r.text
    existing, obs = r.json()["entry"]
    assert existing["response"]["status"] == "200 OK"
    assert existing["resource"]["id"] == pid and existing["resource"]["meta"]["versionId"] == "1"
    assert obs["resource"]["subject"]["reference"] == f"Patient/{pid}"
    assert count(client, "Patient") == 1


def test_if_none_exist_without_a_match_creates(client):
    r = client.post("/fhir", json=bundle(post(PATIENT, ifNoneExist="identifier=urn:mrn|1")))
    assert r.json()["entry"][0]["response"]["status"] == "201 Created"
    again = client.post("/fhir", json=bundle(post(PATIENT, ifNoneExist="identifier=urn:mrn|1")))
    assert again.json()["entry"][0]["response"]["status"] == "200 OK"
    assert count(client, "Patient") == 1


def test_repeated_conditional_creates_in_one_bundle_create_one_resource(client):
    for kind in ("transaction", "batch"):
        mrn = f"shared-{kind}"
        shared = {**PATIENT, "identifier": [{"system": "urn:mrn", "value": mrn}]}
        r = client.post(
            "/fhir",
            json=bundle(
                post(shared, f"urn:uuid:{kind}-1", ifNoneExist=f"identifier=urn:mrn|{mrn}"),
                post(shared, f"urn:uuid:{kind}-2", ifNoneExist=f"identifier=urn:mrn|{mrn}"),
                post(observation(f"urn:uuid:{kind}-2")),
                kind=kind,
            ),
        )
        assert r.status_code == 200, r.text
        first, second, obs = r.json()["entry"]
        assert first["response"]["status"] == "201 Created" and second["response"]["status"] == "200 OK"
        assert second["resource"]["id"] == first["resource"]["id"]
        assert obs["resource"]["subject"]["reference"] == f"Patient/{first['resource']['id']}"
        assert count(client, f"Patient?identifier=urn:mrn|{mrn}") == 1


def test_conditional_update_updates_the_match_or_creates(client):
    pid = create_patient(client, "9")
    r = client.post(
        "/fhir",
        json=bundle(
            put("Patient?identifier=urn:mrn|9", {**PATIENT, "gender": "male"}),
            put("Patient?identifier=urn:mrn|10", {**PATIENT, "identifier": [{"system": "urn:mrn", "value": "10"}]}),
        ),
    )
    assert r.status_code == 200, r.text
    updated, created = r.json()["entry"]
    assert updated["response"]["status"] == "200 OK"
    assert updated["response"]["location"] == f"Patient/{pid}/_history/2"
    assert created["response"]["status"] == "201 Created"
    assert created["resource"]["id"] != pid
    assert client.get(f"/fhir/Patient/{pid}").json()["gender"] == "male"


def test_conditional_delete(client):
    pid = create_patient(client, "gone")
    r = client.post("/fhir", json=bundle({"request": {"method": "DELETE", "url": "Patient?identifier=urn:mrn|gone"}}))
    assert r.status_code == 200, r.text
    assert r.json()["entry"][0]["response"]["status"] == "204 No Content"
    assert client.get(f"/fhir/Patient/{pid}").status_code == 410


def test_if_match_on_an_entry_checks_the_version(client):
    pid = create_patient(client)
    stale = client.post(
        "/fhir",
        json=bundle(
            post({**PATIENT, "identifier": [{"system": "urn:mrn", "value": "other"}]}),
            put(f"Patient/{pid}", {**PATIENT, "id": pid, "gender": "other"}, ifMatch='W/"3"'),
        ),
    )
    assert stale.status_code == 412
    assert stale.json()["issue"][0]["expression"] == ["Bundle.entry[1]"]
    assert count(client, "Patient") == 1  # the POST before it was rolled back
    assert client.get(f"/fhir/Patient/{pid}").json()["gender"] == "female"
    fresh = client.post("/fhir", json=bundle(put(f"Patient/{pid}", {**PATIENT, "id": pid}, ifMatch='W/"1"')))
    assert fresh.status_code == 200
    assert fresh.json()["entry"][0]["response"]["etag"] == 'W/"2"'


# ---- all or nothing ---------------------------------------------------------------------------------------------


def test_an_invalid_resource_rolls_back_the_whole_transaction(client):
    victim = create_patient(client, "victim")
    r = client.post(
        "/fhir",
        json=bundle(
            post(PATIENT, "urn:uuid:p"),
            post(observation("urn:uuid:p")),
            {"request": {"method": "DELETE", "url": f"Patient/{victim}"}},
            post({**observation("urn:uuid:p"), "status": "bogus"}),
        ),
    )
    assert r.status_code == 422
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[3].resource.status"]
    assert outcome["issue"][0]["diagnostics"].startswith("Bundle.entry[3] (POST Observation)")
    assert count(client, "Observation") == 0
    assert count(client, "Patient") == 1
    assert client.get(f"/fhir/Patient/{victim}").status_code == 200


def test_a_failing_read_fails_the_transaction(client):
    r = client.post("/fhir", json=bundle(post(PATIENT), {"request": {"method": "GET", "url": "Patient/never-was"}}))
    assert r.status_code == 404
    assert r.json()["issue"][0]["expression"] == ["Bundle.entry[1]"]
    assert count(client, "Patient") == 0


def test_a_reference_to_no_entry_of_the_bundle_is_rejected(client):
    r = client.post("/fhir", json=bundle(post(PATIENT), post(observation("urn:uuid:missing"))))
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["Bundle.entry[1].resource.subject.reference"]
    assert count(client, "Patient") == 0


# ---- malformed bundles ----------------------------------------------------------------------------------------------


def test_duplicate_full_urls_are_rejected(client):
    r = client.post("/fhir", json=bundle(post(PATIENT, "urn:uuid:same"), post(PATIENT, "urn:uuid:same")))
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["Bundle.entry[1].fullUrl"]
    assert count(client, "Patient") == 0


def test_two_entries_changing_the_same_resource_are_rejected(client):
    pid = create_patient(client)
    r = client.post(
        "/fhir",
        json=bundle(
            put(f"Patient/{pid}", {**PATIENT, "id": pid, "gender": "male"}),
            {"request": {"method": "DELETE", "url": f"Patient/{pid}"}},
        ),
    )
    assert r.status_code == 400
    assert "Bundle.entry[0]" in r.json()["issue"][0]["diagnostics"]
    assert client.get(f"/fhir/Patient/{pid}").json()["gender"] == "female"


def test_only_transaction_and_batch_bundles_are_accepted(client):
    for kind in ("document", "collection", "searchset", "transaction-response"):
        r = client.post("/fhir", json=bundle(post(PATIENT), kind=kind))
        assert r.status_code == 400, kind
        assert r.json()["issue"][0]["expression"] == ["Bundle.type"]
    assert client.post("/fhir", json=PATIENT).status_code == 400
    assert count(client, "Patient") == 0


def test_malformed_json_and_bundles_that_fail_validation(client):
    bad_json = client.post(
        "/fhir", content=b'{"resourceType": "Bundle",', headers={"content-type": "application/fhir+json"}
    )
    assert bad_json.status_code == 400 and bad_json.json()["resourceType"] == "OperationOutcome"
    invalid = client.post("/fhir", json={**bundle(post(PATIENT)), "timestamp": "yesterday", "unknownElement": 1})
    assert invalid.status_code == 422
    expressions = {e for issue in invalid.json()["issue"] for e in issue.get("expression", [])}
    assert {"Bundle.timestamp", "Bundle.unknownElement"} <= expressions
    bad_request = client.post(
        "/fhir", json=bundle({"resource": PATIENT, "request": {"method": "POST", "url": "Patient", "color": "red"}})
    )
    assert bad_request.status_code == 422
    assert count(client, "Patient") == 0


def test_entries_without_a_request_or_with_a_bad_url_are_rejected(client):
    cases = [
        {"resource": PATIENT},
        {"resource": PATIENT, "request": {"method": "POST", "url": "Unicorn"}},
        {"resource": PATIENT, "request": {"method": "POST", "url": "Observation"}},
        {"request": {"method": "PUT", "url": "Patient/1"}},
        {"resource": PATIENT, "request": {"method": "POST", "url": "https://elsewhere.example/fhir/Patient"}},
        {"request": {"method": "DELETE", "url": "Patient"}},
    ]
    for entry in cases:
        r = client.post("/fhir", json=bundle(post(PATIENT), entry))
        assert r.status_code == 400, (entry, r.text)
        assert r.json()["issue"][0]["expression"][0].startswith("Bundle.entry[1]"), entry
    assert count(client, "Patient") == 0


def test_a_large_transaction_is_stored_whole(client):
    entries = [post(PATIENT, "urn:uuid:p")] + [post(observation("urn:uuid:p")) for _ in range(300)]
    r = client.post("/fhir", json=bundle(*entries), headers={"Prefer": "return=minimal"})
    assert r.status_code == 200
    pid = r.json()["entry"][0]["response"]["location"].split("/")[1]
    assert count(client, f"Observation?patient={pid}") == 300


def test_a_bundle_over_the_body_limit_is_413(client, app):
    size = app.state.settings.max_body_bytes
    r = client.post("/fhir", content=b" " * (size + 1), headers={"content-type": "application/fhir+json"})
    assert r.status_code == 413


def test_a_failing_entry_at_the_end_of_a_large_transaction_rolls_back_every_chunk(client):
    # 600 creates are stored in two chunks; the last entry fails validation, so neither chunk may stay.
    entries = [post(PATIENT, "urn:uuid:p")] + [post(observation("urn:uuid:p")) for _ in range(598)]
    entries.append(post(observation("urn:uuid:p", status="done-ish")))
    r = client.post("/fhir", json=bundle(*entries), headers={"Prefer": "return=minimal"})
    assert r.status_code == 422
    assert r.json()["issue"][0]["expression"][0].startswith("Bundle.entry[599]")
    assert count(client, "Patient") == 0
    assert count(client, "Observation") == 0


def test_references_resolve_to_the_created_ids_when_a_late_entry_needs_the_database(client):
    # A conditional reference in the last entry is found only once the earlier entries' references were
    # rewritten; the server must still point them at the resources it stores, not at ids it gave up on.
    patient = create_patient(client)
    encounter = {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}}
    r = client.post(
        "/fhir",
        json=bundle(
            post(encounter, "urn:uuid:e"),
            post(observation(f"Patient/{patient}", encounter={"reference": "urn:uuid:e"})),
            post(observation("Patient?identifier=urn:mrn|1")),
        ),
    )
    assert r.status_code == 200, r.text
    encounter_id = r.json()["entry"][0]["response"]["location"].split("/")[1]
    first = client.get("/fhir/" + r.json()["entry"][1]["response"]["location"].split("/_history")[0]).json()
    last = client.get("/fhir/" + r.json()["entry"][2]["response"]["location"].split("/_history")[0]).json()
    assert first["encounter"] == {"reference": f"Encounter/{encounter_id}"}
    assert last["subject"] == {"reference": f"Patient/{patient}"}
    assert count(client, f"Observation?encounter=Encounter/{encounter_id}") == 1
