"""A trainee works tasks in the EHR in a real browser: signs in, starts a task from "My assignments",
charts through the forms, watches the checklist pass, submits, and answers the feedback question; and a
trainee who makes a known mistake sees the pack's feedback for it.  Screenshots of the main pages are
saved as artifacts."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect
from sqlalchemy import select

from sandbox.accounts.tokens import issue_token
from sandbox.accounts.users import find_by_email
from sandbox.store.schema import task_feedback
from tests.e2e.conftest import LiveServer

ADA, BEN = "ada@demo.invalid", "ben@demo.invalid"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"


def start(page: Page, server: LiveServer, title: str) -> None:
    page.goto(server.url + "/assignments")
    page.get_by_role("button", name=f"Start {title}").click()
    expect(page.locator("#task-title")).to_have_text(title)


def checklist_item(page: Page, check: str):  # type: ignore[no-untyped-def]
    return page.locator(f'#checklist li[data-check="{check}"]')


def option_value(page: Page, select_id: str, text: str) -> str:
    value = page.locator(f"#{select_id} option", has_text=text).first.get_attribute("value")
    assert value
    return value


def test_trainee_charts_vitals_through_the_forms_and_passes(
    live_server: LiveServer, page: Page, artifacts: Path
) -> None:
    live_server.sign_in(page, ADA)
    page.get_by_role("link", name="My assignments").click()
    expect(page.locator("#assignments")).to_contain_text("Chart a full set of vital signs")
    page.screenshot(path=artifacts / "assignments.png", full_page=True)

    start(page, live_server, "Chart a full set of vital signs")
    expect(page.locator("#banner")).to_contain_text("Walter James Okafor")
    expect(page.locator("#banner-allergies")).to_contain_text("enicillin")
    page.screenshot(path=artifacts / "chart-summary.png", full_page=True)

    page.get_by_role("navigation", name="Chart sections").get_by_role("link", name="Vitals").click()
    page.get_by_role("link", name="Chart vital signs").click()
    page.get_by_label("Systolic BP (mm Hg)").fill("152")
    page.get_by_label("Diastolic BP (mm Hg)").fill("94")
    page.get_by_label("Heart rate (/min)").fill("88")
    page.get_by_label("Respiratory rate (/min)").fill("16")
    page.get_by_label("Oxygen saturation (%)").fill("97")
    page.get_by_label("Temperature", exact=True).fill("36.8")
    page.screenshot(path=artifacts / "form-vitals.png", full_page=True)
    page.get_by_role("button", name="Save").click()

    # Post/redirect/get: the flowsheet shows the entry at once, and the checklist was re-checked on save.
    expect(page.locator("#saved")).to_contain_text("Chart vital signs")
    expect(page.locator('#flowsheet tr[data-vital="bp"]')).to_contain_text("152/94")
    for check in ("blood-pressure", "heart-rate", "respiratory-rate", "oxygen-saturation", "temperature"):
        expect(checklist_item(page, check)).to_have_class(re.compile(r"\bpass\b"))
    expect(checklist_item(page, "in-current-encounter")).to_have_class(re.compile(r"\bpass\b"))
    expect(page.locator("svg.trend").first).to_be_visible()
    page.screenshot(path=artifacts / "chart-vitals.png", full_page=True)

    page.get_by_role("button", name="Submit task").click()
    expect(page.locator("#result-summary")).to_contain_text("Passed")
    expect(page.locator("#result-score")).to_have_text("8.0 / 8.0")
    page.get_by_label(re.compile(r"^4 · ")).check()
    page.get_by_label("Comment").fill("Clear instructions.")
    page.screenshot(path=artifacts / "task-result.png", full_page=True)
    page.get_by_role("button", name="Send feedback").click()
    expect(page.locator("#feedback-thanks")).to_be_visible()
    with live_server.db.read() as conn:
        answers = conn.execute(select(task_feedback.c.task_id, task_feedback.c.rating, task_feedback.c.comment)).all()
    assert ("vitals-current-encounter", 4, "Clear instructions.") in [tuple(a) for a in answers]

    page.goto(live_server.url + "/assignments")
    row = page.locator('#assignments tr[data-task="core-clinical/vitals-current-encounter"]')
    expect(row.locator(".status")).to_have_text("Passed")


def test_trainee_refers_to_cardiology_and_passes(live_server: LiveServer, page: Page, artifacts: Path) -> None:
    live_server.sign_in(page, ADA)
    start(page, live_server, "Refer to cardiology, track the referral and tell the specialist")
    page.get_by_role("navigation", name="Chart sections").get_by_role("link", name="Referrals").click()
    page.get_by_role("link", name="Refer", exact=True).click()
    page.get_by_label("Refer to").select_option(option_value(page, "f-performer", "Cardiology"))
    page.get_by_label("Reason (condition)").select_option(option_value(page, "f-reason", "Chest pain"))
    page.get_by_label("Priority").select_option("urgent")
    page.get_by_label("Track the referral with a task").check()
    page.get_by_label("Notify the specialist").check()
    page.get_by_label("Message to the specialist").fill("Urgent referral: 58M, 3 weeks of exertional chest pain.")
    page.screenshot(path=artifacts / "form-referral.png", full_page=True)
    page.get_by_role("button", name="Save").click()

    expect(page.locator("#referrals")).to_contain_text("Cardiology")
    expect(page.locator("#referrals")).to_contain_text("urgent")
    for check in ("referral-placed", "cardiologist", "reason", "priority", "tracking-task", "specialist-informed"):
        expect(checklist_item(page, check)).to_have_class(re.compile(r"\bpass\b"))
    page.screenshot(path=artifacts / "chart-referrals.png", full_page=True)
    page.get_by_role("button", name="Submit task").click()
    expect(page.locator("#result-summary")).to_contain_text("Passed")


def test_trainee_closes_a_referral_loop_when_the_consult_note_has_arrived(
    live_server: LiveServer, page: Page, artifacts: Path
) -> None:
    live_server.sign_in(page, ADA)
    start(page, live_server, "Close the loop when the consult note arrives")
    sections = page.get_by_role("navigation", name="Chart sections")
    sections.get_by_role("link", name="Notes").click()
    expect(page.locator("#notes")).to_contain_text("Metformin dose is at the renal maximum")  # the note arrived
    sections.get_by_role("link", name="Referrals").click()
    expect(page.locator("#referrals")).to_contain_text("in-progress")  # the loop is open
    page.get_by_role("link", name="Close a referral loop").click()
    page.get_by_label("Referral being tracked").select_option(option_value(page, "f-tracking_task", "referral"))
    page.get_by_label("Consult note received").select_option(option_value(page, "f-note", "Endocrinology consult"))
    expect(page.get_by_label("Mark the referral completed")).to_be_checked()
    page.screenshot(path=artifacts / "form-close-referral.png", full_page=True)
    page.get_by_role("button", name="Save").click()

    expect(page.locator("#referrals")).to_contain_text("completed")
    for check in ("task-completed", "note-linked", "referral-completed"):
        expect(checklist_item(page, check)).to_have_class(re.compile(r"\bpass\b"))
    page.get_by_role("button", name="Submit task").click()
    expect(page.locator("#result-summary")).to_contain_text("Passed")


def test_known_mistakes_get_the_packs_feedback(live_server: LiveServer, page: Page, artifacts: Path) -> None:
    live_server.sign_in(page, BEN)
    start(page, live_server, "Refer to cardiology, track the referral and tell the specialist")
    page.get_by_role("navigation", name="Chart sections").get_by_role("link", name="Referrals").click()
    page.get_by_role("link", name="Refer", exact=True).click()

    # Bad input first: nothing chosen to refer to; the error shows beside the field and nothing is saved.
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#f-performer-error")).to_have_text("Refer to is required.")
    expect(page.get_by_label("Refer to")).to_have_attribute("aria-invalid", "true")
    page.screenshot(path=artifacts / "form-errors.png", full_page=True)

    # The coded picker says what a code means as it is typed (the page's script), and the code is kept.
    expect(page.locator("#f-service-picked")).to_have_text("Referral to service")
    page.get_by_label("Service").fill("91251008")
    expect(page.locator("#f-service-picked")).to_have_text("Physical therapy procedure")
    page.get_by_label("Service").fill("306206005")

    # The mistake: a routine referral, no tracking task, the specialist not told.
    page.get_by_label("Refer to").select_option(option_value(page, "f-performer", "Cardiology"))
    page.get_by_label("Reason (condition)").select_option(option_value(page, "f-reason", "Chest pain"))
    page.get_by_role("button", name="Save").click()

    expect(checklist_item(page, "referral-placed")).to_have_class(re.compile(r"\bpass\b"))
    expect(checklist_item(page, "priority")).to_have_class(re.compile(r"\bfail\b"))
    expect(checklist_item(page, "priority")).to_contain_text("needs an urgent cardiology review")
    expect(checklist_item(page, "tracking-task")).to_contain_text("Create a Task whose focus is the referral")
    page.screenshot(path=artifacts / "task-feedback.png", full_page=True)

    page.get_by_role("button", name="Submit task").click()
    expect(page.locator("#result-summary")).to_contain_text("Not passed")
    expect(page.locator("#result-checks")).to_contain_text("needs an urgent cardiology review")


def test_the_checklist_follows_writes_made_outside_the_chart(live_server: LiveServer, page: Page) -> None:
    """A write through the FHIR API (a SMART app, say) is re-checked by the live worker, and the open
    chart's task panel shows it without a reload."""
    live_server.sign_in(page, ADA)
    start(page, live_server, "Add a problem to the problem list")
    expect(checklist_item(page, "on-the-list")).to_have_class(re.compile(r"\bunchecked\b"))
    sandbox = live_server.demo.sandboxes[ADA]
    with live_server.db.write() as conn:
        ada = find_by_email(conn, ADA)
        assert ada is not None
        _info, token = issue_token(conn, ada.id, "e2e")
    angina = {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/chest-pain-cardiology"},
        "category": [{"coding": [{"system": CONDITION_CATEGORY, "code": "problem-list-item"}]}],
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "194828000", "display": "Angina"}]},
        "clinicalStatus": {"coding": [{"system": CONDITION_CLINICAL, "code": "active"}]},
        "verificationStatus": {"coding": [{"system": CONDITION_VERIFICATION, "code": "provisional"}]},
    }
    created = httpx.post(
        f"{live_server.url}/sandboxes/{sandbox}/fhir/Condition",
        json=angina,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"},
    )
    assert created.status_code == 201, created.text
    expect(checklist_item(page, "on-the-list")).to_have_class(re.compile(r"\bpass\b"), timeout=20_000)
    expect(checklist_item(page, "statuses")).to_have_class(re.compile(r"\bpass\b"))
