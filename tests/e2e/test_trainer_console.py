"""The trainer and vendor consoles in a real browser.

A trainer creates a cohort through the form, a trainee's vitals work (FHIR writes in their sandbox over HTTP,
graded by the task engine) shows in the progress matrix, the trainer drills into it and resets the trainee's
sandbox, and the sandbox is back at its baseline; a trainee opening the trainer console gets 403; a vendor sees
their FHIR calls in the request log.  Screenshots of each page are saved as artifacts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.accounts.cohorts import create_cohort, get_cohort, list_cohorts
from sandbox.accounts.roster import RosterLine
from sandbox.accounts.tokens import issue_token
from sandbox.accounts.users import create_user, find_by_email, set_password
from sandbox.store.layers import resolve_view
from sandbox.store.sandboxes import get_layer
from tasks.cases import load_case_baseline
from tests.e2e.conftest import LiveServer
from tests.web.console_data import VITALS, VITALS_SOLUTION, small_case_baseline
from web.task_engine import task_engine

PASSWORD = "correct horse battery"


def sign_in(page: Any, server: LiveServer, email: str) -> None:
    page.goto(f"{server.url}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{server.url}/")


def shoot(page: Any, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def chart_vitals_over_fhir(server: LiveServer, sandbox_id: str, token: str, context: dict[str, str]) -> list[str]:
    """The reference vitals, POSTed to the trainee's sandbox with the trainee's API token, as their app would."""
    created = []
    with httpx.Client(base_url=f"{server.url}/sandboxes/{sandbox_id}/fhir") as fhir:
        for write in VITALS_SOLUTION.reference:
            text = json.dumps(write["resource"])
            for name in ("patient", "encounter"):
                text = text.replace("{" + name + "}", context[name])
            answer = fhir.post(
                "/Observation",
                content=text,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"},
            )
            assert answer.status_code == 201, answer.text
            created.append(answer.json()["id"])
    return created


@pytest.fixture
def trainer(fresh_server: LiveServer) -> str:
    with fresh_server.db.write() as conn:
        return create_user(conn, "Tess Trainer", "tess@example.org", "trainer", password=PASSWORD).id


def test_a_trainer_creates_a_cohort_follows_progress_and_resets_a_sandbox(
    fresh_server: LiveServer, trainer: str, page: Any, artifacts: Path, tmp_path: Path
) -> None:
    baseline = load_case_baseline(fresh_server.db, fresh_server.app.state.fhir, "Training cases", baseline_id="cases")
    sign_in(page, fresh_server, "tess@example.org")

    # Create a cohort from the baseline and a pack, with a roster file.
    page.goto(f"{fresh_server.url}/trainer")
    page.get_by_label("Name", exact=True).fill("Ward 7 nurses")
    page.get_by_label("Baseline").select_option(baseline)
    page.get_by_label("Task pack").select_option("core-clinical")
    roster = tmp_path / "roster.csv"
    roster.write_text("name,email,role\nNia Nurse,nia@example.org,trainee\nOlu Nurse,olu@example.org,trainee\n")
    page.get_by_label("Roster CSV (optional)").set_input_files(str(roster))
    shoot(page, artifacts, "trainer-create-cohort")
    page.get_by_role("button", name="Create cohort").click()
    page.get_by_text("Cohort created.").wait_for()
    assert page.locator("#members").get_by_text("nia@example.org").is_visible()
    shoot(page, artifacts, "trainer-cohort")

    with fresh_server.db.read() as conn:
        cohort = list_cohorts(conn, trainer)[0]
        nia, olu = sorted(cohort.members, key=lambda m: m.user.email)
    assert cohort.packs == ("core-clinical",)

    # Nia charts the vitals through the FHIR API in her sandbox; the task engine grades them.
    with fresh_server.db.write() as conn:
        set_password(conn, nia.user.id, PASSWORD)
        _, token = issue_token(conn, nia.user.id, "chart app")
    engine = task_engine(fresh_server.app)
    attempt = engine.start(nia.sandbox_id, nia.user.id, VITALS, cohort_id=cohort.id)
    observations = chart_vitals_over_fhir(fresh_server, nia.sandbox_id, token, attempt.context)
    assert engine.submit(nia.sandbox_id, nia.user.id, VITALS).passed

    # The matrix shows it, in words as well as colour.
    page.get_by_role("link", name="Progress").first.click()
    cell = page.locator(f'tr[data-user="{nia.user.id}"] td[data-task="{VITALS}"]')
    assert cell.get_attribute("data-status") == "passed"
    assert "Passed" in cell.inner_text() and "8/8" in cell.inner_text()
    olu_cell = page.locator(f'tr[data-user="{olu.user.id}"] td[data-task="{VITALS}"]')
    assert "Not started" in olu_cell.inner_text()
    colour = cell.evaluate("td => getComputedStyle(td).backgroundColor")
    assert colour != olu_cell.evaluate("td => getComputedStyle(td).backgroundColor")
    assert page.locator(f'td.completion[data-task="{VITALS}"]').inner_text() == "50% passed"
    shoot(page, artifacts, "trainer-progress-matrix")

    # Drill down into the attempt: its checks and Nia's own entries.
    cell.get_by_role("link").click()
    assert page.locator("#attempt-status").inner_text() == "Passed"
    assert page.locator("#checks tr.check-pass").count() == len(engine.library.find(VITALS)[1].checks)
    assert page.locator("#entries tbody tr").count() == len(observations)
    shoot(page, artifacts, "trainer-attempt")

    # Reset Nia's sandbox from the cohort page.
    page.goto(f"{fresh_server.url}/trainer/cohorts/{cohort.id}")
    page.get_by_role("button", name="Reset the sandbox of Nia Nurse").click()
    page.get_by_text("The trainee's sandbox is back at its baseline.").wait_for()
    shoot(page, artifacts, "trainer-after-reset")

    # Back at the baseline: her observations are gone from the FHIR API, the baseline's patient is still there.
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=f"{fresh_server.url}/sandboxes/{nia.sandbox_id}/fhir", headers=headers) as fhir:
        for rid in observations:
            assert fhir.get(f"/Observation/{rid}").status_code == 404
        assert fhir.get(f"/Patient/{attempt.context['patient'].split('/')[1]}").status_code == 200
    with fresh_server.db.read() as conn:
        assert get_layer(conn, nia.sandbox_id, "sandbox", sizes=True).own_resources == 0
        assert resolve_view(conn, nia.sandbox_id).layers == (nia.sandbox_id, baseline)
    # The record of the attempt stays in the matrix.
    page.goto(f"{fresh_server.url}/trainer/cohorts/{cohort.id}/progress")
    assert page.locator(f'tr[data-user="{nia.user.id}"] td[data-task="{VITALS}"]').get_attribute("data-status") == (
        "passed"
    )


def test_a_trainee_opening_the_trainer_console_gets_403(
    fresh_server: LiveServer, trainer: str, page: Any, artifacts: Path
) -> None:
    baseline = small_case_baseline(fresh_server.app)
    with fresh_server.db.write() as conn:
        cohort = create_cohort(conn, "Ward 9", trainer, baseline_id=baseline, roster=[RosterLine("Pat", "pat@x.org")])
        pat = find_by_email(conn, "pat@x.org")
        assert pat is not None
        set_password(conn, pat.id, PASSWORD)
    sign_in(page, fresh_server, "pat@x.org")
    for path in ("/trainer", f"/trainer/cohorts/{cohort.id}/progress"):
        answer = page.goto(f"{fresh_server.url}{path}")
        assert answer is not None and answer.status == 403
        assert page.get_by_role("heading", name="Not allowed").is_visible()
        assert "Ward 9" not in page.content()
    shoot(page, artifacts, "trainee-trainer-console-403")


def test_a_vendor_sees_their_fhir_calls_and_resets_their_sandbox(
    fresh_server: LiveServer, trainer: str, page: Any, artifacts: Path
) -> None:
    baseline = small_case_baseline(fresh_server.app)
    with fresh_server.db.write() as conn:
        vendor = create_user(conn, "Vera Vendor", "vera@acme.example", "vendor", password=PASSWORD)
        cohort = create_cohort(
            conn,
            "Integrators",
            trainer,
            baseline_id=baseline,
            roster=[RosterLine("Vera", "vera@acme.example", "vendor")],
        )
        sandbox_id = get_cohort(conn, cohort.id).members[0].sandbox_id
        _, token = issue_token(conn, vendor.id, "app")
    base = f"{fresh_server.url}/sandboxes/{sandbox_id}/fhir"
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as fhir:
        assert fhir.get("/Patient?name=Okafor").status_code == 200
        assert fhir.put("/Patient/chest-pain-cardiology", json={"resourceType": "Patient"}).status_code == 400
    sign_in(page, fresh_server, "vera@acme.example")
    page.goto(f"{fresh_server.url}/vendor")
    assert page.locator(".fhir-base").inner_text() == base
    rows = page.locator(".request-log tbody tr")
    assert rows.count() == 2
    assert (
        rows.nth(0).locator("td").nth(1).inner_text() == "PUT"
        and rows.nth(0).locator("td").nth(3).inner_text() == "400"
    )
    assert "/Patient?name=Okafor" in rows.nth(1).inner_text()
    shoot(page, artifacts, "vendor-home")
    page.get_by_role("button", name="Reset Integrators: Vera Vendor").click()
    page.get_by_text("The sandbox is back at its baseline.").wait_for()
    assert page.locator(".empty-log").is_visible()
