"""FHIR Bulk Data $export: kick-off, polling, files, cancellation, levels, layers, credentials and bad input."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from sandbox.accounts import cohorts, tokens, users
from sandbox.app import create_app
from sandbox.bulk import export, jobs
from sandbox.bulk.worker import run_due
from sandbox.store import sandboxes
from sandbox.store.layers import DEFAULT_SANDBOX, resolve_view
from sandbox.store.repository import Actor
from sandbox.store.schema import bulk_export_jobs, bulk_export_parts

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
LOADER = Actor("loader", "loader")


def patient(pid: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": pid.title()}]}


def observation(oid: str, pid: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"text": "pulse"},
        "subject": {"reference": f"Patient/{pid}"},
        "performer": [{"reference": "Practitioner/dr"}],
    }


def put(client: TestClient, resource: dict[str, Any], base: str = "/fhir", headers: dict | None = None) -> None:
    r = client.put(f"{base}/{resource['resourceType']}/{resource['id']}", json=resource, headers=headers or {})
    assert r.status_code in (200, 201), r.text


def kick_off(client: TestClient, url: str, headers: dict | None = None) -> str:
    r = client.get(url, headers={**ASYNC, **(headers or {})})
    assert r.status_code == 202, r.text
    return r.headers["Content-Location"]


def manifest(client: TestClient, location: str, headers: dict | None = None) -> dict[str, Any]:
    """Poll the status URL as a client would, until the export is done."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = client.get(location, headers=headers or {})
        if r.status_code == 200:
            assert r.headers["content-type"].startswith("application/json")
            return r.json()
        assert r.status_code == 202, r.text
        assert r.headers["Retry-After"] and r.headers["X-Progress"]
        time.sleep(0.05)
    raise AssertionError("the export did not finish")


def contents(client: TestClient, doc: dict[str, Any], headers: dict | None = None) -> dict[str, list[dict]]:
    """Type -> the resources of its file, checking each file's count and media type."""
    found: dict[str, list[dict]] = {}
    for entry in doc["output"]:
        r = client.get(entry["url"], headers={"Accept": "application/fhir+ndjson", **(headers or {})})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/fhir+ndjson")
        lines = [json.loads(line) for line in r.text.splitlines()]
        assert len(lines) == entry["count"] and all(x["resourceType"] == entry["type"] for x in lines)
        found[entry["type"]] = lines
    return found


def ids(found: dict[str, list[dict]]) -> set[str]:
    return {f"{r['resourceType']}/{r['id']}" for rows in found.values() for r in rows}


@pytest.fixture
def chart(client: TestClient) -> None:
    put(client, {"resourceType": "Practitioner", "id": "dr", "name": [{"family": "Who"}]})
    for pid in ("p1", "p2"):
        put(client, patient(pid))
        put(client, observation(f"{pid}-pulse", pid))
    put(client, {"resourceType": "Group", "id": "g1", "type": "person", "actual": True, "member": [
        {"entity": {"reference": "Patient/p1"}},
        {"entity": {"reference": "Practitioner/dr"}},
        {"entity": {"reference": "Patient/p2"}, "inactive": True},
    ]})  # fmt: skip


# ---- the flow -------------------------------------------------------------------------------------------------


def test_system_export_kick_off_poll_and_download(client, chart):
    location = kick_off(client, "/fhir/$export")
    assert location.startswith("http://testserver/fhir/bulk-export/")
    doc = manifest(client, location)
    assert doc["request"] == "http://testserver/fhir/$export"
    assert doc["requiresAccessToken"] is False  # kicked off without credentials, on the open default sandbox
    assert doc["transactionTime"].endswith("Z") and doc["error"] == []
    assert {e["type"]: e["count"] for e in doc["output"]} == {
        "Group": 1,
        "Observation": 2,
        "Patient": 2,
        "Practitioner": 1,
    }
    found = contents(client, doc)
    assert ids(found) == {
        "Group/g1",
        "Observation/p1-pulse",
        "Observation/p2-pulse",
        "Patient/p1",
        "Patient/p2",
        "Practitioner/dr",
    }
    assert found["Patient"][0]["meta"]["versionId"] == "1"  # the stored resources, as a read returns them


