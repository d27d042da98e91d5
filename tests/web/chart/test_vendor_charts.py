"""A vendor opens the charts of its own sandboxes (those the vendor console lists) and launches its own SMART apps
there; never another sandbox's charts, never another vendor's app.  Trainees and trainers keep what they had."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from sandbox.accounts.cohorts import create_cohort
from sandbox.accounts.roster import RosterLine
from sandbox.auth.clients import register_client
from sandbox.demo import Demo
from sandbox.store.schema import resource_versions, smart_launches
from tests.web.chart.conftest import csrf_of
from tests.web.chart.conftest import sign_in as sign_in_demo
from tests.web.console_data import make_user, sign_in

PATIENT = "chest-pain-cardiology"
SCOPES = "launch openid fhirUser patient/*.rs"


@dataclass
class Vendors:
    acme_sandbox: str
    other_sandbox: str
    shared_sandbox: str


@pytest.fixture
def vendors(app: FastAPI, demo: Demo) -> Vendors:
    """Two vendors, each with a private sandbox on the demo's case baseline and one they share; an app each,
    and one registered through the admin API (no owner)."""
    db = app.state.db
    tom = make_user(db, "Tom Trainer", "tom@example.org", "trainer")
    acme = make_user(db, "Acme Apps", "dev@acme.example", "vendor")
    other = make_user(db, "Other Apps", "dev@other.example", "vendor")
    roster = [RosterLine("Acme Apps", "dev@acme.example", "vendor"), RosterLine("Other", "dev@other.example", "vendor")]
    with db.write() as conn:
        private = create_cohort(conn, "Integrators", tom.id, baseline_id=demo.baseline_id, roster=roster)
        shared = create_cohort(conn, "Connectathon", tom.id, baseline_id=demo.baseline_id, mode="shared", roster=roster)
        for client_id, owner in (("acme-app", acme.id), ("other-app", other.id), ("admin-app", None)):
            data = {
                "client_id": client_id,
                "public": True,
                "redirect_uris": [f"https://{client_id}.example/cb"],
                "scopes": SCOPES,
                "launch_url": f"https://{client_id}.example/launch",
                "auto_approve": True,
            }
            register_client(conn, data, owner=owner)
    sandboxes = {m.user.email: m.sandbox_id for m in private.members}
    return Vendors(sandboxes["dev@acme.example"], sandboxes["dev@other.example"], shared.shared_sandbox_id or "")


def chart(sandbox: str) -> str:
    return f"/chart/{sandbox}/patients/{PATIENT}"


def count(app: FastAPI, table) -> int:  # type: ignore[no-untyped-def]
    with app.state.db.read() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_a_vendor_opens_its_own_sandboxs_chart_and_launches_its_own_app(
    client: TestClient, app: FastAPI, vendors: Vendors
) -> None:
    sign_in(client, "dev@acme.example")
    console = client.get("/vendor").text
    assert f'href="/chart/{vendors.acme_sandbox}/patients"' in console
    assert "Walter James Okafor" in client.get(f"/chart/{vendors.acme_sandbox}/patients").text

    page = client.get(chart(vendors.acme_sandbox))
    assert page.status_code == 200
    assert 'aria-label="Launch acme-app in the chart">Launch app</button>' in page.text
    assert "other-app" not in page.text and "admin-app" not in page.text  # only the vendor's own apps
    assert 'href="/vendor">Vendor console</a>' in page.text
    assert "form-action 'self' https://acme-app.example;" in page.headers["content-security-policy"]

    token = csrf_of(page.text)
    answer = client.post(
        f"{chart(vendors.acme_sandbox)}/launch/acme-app",
        data={"csrf_token": token, "mode": "tab"},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    target = urlsplit(answer.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == "https://acme-app.example/launch"
    assert parse_qs(target.query)["iss"] == [f"http://testserver/sandboxes/{vendors.acme_sandbox}/fhir"]

    # The sandbox the vendor shares with others is theirs too.
    assert client.get(chart(vendors.shared_sandbox)).status_code == 200


def test_a_vendor_reaches_no_other_sandbox_and_no_other_vendors_app(
    client: TestClient, app: FastAPI, demo: Demo, vendors: Vendors
) -> None:
    sign_in(client, "dev@acme.example")
    token = csrf_of(client.get("/vendor").text)
    before = (count(app, resource_versions), count(app, smart_launches))
    ada_sandbox = demo.sandboxes["ada@demo.invalid"]
    for sandbox in (vendors.other_sandbox, ada_sandbox, "default", "no-such-sandbox"):
        for path in (f"/chart/{sandbox}/patients", chart(sandbox), f"{chart(sandbox)}/vitals"):
            response = client.get(path)
            assert response.status_code == 403 and "Not your sandbox" in response.text, path
        for path, data in (
            (f"{chart(sandbox)}/launch/acme-app", {"mode": "tab"}),
            (f"{chart(sandbox)}/forms/vitals", {"heart_rate": "80", "temp_unit": "Cel"}),
            (f"{chart(sandbox)}/forms/code-status", {"status": "full"}),
        ):
            response = client.post(path, data={"csrf_token": token, **data}, follow_redirects=False)
            assert response.status_code == 403, path
    # In its own sandbox, another vendor's app (or one registered by an admin) is as unknown as no app at all.
    for client_id in ("other-app", "admin-app", "no-such-app"):
        response = client.post(
            f"{chart(vendors.acme_sandbox)}/launch/{client_id}", data={"csrf_token": token, "mode": "tab"}
        )
        assert response.status_code == 404, client_id
    # Task pages stay a trainee's.
    assert client.get(f"/chart/{vendors.acme_sandbox}/task/panel", params={"task": "x/y"}).status_code == 403
    assert (count(app, resource_versions), count(app, smart_launches)) == before


def test_a_vendor_charts_in_its_own_sandbox_as_itself(client: TestClient, app: FastAPI, vendors: Vendors) -> None:
    sign_in(client, "dev@acme.example")
    token = csrf_of(client.get(chart(vendors.acme_sandbox)).text)
    saved = client.post(
        f"{chart(vendors.acme_sandbox)}/forms/code-status",
        data={"csrf_token": token, "status": "full"},
        follow_redirects=False,
    )
    assert saved.status_code == 303
    assert "Full code" in client.get(chart(vendors.acme_sandbox)).text


def test_trainees_and_trainers_still_see_every_app(client: TestClient, demo: Demo, vendors: Vendors) -> None:
    for email in ("ada@demo.invalid", "trainer@demo.invalid"):
        client.cookies.clear()
        sign_in_demo(client, demo, email)
        page = client.get(chart(demo.sandboxes["ada@demo.invalid"])).text
        assert all(f"Launch {a} in the chart" in page for a in ("acme-app", "other-app", "admin-app")), email
        # ... and no vendor's sandbox they have no part in.
        assert client.get(chart(vendors.acme_sandbox)).status_code == 403, email
