"""Read by id and type search sit first in the route table at typed paths (sandbox/fhir/paths.py): they must take
no URL that belongs to another route, and a URL they refuse must still be answered as before."""

from __future__ import annotations


def test_the_typed_routes_leave_operations_history_and_metadata_to_their_own_routes(client):
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
    for base in ("/fhir", "/sandboxes/default/fhir"):
        assert client.get(f"{base}/Patient/{pid}").json()["id"] == pid
        assert client.get(f"{base}/Patient?_id={pid}").json()["total"] == 1
        assert client.get(f"{base}/metadata").json()["resourceType"] == "CapabilityStatement"
        assert client.get(f"{base}/Patient/_history").json()["type"] == "history"
        assert client.get(f"{base}/_history").json()["type"] == "history"
        assert client.get(f"{base}/Patient/{pid}/_history").json()["type"] == "history"
        everything = client.get(f"{base}/Patient/{pid}/$everything").json()
        assert everything["resourceType"] == "Bundle" and everything["type"] == "searchset"


def test_an_id_r4_does_not_allow_is_answered_by_the_generic_routes_as_before(client):
    # Not a FHIR id (underscore, too long): the typed read refuses it, the generic read says it does not exist.
    for rid in ("bad_id", "x" * 65):
        response = client.get(f"/fhir/Patient/{rid}")
        assert response.status_code == 404
        assert response.json()["resourceType"] == "OperationOutcome"
    unknown = client.get("/fhir/NoSuchType/1")
    assert unknown.status_code == 404 and unknown.json()["resourceType"] == "OperationOutcome"