def test_type_and_since_narrow_the_export(client, chart):
    time.sleep(0.01)
    before = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    time.sleep(0.01)
    put(client, {**patient("p2"), "gender": "female"})
    doc = manifest(client, kick_off(client, f"/fhir/$export?_type=Patient,Observation&_since={before}"))
    assert ids(contents(client, doc)) == {"Patient/p2"}
    doc = manifest(client, kick_off(client, "/fhir/$export?_type=Observation&_outputFormat=ndjson"))
    assert ids(contents(client, doc)) == {"Observation/p1-pulse", "Observation/p2-pulse"}


def test_type_filter_narrows_types_by_searches(client, chart):
    query = urlencode({"_typeFilter": "Observation?_id=p1-pulse,Patient?name=p2&gender:missing=true"})
    doc = manifest(client, kick_off(client, f"/fhir/$export?{query}"))
    # Filtered types keep what one of their searches matches; the others come whole.
    assert ids(contents(client, doc)) == {"Observation/p1-pulse", "Patient/p2", "Practitioner/dr", "Group/g1"}
    query = urlencode([("_type", "Observation"), ("_typeFilter", "Observation?_id=p2-pulse")])
    doc = manifest(client, kick_off(client, f"/fhir/Patient/$export?{query}"))
    assert doc["request"] == f"http://testserver/fhir/Patient/$export?{query}"
    assert ids(contents(client, doc)) == {"Observation/p2-pulse"}


def test_patient_level_export_is_the_patients_compartments(client, chart):
    doc = manifest(client, kick_off(client, "/fhir/Patient/$export"))
    assert doc["request"] == "http://testserver/fhir/Patient/$export"
    # The Group is in its members' compartments (Group.member); the Practitioner is in no patient's.
    found = ids(contents(client, doc))
    assert found == {"Patient/p1", "Patient/p2", "Observation/p1-pulse", "Observation/p2-pulse", "Group/g1"}


def test_patient_level_post_with_patient_parameter(client, chart):
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_type", "valueString": "Observation"},
            {"name": "patient", "valueReference": {"reference": "Patient/p2"}},
            {"name": "patient", "valueReference": {"reference": "Patient/nobody"}},
        ],
    }
    r = client.post("/fhir/Patient/$export", json=body, headers=ASYNC)
    assert r.status_code == 202, r.text
    doc = manifest(client, r.headers["Content-Location"])
    assert doc["request"] == "http://testserver/fhir/Patient/$export"  # a POST's parameters are not in it
    assert ids(contents(client, doc)) == {"Observation/p2-pulse"}
    [error] = doc["error"]
    outcome = json.loads(client.get(error["url"]).text.splitlines()[0])
    assert outcome["resourceType"] == "OperationOutcome" and "Patient/nobody" in outcome["issue"][0]["diagnostics"]


def test_group_level_export_is_its_active_patient_members(client, chart):
    doc = manifest(client, kick_off(client, "/fhir/Group/g1/$export"))
    # p2 is an inactive member; the Group itself is in p1's compartment.
    assert ids(contents(client, doc)) == {"Patient/p1", "Observation/p1-pulse", "Group/g1"}
    [error] = doc["error"]
    outcome = json.loads(client.get(error["url"]).text)
    assert "Practitioner/dr" in outcome["issue"][0]["diagnostics"]


def test_delete_cancels_and_removes_the_files(client, chart):
    location = kick_off(client, "/fhir/$export")
    doc = manifest(client, location)
    r = client.delete(location)
    assert r.status_code == 202
    assert client.get(location).status_code == 404
    assert client.get(doc["output"][0]["url"]).status_code == 404
    assert client.delete(location).status_code == 404


