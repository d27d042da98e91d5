"""A vendor, in Chromium, registers a CDS service by its discovery URL on the console's CDS services page: a URL
that is not a discovery URL is refused beside the field; the real one (this server's demo services, read over
HTTP like any vendor's) is listed with its services, and its discovery exchange is in the sandbox's log."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect

from sandbox.accounts.cohorts import create_cohort
from sandbox.accounts.roster import RosterLine
from sandbox.accounts.users import create_user
from tests.e2e.conftest import LiveServer

PASSWORD = "vendor e2e password"


def test_a_vendor_registers_a_cds_service_and_sees_it_listed(
    fresh_server: LiveServer, page: Page, artifacts: Path
) -> None:
    with fresh_server.db.write() as conn:
        trainer = create_user(conn, "Tom Trainer", "tom@example.org", "trainer")
        create_user(conn, "Acme Apps", "dev@acme.example", "vendor", password=PASSWORD)
        roster = [RosterLine("Acme Apps", "dev@acme.example", "vendor")]
        cohort = create_cohort(conn, "Integrators", trainer.id, roster=roster)
    sandbox = cohort.members[0].sandbox_id
    discovery_url = fresh_server.url + "/cds-services"

    page.goto(fresh_server.url + "/login")
    page.get_by_label("Email").fill("dev@acme.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.goto(fresh_server.url + "/vendor")
    page.get_by_role("navigation", name="Vendor console").get_by_role("link", name="CDS services").click()
    expect(page.get_by_role("heading", name="CDS services", level=1)).to_be_visible()

    page.get_by_label("Sandbox").select_option(sandbox)
    page.get_by_label("Discovery URL").fill(fresh_server.url + "/not-discovery")
    page.get_by_label("Registration id").fill("demo-over-http")
    page.get_by_role("button", name="Register service").click()
    expect(page.locator("#discovery_url-error")).to_contain_text("is not a discovery URL")
    expect(page.get_by_label("Discovery URL")).to_have_attribute("aria-invalid", "true")

    page.get_by_label("Discovery URL").fill(discovery_url)
    page.get_by_role("button", name="Register service").click()
    expect(page.locator("#notice")).to_have_text("Service registered.")
    ours = page.locator(f'section[data-sandbox="{sandbox}"] tr[data-registration="demo-over-http"]')
    expect(ours).to_have_count(4)  # the demo discovery document lists four services
    expect(ours.filter(has_text="ai-risk-model")).to_contain_text("patient-view")
    expect(ours.first).to_contain_text(discovery_url)
    log = page.locator(f'section[data-sandbox="{sandbox}"] table.cds-log')
    expect(log).to_contain_text("discovery")
    page.screenshot(path=artifacts / "vendor-cds-services.png", full_page=True)
