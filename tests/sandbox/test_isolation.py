"""Isolation: nothing written in one sandbox is visible from another, through any route.

Two sandboxes, A and B, stand on the same baseline; the default sandbox (/fhir)
stands on nothing.  Sandbox A writes a patient of its own, observations, an
update of a baseline patient and a deletion of another.  Every test then looks
from B (and from the default sandbox) through one route and finds only the
baseline, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from sandbox.store import sandboxes
from sandbox.store.repository import Actor

LOINC = "http://loinc.org"


def patient(rid: str, family: str, identifier: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Patient", "id": rid, "name": [{"family": family}]}
    if identifier:
        body["identifier"] = [{"system": "urn:sys", "value": identifier}]
    return body


def observation(rid: str, subject: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": subject},
    }


@dataclass
class World:
    client: Any
    headers: dict[str, str]
    a: str  # FHIR base paths
    b: str
    default: str = "/fhir"

    def get(self, base: str, path: str) -> Any:
        return self.client.get(f"{base}/{path}", headers=self.headers)

    def ids(self, base: str, query: str, mode: str | None = None) -> set[tuple[str, str]]:
        r = self.get(base, query)
        assert r.status_code == 200, r.text
        return {
            (e["resource"]["resourceType"], e["resource"]["id"])
            for e in r.json().get("entry", [])
            if mode is None or e["search"]["mode"] == mode
        }


@pytest.fixture
def world(app, client, admin_headers) -> World:
    fhir, db, loader = app.state.fhir, app.state.db, Actor("loader", "loader")
    with db.write() as conn:
        baseline = sandboxes.create_baseline(conn, "Shared patients").id
        view = sandboxes.baseline_view_for_loading(conn, baseline)
        for body in (
            patient("p0", "Chalmers", "base-0"),
            patient("p1", "Windsor", "base-1"),
            observation("obs-base", "Patient/p0", "8867-4"),
        ):
            fhir.update(conn, view, body["resourceType"], body["id"], body, loader)
    bases = []
    for name in ("A", "B"):
        r = client.post("/admin/sandboxes", json={"name": name, "baseline": baseline}, headers=admin_headers)
        bases.append(f"/sandboxes/{r.json()['id']}/fhir")
    w = World(client, admin_headers, *bases)
    writes = [
        ("PUT", "Patient/secret-a", patient("secret-a", "Secretus", "only-in-a")),
        ("PUT", "Observation/obs-a", observation("obs-a", "Patient/secret-a", "1234-5")),
        ("PUT", "Observation/obs-a-p0", observation("obs-a-p0", "Patient/p0", "8867-4")),
        ("PUT", "Patient/p0", patient("p0", "Altered", "base-0")),
    ]
    for method, path, body in writes:
        assert client.request(method, f"{w.a}/{path}", json=body, headers=admin_headers).status_code in (200, 201)
    assert client.delete(f"{w.a}/Patient/p1", headers=admin_headers).status_code == 204
    assert client.put("/fhir/Patient/secret-d", json=patient("secret-d", "Defaultus", "only-in-default")).is_success
    return w


def others(w: World) -> list[str]:
    return [w.b, w.default]


# ---- read, vread ---------------------------------------------------------------------------------------


def test_read_sees_only_the_sandboxs_own_writes_and_the_unchanged_baseline(world):
    w = world
    assert w.get(w.a, "Patient/secret-a").status_code == 200
    assert w.get(w.a, "Patient/p0").json()["name"][0]["family"] == "Altered"
    assert w.get(w.a, "Patient/p1").status_code == 410
    for base in others(w):
        assert w.get(base, "Patient/secret-a").status_code == 404
        assert w.get(base, "Observation/obs-a").status_code == 404
    p0 = w.get(w.b, "Patient/p0")
    assert p0.json()["name"][0]["family"] == "Chalmers" and p0.headers["etag"] == 'W/"1"'
    assert w.get(w.b, "Patient/p1").status_code == 200
    assert w.get(w.default, "Patient/p0").status_code == 404
    assert w.get(w.a, "Patient/secret-d").status_code == 404
    assert w.get(w.b, "Patient/secret-d").status_code == 404


def test_vread_finds_no_version_written_elsewhere(world):
    w = world
    assert w.get(w.a, "Patient/p0/_history/2").status_code == 200
    assert w.get(w.a, "Patient/p0/_history/1").json()["name"][0]["family"] == "Chalmers"
    for base in others(w):
        assert w.get(base, "Patient/secret-a/_history/1").status_code == 404
    assert w.get(w.b, "Patient/p0/_history/2").status_code == 404
    assert w.get(w.b, "Patient/p1/_history/2").status_code == 404
    assert w.get(w.b, "Patient/p0/_history/1").status_code == 200


# ---- search ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "Patient?family=secretus",
        "Patient?identifier=urn:sys|only-in-a",
        "Patient?_id=secret-a",
        "Patient?family=altered",
        "Observation?code=1234-5",
        "Observation?subject=Patient/secret-a",
        "Observation?_id=obs-a-p0",
    ],
)
def test_search_finds_nothing_written_in_another_sandbox(world, query):
    w = world
    assert w.ids(w.a, query), f"sandbox A should find {query}"
    for base in others(w):
        assert w.ids(base, query) == set()


def test_search_in_the_other_sandbox_still_finds_the_baseline_as_it_was(world):
    w = world
    assert w.ids(w.b, "Patient?family=chalmers") == {("Patient", "p0")}
    assert w.ids(w.b, "Patient") == {("Patient", "p0"), ("Patient", "p1")}
    assert w.ids(w.a, "Patient?family=chalmers") == set()
    assert w.ids(w.a, "Patient") == {("Patient", "p0"), ("Patient", "secret-a")}
    assert w.get(w.b, "Observation?_summary=count").json()["total"] == 1
    assert w.ids(w.default, "Patient") == {("Patient", "secret-d")}


def test_chained_search_follows_references_only_inside_the_sandbox(world):
    w = world
    assert w.ids(w.a, "Observation?subject.family=secretus") == {("Observation", "obs-a")}
    assert w.ids(w.a, "Observation?subject:Patient.family=altered") == {
        ("Observation", "obs-base"),
        ("Observation", "obs-a-p0"),
    }
    for base in others(w):
        assert w.ids(base, "Observation?subject.family=secretus") == set()
        assert w.ids(base, "Observation?subject:Patient.family=altered") == set()
    assert w.ids(w.b, "Observation?subject:Patient.family=chalmers") == {("Observation", "obs-base")}


def test_include_brings_the_sandboxs_own_version_of_the_target(world):
    w = world
    b = w.get(w.b, "Observation?_include=Observation:subject").json()
    found = {(e["resource"]["resourceType"], e["resource"]["id"]): e["resource"] for e in b["entry"]}
    assert set(found) == {("Observation", "obs-base"), ("Patient", "p0")}
    assert found[("Patient", "p0")]["name"][0]["family"] == "Chalmers"
    a = w.ids(w.a, "Observation?_include=Observation:subject", mode="include")
    assert a == {("Patient", "p0"), ("Patient", "secret-a")}


def test_revinclude_brings_only_the_sandboxs_referrers(world):
    w = world
    assert w.ids(w.b, "Patient?_id=p0&_revinclude=Observation:subject", mode="include") == {("Observation", "obs-base")}
    assert w.ids(w.a, "Patient?_id=p0&_revinclude=Observation:subject", mode="include") == {
        ("Observation", "obs-base"),
        ("Observation", "obs-a-p0"),
    }


def test_has_matches_only_referrers_in_the_sandbox(world):
    w = world
    assert w.ids(w.a, "Patient?_has:Observation:subject:code=1234-5") == {("Patient", "secret-a")}
    for base in others(w):
        assert w.ids(base, "Patient?_has:Observation:subject:code=1234-5") == set()
    assert w.ids(w.b, "Patient?_has:Observation:subject:code=8867-4") == {("Patient", "p0")}


def test_everything_gathers_only_the_sandboxs_own_compartment(world):
    w = world
    in_a = w.ids(w.a, "Patient/p0/$everything")
    assert in_a == {("Patient", "p0"), ("Observation", "obs-base"), ("Observation", "obs-a-p0")}
    in_b = w.get(w.b, "Patient/p0/$everything").json()
    assert {(e["resource"]["resourceType"], e["resource"]["id"]) for e in in_b["entry"]} == {
        ("Patient", "p0"),
        ("Observation", "obs-base"),
    }
    patient = next(e["resource"] for e in in_b["entry"] if e["resource"]["resourceType"] == "Patient")
    assert patient["name"][0]["family"] == "Chalmers"
    for base in others(w):
        assert w.get(base, "Patient/secret-a/$everything").status_code == 404


# ---- history ---------------------------------------------------------------------------------------------


def test_history_shows_no_version_written_elsewhere(world):
    w = world
    for base in others(w):
        assert w.get(base, "Patient/secret-a/_history").status_code == 404
    instance = w.get(w.b, "Patient/p0/_history").json()
    assert instance["total"] == 1
    assert instance["entry"][0]["resource"]["name"][0]["family"] == "Chalmers"
    assert w.get(w.a, "Patient/p0/_history").json()["total"] == 2
    type_ids = {e["request"]["url"] for e in w.get(w.b, "Patient/_history").json()["entry"]}
    assert all("secret" not in url for url in type_ids)
    system = w.get(w.b, "_history").json()
    assert system["total"] == 3  # the baseline's three versions, nothing of A's nor of the default sandbox
    default = w.get(w.default, "_history").json()
    assert default["total"] == 1


# ---- transactions and conditional operations ------------------------------------------------------------------


def test_a_transactions_conditional_reference_does_not_resolve_to_another_sandboxs_resource(world):
    w = world
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {**observation("x", "Patient?identifier=urn:sys|only-in-a", "2345-7"), "id": None},
                "request": {"method": "POST", "url": "Observation"},
            }
        ],
    }
    del bundle["entry"][0]["resource"]["id"]
    in_b = w.client.post(w.b, json=bundle, headers=w.headers)
    assert in_b.status_code in (400, 404, 412), in_b.text
    assert w.ids(w.b, "Observation?code=2345-7") == set()
    in_a = w.client.post(w.a, json=bundle, headers=w.headers)
    assert in_a.status_code == 200, in_a.text
    created = w.ids(w.a, "Observation?code=2345-7&_include=Observation:subject", mode="include")
    assert created == {("Patient", "secret-a")}


def test_a_literal_reference_to_another_sandboxs_resource_leads_nowhere(world):
    w = world
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {k: v for k, v in observation("y", "Patient/secret-a", "2345-7").items() if k != "id"},
                "request": {"method": "POST", "url": "Observation"},
            }
        ],
    }
    assert w.client.post(w.b, json=bundle, headers=w.headers).status_code in (200, 400, 404, 422)
    assert w.ids(w.b, "Observation?code=2345-7&_include=Observation:subject", mode="include") == set()
    assert w.ids(w.b, "Observation?subject.family=secretus") == set()


def test_conditional_create_update_and_delete_match_only_inside_the_sandbox(world):
    w = world
    criteria = "identifier=urn:sys|only-in-a"
    body = {k: v for k, v in patient("ignored", "Copy", "only-in-a").items() if k != "id"}
    created = w.client.post(f"{w.b}/Patient", json=body, headers={**w.headers, "If-None-Exist": criteria})
    assert created.status_code == 201 and created.json()["id"] != "secret-a"
    again = w.client.post(f"{w.b}/Patient", json=body, headers={**w.headers, "If-None-Exist": criteria})
    assert again.status_code == 200 and again.json()["id"] == created.json()["id"]
    updated = w.client.put(f"{w.b}/Patient?{criteria}", json={**body, "gender": "other"}, headers=w.headers)
    assert updated.status_code == 200 and updated.json()["id"] == created.json()["id"]
    assert w.client.delete(f"{w.b}/Patient?{criteria}", headers=w.headers).status_code == 200
    assert w.ids(w.b, f"Patient?{criteria}") == set()
    in_a = w.get(w.a, "Patient/secret-a").json()
    assert in_a["name"][0]["family"] == "Secretus" and in_a["meta"]["versionId"] == "1"
    in_default = w.client.put(f"/fhir/Patient?{criteria}", json=body)
    assert in_default.status_code == 201 and in_default.json()["id"] != "secret-a"


def test_writes_in_another_sandbox_leave_this_one_alone(world):
    w = world
    w.client.put(f"{w.b}/Patient/p0", json=patient("p0", "B's change", "base-0"), headers=w.headers)
    w.client.delete(f"{w.b}/Observation/obs-base", headers=w.headers)
    assert w.get(w.a, "Patient/p0").json()["name"][0]["family"] == "Altered"
    assert w.get(w.a, "Observation/obs-base").status_code == 200
    assert w.get(w.b, "Patient/p0").json()["meta"]["versionId"] == "2"


def test_resetting_one_sandbox_leaves_the_others_writes(world):
    w = world
    a_id = w.a.split("/")[2]
    w.client.put(f"{w.b}/Patient/b-own", json=patient("b-own", "Bee"), headers=w.headers)
    assert w.client.post(f"/admin/sandboxes/{a_id}/reset", headers=w.headers).status_code == 200
    assert w.get(w.a, "Patient/secret-a").status_code == 404
    assert w.get(w.a, "Patient/p0").json()["name"][0]["family"] == "Chalmers"
    assert w.get(w.b, "Patient/b-own").status_code == 200
    assert w.get(w.default, "Patient/secret-d").status_code == 200