# ---- layers, workers, restarts ------------------------------------------------------------------------------


def test_a_sandbox_exports_its_view_of_overlay_and_baseline(client, app, admin_headers):
    fhir, db = app.state.fhir, app.state.db
    with db.write() as conn:
        baseline = sandboxes.create_baseline(conn, "Base").id
        view = sandboxes.baseline_view_for_loading(conn, baseline)
        for body in (patient("b1"), patient("b2"), observation("o1", "b1"), observation("o2", "b2")):
            fhir.update(conn, view, body["resourceType"], body["id"], body, LOADER)
    sid = client.post("/admin/sandboxes", json={"name": "S", "baseline": baseline}, headers=admin_headers).json()["id"]
    base = f"/sandboxes/{sid}/fhir"
    put(client, {**observation("o1", "b1"), "status": "amended"}, base, admin_headers)
    assert client.delete(f"{base}/Observation/o2", headers=admin_headers).status_code in (200, 204)
    put(client, patient("s1"), base, admin_headers)
    doc = manifest(client, kick_off(client, f"{base}/Patient/$export", admin_headers), admin_headers)
    assert doc["requiresAccessToken"] is True
    found = contents(client, doc, admin_headers)
    assert ids(found) == {"Patient/b1", "Patient/b2", "Patient/s1", "Observation/o1"}
    assert found["Observation"][0]["status"] == "amended"  # the sandbox's version, not the baseline's
    # The default sandbox sees none of it.
    assert manifest(client, kick_off(client, "/fhir/$export"))["output"] == []


def test_another_worker_answers_status_and_serves_files(client, settings, db, chart):
    location = kick_off(client, "/fhir/$export?_type=Patient")
    manifest(client, location)
    other = create_app(settings, db=db)  # a second app process on the same database
    with TestClient(other, base_url="http://testserver") as second:
        doc = manifest(second, location)
        assert ids(contents(second, doc)) == {"Patient/p1", "Patient/p2"}


def test_a_job_abandoned_by_a_dead_worker_is_taken_over(app, db):
    """No lifespan here: no background worker, the test plays the workers."""
    fhir = app.state.fhir
    with db.write() as conn:
        view = resolve_view(conn, DEFAULT_SANDBOX)
        for n in range(7):
            fhir.update(conn, view, "Patient", f"p{n}", patient(f"p{n}"), LOADER)
        job_id = jobs.create(
            conn, DEFAULT_SANDBOX, level="system", group_id=None, patients=None, types=["Patient"], since=None,
            output_format="application/fhir+ndjson", request_url="http://x/fhir/$export", actor="anonymous",
            requires_token=False,
        )  # fmt: skip
    dead = jobs.claim(db, "dead-worker")
    assert dead is not None and dead.id == job_id
    with db.write() as conn:  # it got one part out, then died
        jobs.store_part(conn, dead, 1, 0, b'{"resourceType":"Patient","id":"half"}\n')
    assert run_due(db, app.state.repo, "live-worker") == 0  # its lease still holds
    with db.write() as conn:
        conn.execute(update(bulk_export_jobs).values(lease_until="2000-01-01T00:00:00.000000"))
    assert run_due(db, app.state.repo, "live-worker") == 1
    with db.read() as conn:
        job = jobs.get(conn, DEFAULT_SANDBOX, job_id)
        [output] = jobs.files(conn, DEFAULT_SANDBOX, job_id)
    assert job is not None and job.status == "completed" and job.attempts == 2
    lines = b"".join(jobs.file_parts(db, DEFAULT_SANDBOX, job_id, output.file_no)).splitlines()
    assert output.count == 7 and len(lines) == 7 and b"half" not in b"".join(lines)


