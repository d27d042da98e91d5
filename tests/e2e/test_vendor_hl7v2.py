"""A vendor, in Chromium, sends a test HL7 v2 message to its sandbox from the console, sees the ACK, opens the
message from the log and reprocesses it."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Page, expect

from sandbox.accounts.cohorts import create_cohort
from sandbox.accounts.roster import RosterLine
from sandbox.accounts.users import create_user
from tests.e2e.conftest import LiveServer
from tests.sandbox.hl7v2.conftest import adt

PASSWORD = "vendor e2e password"


def test_a_vendor_sends_a_test_message_and_opens_it_from_the_log(
    fresh_server: LiveServer, page: Page, artifacts: Path
) -> None:
    with fresh_server.db.write() as conn:
        trainer = create_user(conn, "Tom Trainer", "tom@example.org", "trainer")
        create_user(conn, "Acme Interfaces", "dev@acme.example", "vendor", password=PASSWORD)
        roster = [RosterLine("Acme Interfaces", "dev@acme.example", "vendor")]
        sandbox = create_cohort(conn, "Integrators", trainer.id, roster=roster).members[0].sandbox_id

    page.goto(fresh_server.url + "/login")
    page.get_by_label("Email").fill("dev@acme.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.goto(fresh_server.url + "/vendor")
    page.get_by_role("link", name="HL7 v2 interfaces").click()
    page.get_by_role("link", name=re.compile("^HL7 v2 interfaces of")).click()
    expect(page.locator("#msh-6")).to_have_text(sandbox)

    page.get_by_label("Message (ER7, one segment per line)").fill(adt(sandbox=sandbox).replace("\r", "\n").strip())
    page.get_by_role("button", name="Send test message").click()
    expect(page.locator("#sent-code")).to_have_text("AA")
    expect(page.locator("#sent-ack")).to_contain_text("MSA|AA|MSG0001")

    page.get_by_role("link", name="Open message MSG0001").click()
    expect(page.locator("#message-status")).to_have_text("accepted")
    expect(page.locator("#message-er7")).to_contain_text("PID|1||12345^^^HOSP^MR||Doe^John^Q")
    expect(page.locator("#message-resources li")).to_have_count(2)  # the Patient and the Encounter it wrote
    page.screenshot(path=artifacts / "vendor-hl7v2-message.png", full_page=True)

    page.get_by_role("button", name="Reprocess").click()
    expect(page.locator("#notice")).to_contain_text("Applied again")
    expect(page.locator("#message-ack-code")).to_have_text("AA")
    page.get_by_role("link", name="The message log of").click()
    expect(page.locator("#message-log tbody tr")).to_have_count(2)
    page.screenshot(path=artifacts / "vendor-hl7v2-log.png", full_page=True)
