"""History: instance, type and system ``_history`` with ``_since``, ``_at``, ``_count`` and paging.

The repository's clock is replaced by one the tests set (``clock.py``).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from fhir.resources.R4B.bundle import Bundle
from sqlalchemy import insert

from sandbox.store import repository
from sandbox.store.layers import View
from sandbox.store.schema import layers
from tests.sandbox.fhir.clock import Clock, install

PATIENT = {"resourceType": "Patient", "name": [{"family": "Osei"}], "gender": "female"}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return install(monkeypatch)


def _entries(bundle: dict) -> list[tuple[str, str, str | None]]:
    """(method, etag, family name or None) per entry, in order."""
    out = []
    for e in bundle.get("entry", []):
        resource = e.get("resource")
        out.append((e["request"]["method"], e["response"]["etag"], resource["name"][0]["family"] if resource else None))
    return out


def _link(bundle: dict, relation: str) -> str | None:
    return next((link["url"] for link in bundle["link"] if link["relation"] == relation), None)


def _path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_instance_history_is_newest_first_and_a_deletion_is_an_entry_without_resource(client, clock):
    clock.set("2026-03-01T10:00:00Z")
    pid = client.post("/fhir/Patient", json=PATIENT).json()["id"]
    clock.set("2026-03-01T11:00:00Z")
    client.put(f"/fhir/Patient/{pid}", json={**PATIENT, "id": pid, "name": [{"family": "Mensah"}]})
    clock.set("2026-03-01T12:00:00Z")
    client.delete(f"/fhir/Patient/{pid}")

    r = client.get(f"/fhir/Patient/{pid}/_history")
    assert r.status_code == 200
    bundle = r.json()
    Bundle.model_validate(bundle)
    assert bundle["type"] == "history" and bundle["total"] == 3
    assert _entries(bundle) == [("DELETE", 'W/"3"', None), ("PUT", 'W/"2"', "Mensah"), ("POST", 'W/"1"', "Osei")]
    deletion, update, creation = bundle["entry"]
    assert deletion["request"]["url"] == f"Patient/{pid}"
    assert deletion["response"]["status"].startswith("204")
    assert creation["request"]["url"] == "Patient"
    assert creation["response"]["status"].startswith("201")
    assert update["response"]["lastModified"] == "2026-03-01T11:00:00.000Z"
    assert update["fullUrl"] == f"http://testserver/fhir/Patient/{pid}"


def test_type_and_system_history_cover_their_scope(client, clock):
    pid = client.post("/fhir/Patient", json=PATIENT).json()["id"]
    client.post("/fhir/Observation", json={"resourceType": "Observation", "status": "final", "code": {"text": "x"}})
    client.put(f"/fhir/Patient/{pid}", json={**PATIENT, "id": pid})

    patients = client.get("/fhir/Patient/_history").json()
    assert patients["total"] == 2
    assert {e["resource"]["resourceType"] for e in patients["entry"]} == {"Patient"}
    everything = client.get("/fhir/_history").json()
    assert everything["total"] == 3
    assert [e["resource"]["resourceType"] for e in everything["entry"]] == ["Patient", "Observation", "Patient"]


def test_since_keeps_versions_written_at_or_after_it(client, clock):
    clock.set("2026-03-01T10:00:00Z")
    pid = client.post("/fhir/Patient", json=PATIENT).json()["id"]
    clock.set("2026-03-02T10:00:00Z")
    client.put(f"/fhir/Patient/{pid}", json={**PATIENT, "id": pid, "name": [{"family": "Two"}]})
    clock.set("2026-03-03T10:00:00Z")
    client.put(f"/fhir/Patient/{pid}", json={**PATIENT, "id": pid, "name": [{"family": "Three"}]})

    since = client.get(f"/fhir/Patient/{pid}/_history", params={"_since": "2026-03-02T10:00:00Z"}).json()
    assert [e[2] for e in _entries(since)] == ["Three", "Two"]
    assert client.get("/fhir/_history", params={"_since": "2026-03-04"}).json()["total"] == 0
    # A time zone offset is honoured: 2026-03-02T11:30+01:00 is 10:30 UTC, after "Two" was written.
    zoned = client.get(f"/fhir/Patient/{pid}/_history", params={"_since": "2026-03-02T11:30:00+01:00"}).json()
    assert [e[2] for e in _entries(zoned)] == ["Three"]


def test_at_keeps_the_versions_that_were_current_during_the_period(client, clock):
    clock.set("2026-03-01T10:00:00Z")
    pid = client.post("/fhir/Patient", json=PATIENT).json()["id"]  # v1, current until 03-05
    clock.set("2026-03-05T10:00:00Z")
    client.put(f"/fhir/Patient/{pid}", json={**PATIENT, "id": pid, "name": [{"family": "Two"}]})  # v2 until 03-09
    clock.set("2026-03-09T10:00:00Z")
    client.put(f"/fhir/Patient/{pid}", json={**PATIENT, "id": pid, "name": [{"family": "Three"}]})  # v3 still

    def at(value: str) -> list[str | None]:
        r = client.get(f"/fhir/Patient/{pid}/_history", params={"_at": value})
        assert r.status_code == 200
        return [e[2] for e in _entries(r.json())]

    assert at("2026-03-03") == ["Osei"]  # only v1 was current that day
    assert at("2026-03-05T10:00:01Z") == ["Two"]  # v1 was superseded a second before
    assert at("2026-03-05") == ["Two", "Osei"]  # the day of the update saw both
    assert at("2026-03") == ["Three", "Two", "Osei"]
    assert at("2026-04-01") == ["Three"]  # the current version is current until further notice
    assert at("2026-02") == []  # before the resource existed


def test_at_across_type_history_and_deletions(client, clock):
    clock.set("2026-03-01T10:00:00Z")
    a = client.post("/fhir/Patient", json=PATIENT).json()["id"]
    clock.set("2026-03-02T10:00:00Z")
    client.delete(f"/fhir/Patient/{a}")
    clock.set("2026-03-03T10:00:00Z")
    client.post("/fhir/Patient", json={**PATIENT, "name": [{"family": "Later"}]})

    on_the_first = client.get("/fhir/Patient/_history", params={"_at": "2026-03-01"}).json()
    assert _entries(on_the_first) == [("POST", 'W/"1"', "Osei")]
    on_the_third = client.get("/fhir/Patient/_history", params={"_at": "2026-03-03"}).json()
    # The deletion is the state of the first patient from 03-02 on.
    assert _entries(on_the_third) == [("POST", 'W/"1"', "Later"), ("DELETE", 'W/"2"', None)]


def test_count_pages_with_next_and_previous_links_that_hold_while_others_write(client, clock):
    pid = client.post("/fhir/Patient", json=PATIENT).json()["id"]
    for n in range(2, 8):
        client.put(f"/fhir/Patient/{pid}", json={**PATIENT, "id": pid, "name": [{"family": f"V{n}"}]})

    first = client.get(f"/fhir/Patient/{pid}/_history", params={"_count": "3"}).json()
    assert first["total"] == 7
    assert [e[1] for e in _entries(first)] == ['W/"7"', 'W/"6"', 'W/"5"']
    assert _link(first, "previous") is None
    # Someone writes between pages: the following pages still continue where the first stopped.
    client.put(f"/fhir/Patient/{pid}", json={**PATIENT, "id": pid, "name": [{"family": "Newer"}]})
    second = client.get(_path(_link(first, "next"))).json()
    assert [e[1] for e in _entries(second)] == ['W/"4"', 'W/"3"', 'W/"2"']
    third = client.get(_path(_link(second, "next"))).json()
    assert [e[1] for e in _entries(third)] == ['W/"1"']
    assert _link(third, "next") is None
    back = client.get(_path(_link(third, "previous"))).json()
    assert [e[1] for e in _entries(back)] == ['W/"4"', 'W/"3"', 'W/"2"']
    # A fresh request sees the new version.
    assert (
        client.get(f"/fhir/Patient/{pid}/_history", params={"_count": "1"}).json()["entry"][0]["response"]["etag"]
        == 'W/"8"'
    )
    query = parse_qs(urlsplit(_link(first, "next")).query)
    assert query["_count"] == ["3"] and query["_offset"] == ["3"] and "_snapshot" in query


def test_count_zero_gives_only_the_total(client, clock):
    pid = client.post("/fhir/Patient", json=PATIENT).json()["id"]
    client.put(f"/fhir/Patient/{pid}", json={**PATIENT, "id": pid})
    bundle = client.get(f"/fhir/Patient/{pid}/_history", params={"_count": "0"}).json()
    assert bundle["total"] == 2 and "entry" not in bundle and _link(bundle, "next") is None


@pytest.mark.parametrize(
    "params",
    [{"_count": "many"}, {"_count": "-1"}, {"_since": "yesterday"}, {"_at": "2026-13-01"}, {"_offset": "x"}],
)
def test_bad_history_parameters_are_400(client, params):
    pid = client.post("/fhir/Patient", json=PATIENT).json()["id"]
    r = client.get(f"/fhir/Patient/{pid}/_history", params=params)
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"


def test_repeated_since_is_400_and_unknown_parameters_fail_only_when_strict(client):
    pid = client.post("/fhir/Patient", json=PATIENT).json()["id"]
    twice = client.get(f"/fhir/Patient/{pid}/_history?_since=2026-01-01&_since=2026-02-01")
    assert twice.status_code == 400
    assert client.get(f"/fhir/Patient/{pid}/_history", params={"_list": "x"}).status_code == 200
    strict = client.get(f"/fhir/Patient/{pid}/_history", params={"_list": "x"}, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    assert strict.json()["issue"][0]["code"] == "not-supported"


def test_history_of_unknown_resource_is_404_and_of_a_deleted_one_still_readable(client):
    assert client.get("/fhir/Patient/nobody/_history").status_code == 404
    assert client.get("/fhir/Nonsense/_history").status_code == 404
    pid = client.post("/fhir/Patient", json=PATIENT).json()["id"]
    client.delete(f"/fhir/Patient/{pid}")
    assert client.get(f"/fhir/Patient/{pid}/_history").json()["total"] == 2


def test_a_resource_created_again_after_deletion_continues_its_history(client):
    client.put("/fhir/Patient/again", json={**PATIENT, "id": "again"})
    client.delete("/fhir/Patient/again")
    recreated = client.put("/fhir/Patient/again", json={**PATIENT, "id": "again", "name": [{"family": "Back"}]})
    assert recreated.status_code == 201 and recreated.json()["meta"]["versionId"] == "3"
    entries = _entries(client.get("/fhir/Patient/again/_history").json())
    assert entries == [("PUT", 'W/"3"', "Back"), ("DELETE", 'W/"2"', None), ("PUT", 'W/"1"', "Osei")]


def test_history_across_the_baseline_shows_the_baselines_versions_then_the_sandboxs(client, app, admin_headers, clock):
    db, repo = app.state.db, app.state.repo
    clock.set("2026-01-10T00:00:00Z")
    with db.write() as conn:
        conn.execute(insert(layers).values(id="base", kind="baseline", name="Base", created_at="2026-01-01"))
        conn.execute(
            insert(layers).values(id="s1", kind="sandbox", name="S1", baseline_id="base", created_at="2026-01-01")
        )
        base = View("base", ("base",))
        loader = repository.Actor("loader", "loader")
        repo.write(conn, base, PATIENT, loader, rtype="Patient", rid="p1", method="POST")
        clock.set("2026-01-20T00:00:00Z")
        repo.write(
            conn, base, {**PATIENT, "name": [{"family": "Base2"}]}, loader, rtype="Patient", rid="p1", method="PUT"
        )
        repo.write(conn, base, PATIENT, loader, rtype="Patient", rid="untouched", method="POST")

    url = "/sandboxes/s1/fhir/Patient/p1"
    clock.set("2026-02-01T00:00:00Z")
    changed = client.put(url, json={**PATIENT, "id": "p1", "name": [{"family": "Mine"}]}, headers=admin_headers)
    assert changed.status_code == 200
    assert changed.json()["meta"]["versionId"] == "3"  # continues the baseline's numbering

    history = client.get(f"{url}/_history", headers=admin_headers).json()
    assert _entries(history) == [("PUT", 'W/"3"', "Mine"), ("PUT", 'W/"2"', "Base2"), ("POST", 'W/"1"', "Osei")]
    assert history["entry"][0]["fullUrl"] == "http://testserver/sandboxes/s1/fhir/Patient/p1"
    assert client.get(f"{url}/_history/1", headers=admin_headers).json()["name"][0]["family"] == "Osei"
    sandbox_types = client.get("/sandboxes/s1/fhir/Patient/_history", headers=admin_headers).json()
    assert sandbox_types["total"] == 4  # both of p1's baseline versions, the untouched one, and the sandbox's own
    # _at follows a version into the sandbox's layer: the baseline's v2 was current until the sandbox's v3.
    at = client.get(f"{url}/_history", params={"_at": "2026-01-25"}, headers=admin_headers).json()
    assert _entries(at) == [("PUT", 'W/"2"', "Base2")]
    later = client.get(f"{url}/_history", params={"_at": "2026-02-02"}, headers=admin_headers).json()
    assert _entries(later) == [("PUT", 'W/"3"', "Mine")]
    # The default sandbox, which has no baseline, sees none of it.
    assert client.get("/fhir/Patient/_history").json()["total"] == 0