def test_writes_after_the_transaction_time_wait_for_the_next_export(app, db):
    fhir = app.state.fhir
    with db.write() as conn:
        view = resolve_view(conn, DEFAULT_SANDBOX)
        fhir.update(conn, view, "Patient", "early", patient("early"), LOADER)
        jobs.create(
            conn, DEFAULT_SANDBOX, level="patient", group_id=None, patients=None, types=None, since=None,
            output_format="application/fhir+ndjson", request_url="http://x/fhir/Patient/$export", actor="anonymous",
            requires_token=False,
        )  # fmt: skip
    job = jobs.claim(db, "w")
    assert job is not None
    time.sleep(0.01)
    with db.write() as conn:
        fhir.update(conn, view, "Patient", "late", patient("late"), LOADER)
        fhir.update(conn, view, "Observation", "late-obs", observation("late-obs", "early"), LOADER)
    export.run(db, app.state.repo, job, "w", part_lines=1)
    with db.read() as conn:
        outputs = jobs.files(conn, DEFAULT_SANDBOX, job.id)
        parts = conn.execute(select(func.count()).select_from(bulk_export_parts)).scalar_one()
    assert [(f.resource_type, f.count) for f in outputs] == [("Patient", 1)] and parts == 1


def test_finished_exports_expire_with_their_files(client, app, db, chart):
    location = kick_off(client, "/fhir/$export?_type=Patient")
    manifest(client, location)
    expires = parsedate_to_datetime(client.get(location).headers["Expires"])
    assert timedelta(hours=23) < expires - datetime.now(UTC) <= jobs.RETENTION
    run_due(db, app.state.repo, "w")
    assert client.get(location).status_code == 200  # not yet
    with db.write() as conn:
        conn.execute(update(bulk_export_jobs).values(finished_at="2000-01-01T00:00:00.000000"))
    run_due(db, app.state.repo, "w")
    assert client.get(location).status_code == 404
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(bulk_export_parts)).scalar_one() == 0


# ---- credentials and isolation ------------------------------------------------------------------------------


@pytest.fixture
def vendors(app, admin_headers) -> dict[str, Any]:
    """Two vendors sharing one sandbox, and a trainee in a sandbox of another cohort."""
    with app.state.db.write() as conn:
        users.create_user(conn, "Tess", "tess@example.org", "trainer")
        for name in ("vic", "val"):
            users.create_user(conn, name, f"{name}@example.org", "vendor")
        shared = cohorts.create_cohort(conn, "Vendors", "tess@example.org", mode="shared")
        for name in ("vic", "val"):
            cohorts.add_member(conn, shared.id, f"{name}@example.org")
        other = cohorts.create_cohort(conn, "Other", "tess@example.org")
        cohorts.add_member(conn, other.id, "vic@example.org")
        other = cohorts.get_cohort(conn, other.id)
        headers = {}
        for user in users.list_users(conn):
            headers[user.email.split("@")[0]] = {"Authorization": f"Bearer {tokens.issue_token(conn, user.id)[1]}"}
    return {"headers": headers, "shared": shared.shared_sandbox_id, "other": other.members[0].sandbox_id}


def test_status_and_files_answer_only_the_caller_that_kicked_off(client, vendors, admin_headers):
    vic, val = vendors["headers"]["vic"], vendors["headers"]["val"]
    base = f"/sandboxes/{vendors['shared']}/fhir"
    put(client, patient("v1"), base, vic)
    assert client.get(f"{base}/$export", headers=ASYNC).status_code == 401  # a sandbox needs credentials
    location = kick_off(client, f"{base}/$export", vic)
    doc = manifest(client, location, vic)
    assert doc["requiresAccessToken"] is True and ids(contents(client, doc, vic)) == {"Patient/v1"}
    for stranger in (val, admin_headers):  # they reach the sandbox, but did not start this export
        assert client.get(location, headers=stranger).status_code == 403
        assert client.get(doc["output"][0]["url"], headers=stranger).status_code == 403
        assert client.delete(location, headers=stranger).status_code == 403
    assert client.get(location).status_code == 401
    assert client.get(doc["output"][0]["url"]).status_code == 401


