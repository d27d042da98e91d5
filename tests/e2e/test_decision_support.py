"""CDS Hooks in the chart, in Chromium: the chart opens with the demo AI model's card (patient-view); an
amoxicillin order for the penicillin-allergic Mr Okafor is stopped at signing by the critical allergy card,
which the trainee overrides with a reason before the order is signed."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect

from tests.e2e.conftest import LiveServer

BEN = "ben@demo.invalid"
PATIENT = "chest-pain-cardiology"


def test_a_critical_allergy_card_is_overridden_before_the_order_is_signed(
    live_server: LiveServer, page: Page, artifacts: Path
) -> None:
    assert live_server.demo is not None
    sandbox = live_server.demo.sandboxes[BEN]
    live_server.sign_in(page, BEN)
    page.goto(f"{live_server.url}/chart/{sandbox}/patients/{PATIENT}")
    ai_card = page.locator('#cds-cards article[data-service="ai-risk-model"]')
    expect(ai_card.locator(".cds-badge")).to_contain_text("Warning")
    expect(ai_card).to_contain_text("Demo AI risk model")
    page.screenshot(path=artifacts / "chart-cds-card.png", full_page=True)

    page.get_by_role("navigation", name="Chart sections").get_by_role("link", name="Medications").click()
    page.get_by_role("link", name="Order a medication").click()
    page.locator("#f-medication").fill("308182")
    page.locator("#f-dose").fill("250")
    page.get_by_role("button", name="Sign order").click()

    expect(page.locator("#cds-message")).to_contain_text("Not signed")
    alert = page.locator('#cds-cards article[data-service="penicillin-allergy-order-sign"]')
    expect(alert.locator(".cds-badge")).to_contain_text("Critical")
    expect(alert).to_contain_text("Penicillin allergy")
    page.screenshot(path=artifacts / "order-critical-card.png", full_page=True)
    alert.get_by_label("Reason").select_option("benefit-outweighs-risk")
    alert.get_by_role("button", name="Override").click()

    expect(alert.locator(".cds-outcome")).to_have_text("Overridden: Benefit outweighs the risk; will monitor")
    page.get_by_role("button", name="Sign order").click()
    expect(page.locator("#saved")).to_contain_text("Order a medication")
    expect(page.locator("#medication-orders")).to_contain_text("amoxicillin 250 mg oral capsule")
