"""The vendor console (FHIR base URL, request log, reset) and the FHIR request log behind it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from sandbox.accounts.cohorts import create_cohort
from sandbox.accounts.roster import RosterLine
from sandbox.accounts.tokens import issue_token
from sandbox.accounts.users import User
from sandbox.fhir.request_log import RequestLog, fhir_sandbox
from sandbox.store.database import Database
from sandbox.store.schema import fhir_requests
from tests.web.console_data import csrf_token, make_user, sign_in


@dataclass
class Vendors:
    acme: User
    acme_sandbox: str
    acme_token: str
    other_sandbox: str
    shared_sandbox: str


@pytest.fixture
def vendors(db: Database) -> Vendors:
    tom = make_user(db, "Tom Trainer", "tom@example.org", "trainer")
    acme = make_user(db, "Acme Apps", "dev@acme.example", "vendor")
    make_user(db, "Other Apps", "dev@other.example", "vendor")
    with db.write() as conn:
        private = create_cohort(
            conn,
            "Integrators",
            tom.id,
            roster=[
                RosterLine("Acme Apps", "dev@acme.example", "vendor"),
                RosterLine("Other", "dev@other.example", "vendor"),
            ],
        )
        shared = create_cohort(
            conn,
            "Connectathon",
            tom.id,
            mode="shared",
            roster=[
                RosterLine("Acme Apps", "dev@acme.example", "vendor"),
                RosterLine("Other", "dev@other.example", "vendor"),
            ],
        )
        _, secret = issue_token(conn, acme.id, "app")
    sandboxes = {m.user.email: m.sandbox_id for m in private.members}
    return Vendors(
        acme,
        sandboxes["dev@acme.example"],
        secret,
        sandboxes["dev@other.example"],
        shared.shared_sandbox_id or "",
    )


def fhir_calls(client: TestClient, v: Vendors) -> None:
    headers = {"Authorization": f"Bearer {v.acme_token}"}
    base = f"/sandboxes/{v.acme_sandbox}/fhir"
    assert (
        client.post(f"{base}/Patient", json={"resourceType": "Patient", "id": "x"}, headers=headers).status_code == 201
    )
    assert client.get(f"{base}/Patient?family=Smith&_count=5", headers=headers).status_code == 200
    assert client.get(f"{base}/Patient/missing", headers=headers).status_code == 404


def test_the_vendor_home_shows_the_fhir_base_and_the_calls_made_against_it(
    client: TestClient, vendors: Vendors
) -> None:
    fhir_calls(client, vendors)
    client.get(f"/sandboxes/{vendors.other_sandbox}/fhir/metadata")  # someone else's sandbox
    sign_in(client, "dev@acme.example")
    page = client.get("/vendor")
    assert page.status_code == 200
    section = page.text.split(f'data-sandbox="{vendors.acme_sandbox}"')[1].split("</section>")[0]
    assert f"http://testserver/sandboxes/{vendors.acme_sandbox}/fhir" in section
    log = section.split('class="request-log"')[1]
    rows = log.split("<tr>")[2:]  # after the header row; newest first
    assert len(rows) == 3
    assert "<td>GET</td>" in rows[0] and f"/sandboxes/{vendors.acme_sandbox}/fhir/Patient/missing" in rows[0]
    assert "<td>404</td>" in rows[0]
    assert "Patient?family=Smith&amp;_count=5" in rows[1] and "<td>200</td>" in rows[1]
    assert "<td>POST</td>" in rows[2] and "<td>201</td>" in rows[2] and " ms</td>" in rows[2]
    assert vendors.other_sandbox not in page.text
    assert 'id="vendor-sections"' in page.text  # the nav other vendor pages join


def test_a_vendor_resets_their_sandbox_and_its_log(client: TestClient, app: FastAPI, vendors: Vendors) -> None:
    fhir_calls(client, vendors)
    sign_in(client, "dev@acme.example")
    client.get("/vendor")
    answer = client.post(
        f"/vendor/sandboxes/{vendors.acme_sandbox}/reset",
        data={"csrf_token": csrf_token(client, "/vendor")},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    page = client.get(answer.headers["location"]).text
    assert "back at its baseline" in page
    assert page.split(f'data-sandbox="{vendors.acme_sandbox}"')[1].count('class="empty-log"') == 1
    headers = {"Authorization": f"Bearer {vendors.acme_token}"}
    assert client.get(f"/sandboxes/{vendors.acme_sandbox}/fhir/Patient/x", headers=headers).status_code == 404


def test_a_vendor_may_not_reset_someone_elses_or_a_shared_sandbox(
    client: TestClient, db: Database, vendors: Vendors
) -> None:
    sign_in(client, "dev@acme.example")
    token = csrf_token(client, "/vendor")
    foreign = client.post(f"/vendor/sandboxes/{vendors.other_sandbox}/reset", data={"csrf_token": token})
    assert foreign.status_code == 403
    shared = client.post(f"/vendor/sandboxes/{vendors.shared_sandbox}/reset", data={"csrf_token": token})
    assert shared.status_code == 409 and "ask your trainer" in shared.text
    assert client.post(f"/vendor/sandboxes/{vendors.acme_sandbox}/reset").status_code == 403  # no CSRF token


@pytest.mark.parametrize("role", ["trainee", "trainer"])
def test_other_roles_get_403_on_the_vendor_console(client: TestClient, db: Database, role: str) -> None:
    make_user(db, "Not a vendor", "someone@example.org", role)
    sign_in(client, "someone@example.org")
    assert client.get("/vendor").status_code == 403


# ---- the recorder ------------------------------------------------------------------------------------------


def test_fhir_paths_name_their_sandbox() -> None:
    assert fhir_sandbox("/sandboxes/abc/fhir") == "abc"
    assert fhir_sandbox("/sandboxes/abc/fhir/Observation?x=1") == "abc"
    # The open default sandbox (/fhir) belongs to no vendor: not logged.
    for other in ("/fhir", "/fhir/Patient/1", "/sandboxes/abc/hl7v2/messages", "/admin/sandboxes", "/sandboxes//fhir"):
        assert fhir_sandbox(other) is None


def test_the_log_keeps_the_newest_rows_of_each_sandbox_and_drops_unknown_sandboxes(
    db: Database, vendors: Vendors
) -> None:
    log = RequestLog(db, per_sandbox=3)
    for n in range(5):
        log.record(vendors.acme_sandbox, "GET", f"/sandboxes/x/fhir/Patient/{n}", 200, 1_700_000_000 + n, 1.5)
    log.record("no-such-sandbox", "GET", "/sandboxes/no-such-sandbox/fhir/Patient", 404, 1_700_000_000, 0.5)
    assert log.flush() == 3  # the two oldest would not survive the cap: not written at all
    for n in range(5, 7):  # a later batch pushes the oldest written rows out
        log.record(vendors.acme_sandbox, "GET", f"/sandboxes/x/fhir/Patient/{n}", 200, 1_700_000_000 + n, 1.5)
    assert log.flush() == 2
    with db.read() as conn:
        kept = log.recent(conn, vendors.acme_sandbox)
        assert [r.url.rsplit("/", 1)[1] for r in kept] == ["6", "5", "4"]
        assert kept[0].at == "2023-11-14T22:13:26.000Z" and kept[0].duration_ms == 1.5
        assert conn.execute(select(func.count()).select_from(fhir_requests)).scalar() == 3
    assert log.flush() == 0


def test_a_burst_writes_only_what_the_cap_keeps(db: Database, vendors: Vendors) -> None:
    log = RequestLog(db, per_sandbox=2)
    for n in range(4):
        log.record(vendors.acme_sandbox, "GET", f"/a/{n}", 200, 1_700_000_000 + n, 1.0)
        log.record(vendors.other_sandbox, "GET", f"/b/{n}", 200, 1_700_000_000 + n, 1.0)
    assert log.flush() == 4
    with db.read() as conn:
        assert [r.url for r in log.recent(conn, vendors.acme_sandbox)] == ["/a/3", "/a/2"]
        assert [r.url for r in log.recent(conn, vendors.other_sandbox)] == ["/b/3", "/b/2"]


def test_the_queue_is_bounded_when_the_writer_falls_behind(db: Database, vendors: Vendors) -> None:
    log = RequestLog(db, max_pending=10)
    for n in range(25):
        log.record(vendors.acme_sandbox, "GET", f"/fhir/Patient/{n}", 200, 1_700_000_000 + n, 1.0)
    assert log.flush() == 10
    with db.read() as conn:
        assert log.recent(conn, vendors.acme_sandbox)[-1].url == "/fhir/Patient/15"  # the oldest were dropped


def test_the_background_writer_flushes_and_stops(db: Database, vendors: Vendors) -> None:
    log = RequestLog(db, interval=0.01)
    log.start()
    log.record(vendors.acme_sandbox, "GET", "/fhir/metadata", 200, 1_700_000_000, 1.0)
    log.stop()  # writes what is left, whether or not the thread got to it
    with db.read() as conn:
        assert len(log.recent(conn, vendors.acme_sandbox)) == 1