def test_a_job_is_not_found_from_another_sandbox(client, vendors):
    vic = vendors["headers"]["vic"]
    location = kick_off(client, f"/sandboxes/{vendors['shared']}/fhir/$export", vic)
    job_id = location.rsplit("/", 1)[1]
    for other_base in (f"/sandboxes/{vendors['other']}/fhir", "/fhir"):
        r = client.get(f"{other_base}/bulk-export/{job_id}", headers=vic)
        assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"
    manifest(client, location, vic)


# ---- bad input -------------------------------------------------------------------------------------------------


def test_kick_off_without_prefer_respond_async_is_refused(client, db, chart):
    r = client.get("/fhir/$export", headers={"Prefer": "return=minimal"})
    assert r.status_code == 400 and "respond-async" in r.json()["issue"][0]["diagnostics"]
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(bulk_export_jobs)).scalar_one() == 0


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("/fhir/$export?_type=Patient,Unicorn", "Unicorn"),
        ("/fhir/$export?_since=yesterday", "_since"),
        ("/fhir/$export?_since=2024-01-01", "_since"),  # a date, not an instant
        ("/fhir/$export?_outputFormat=text/csv", "text/csv"),
        ("/fhir/$export?_typeFilter=Observation%3Fcolour%3Dred", "colour"),
        ("/fhir/$export?_typeFilter=Unicorn%3Fhorn%3D1", "Unicorn"),
        ("/fhir/$export?_type=Patient&_typeFilter=Observation%3Fstatus%3Dfinal", "leaves out"),
        ("/fhir/Patient/$export?_typeFilter=Practitioner%3Fname%3Dwho", "compartment"),
        ("/fhir/$export?_elements=id", "_elements"),
        ("/fhir/$export?colour=blue", "colour"),
        ("/fhir/Patient/$export?_type=Practitioner", "compartment"),
        ("/fhir/Patient/$export?patient=Patient/p1", "POST"),
        ("/fhir/Group/no-such-group/$export", "Group/no-such-group"),
    ],
)
def test_bad_kick_offs_are_400_or_404_and_start_nothing(client, db, chart, url, words):
    r = client.get(url, headers=ASYNC)
    assert r.status_code in (400, 404), r.text
    assert r.json()["resourceType"] == "OperationOutcome" and words in r.json()["issue"][0]["diagnostics"]
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(bulk_export_jobs)).scalar_one() == 0


def test_since_with_an_unencoded_plus_zone_is_understood(client, chart):
    doc = manifest(client, kick_off(client, "/fhir/$export?_type=Patient&_since=2000-01-01T00:00:00+02:00"))
    assert ids(contents(client, doc)) == {"Patient/p1", "Patient/p2"}


def test_unknown_job_and_file_are_404(client, chart):
    assert client.get("/fhir/bulk-export/no-such-job").status_code == 404
    location = kick_off(client, "/fhir/$export?_type=Patient")
    manifest(client, location)
    assert client.get(f"{location}/files/99").status_code == 404
    assert client.get(f"{location}/files/x").status_code == 404


def test_export_on_other_types_is_not_supported(client):
    r = client.get("/fhir/Observation/$export", headers=ASYNC)
    assert r.status_code == 400 and "system level" in r.json()["issue"][0]["diagnostics"]


def test_capability_statement_lists_the_export_operations(client):
    rest = client.get("/fhir/metadata").json()["rest"][0]
    bulk = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"
    assert {"name": "export", "definition": bulk + "export"} in rest["operation"]
    by_type = {r["type"]: r.get("operation", []) for r in rest["resource"]}
    assert {"name": "export", "definition": bulk + "patient-export"} in by_type["Patient"]
    assert {"name": "export", "definition": bulk + "group-export"} in by_type["Group"]
    assert not any(op["name"] == "export" for op in by_type["Observation"])
