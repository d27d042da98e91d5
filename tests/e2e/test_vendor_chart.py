"""A vendor, in Chromium, goes from the vendor console to its own sandbox's charts and launches its SMART app
under a patient's banner; another vendor's app is not offered."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect

from sandbox.accounts.cohorts import create_cohort
from sandbox.accounts.roster import RosterLine
from sandbox.accounts.users import create_user
from sandbox.auth.clients import register_client
from tasks.cases import load_case_baseline
from tests.e2e.conftest import LiveServer

PASSWORD = "vendor e2e password"


def test_a_vendor_launches_its_app_from_its_own_sandboxs_chart(
    fresh_server: LiveServer, page: Page, app_origin: str, artifacts: Path
) -> None:
    db = fresh_server.db
    baseline = load_case_baseline(db, fresh_server.app.state.fhir, "Cases")
    with db.write() as conn:
        trainer = create_user(conn, "Tom Trainer", "tom@example.org", "trainer")
        acme = create_user(conn, "Acme Apps", "dev@acme.example", "vendor", password=PASSWORD)
        create_user(conn, "Other Apps", "dev@other.example", "vendor")
        roster = [RosterLine("Acme Apps", "dev@acme.example", "vendor")]
        cohort = create_cohort(conn, "Integrators", trainer.id, baseline_id=baseline, roster=roster)
        for client_id, owner in (("acme-app", acme.id), ("someone-elses-app", None)):
            app = {"client_id": client_id, "public": True, "redirect_uris": [f"{app_origin}/cb"]}
            register_client(
                conn, app | {"scopes": "launch patient/*.rs", "launch_url": f"{app_origin}/launch"}, owner=owner
            )
    sandbox = cohort.members[0].sandbox_id

    page.goto(fresh_server.url + "/login")
    page.get_by_label("Email").fill("dev@acme.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.goto(fresh_server.url + "/vendor")
    page.get_by_role("link", name="Open the charts of").click()
    page.get_by_role("link", name="Walter James Okafor").click()
    expect(page.get_by_role("button", name="Launch acme-app in the chart")).to_be_visible()
    expect(page.get_by_text("someone-elses-app")).to_have_count(0)

    page.get_by_role("button", name="Launch acme-app in the chart").click()
    frame = page.frame_locator("#app-frame")
    expect(frame.locator("#launched")).to_have_text(f"launched with iss {fresh_server.url}/sandboxes/{sandbox}/fhir")
    page.screenshot(path=artifacts / "vendor-chart-embedded-app.png", full_page=True)
