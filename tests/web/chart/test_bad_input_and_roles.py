"""Bad entries are refused with an error beside the field and change nothing; each person reaches only the
charts their role and cohorts allow (others get the 403 page)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from sandbox.accounts.users import create_user
from sandbox.demo import Demo
from sandbox.store.schema import resource_versions
from tests.web.chart.browser_form import Pick, fill
from tests.web.chart.conftest import sign_in

PATIENT = "chest-pain-cardiology"
YESTERDAY = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
# Two days ahead: still in the future when the suite, started before midnight (UTC), reaches this test after it.
IN_TWO_DAYS = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()

# (form, what is typed, the field that gets the error, words of the error)
BAD_ENTRIES: list[tuple[str, dict[str, str | Pick | bool], str, str]] = [
    ("vitals", {}, "systolic", "Enter at least one measurement."),
    ("vitals", {"heart_rate": "fast"}, "heart_rate", "Heart rate (/min) must be a whole number."),
    ("vitals", {"spo2": "140"}, "spo2", "must be between 50 and 100"),
    ("vitals", {"systolic": "120"}, "diastolic", "Blood pressure needs both numbers."),
    ("vitals", {"systolic": "80", "diastolic": "90"}, "systolic", "Systolic must be higher than diastolic."),
    ("vitals", {"temperature": "98.6", "temp_unit": "Cel"}, "temperature", "between 25 and 45 °C"),
    ("vitals", {"temperature": "37", "temp_unit": "kelvin"}, "temp_unit", "Choose one of the listed"),
    ("allergy", {"substance": "99999999"}, "substance", "pick a code from the list"),
    ("allergy", {"substance": "29046", "severity": "severe"}, "reaction", "pick the reaction too"),
    ("problem", {"problem": "194828000", "onset": IN_TWO_DAYS}, "onset", "cannot be in the future"),
    ("problem", {"problem": "194828000", "onset": "31/12/2025"}, "onset", "must be a date"),
    ("note", {"text": ""}, "text", "Note is required."),
    ("medrec", {"status2": "stopped"}, "med2", "Pick the medication this status is for."),
    ("immunization", {"vaccine": "150", "occurrence": IN_TWO_DAYS}, "occurrence", "cannot be in the future"),
    ("lab-order", {"test": "36643-5"}, "test", "is not in the list"),  # an imaging code in the lab picker
    ("lab-order", {"test": "58410-2", "reason": "Condition/not-this-patients"}, "reason", "Choose one of the listed"),
    ("med-order", {"medication": "243670", "dose": "-5"}, "dose", "must be between"),
    ("discontinue", {"order": Pick("lisinopril")}, "stop_reason", "Say why the medication is stopped"),
    ("referral", {"priority": "urgent"}, "performer", "Refer to is required."),
    ("referral", {"performer": Pick("Cardiology"), "notify": True}, "message", "Write the message"),
    ("appointment", {"start": YESTERDAY, "clinician": Pick("Cardiology")}, "start", "in the future"),
]


def written(app) -> int:  # type: ignore[no-untyped-def]
    with app.state.db.read() as conn:
        return conn.execute(select(func.count()).select_from(resource_versions)).scalar_one()


def test_bad_entries_show_errors_beside_the_field_and_change_nothing(
    client: TestClient, demo: Demo, ada: str, ada_sandbox: str, app
) -> None:  # type: ignore[no-untyped-def]
    before = written(app)
    for form, fields, field, message in BAD_ENTRIES:
        response = fill(client, f"/chart/{ada_sandbox}/patients/{PATIENT}/forms/{form}", **fields)
        assert response.status_code == 422, (form, fields, response.text[:500])
        error = re.search(rf'<p class="error" id="f-{field}-error">([^<]*)</p>', response.text)
        assert error is not None, (form, fields, field, response.text)
        assert message in error.group(1), (form, error.group(1))
        # The field says it is invalid and points at its error, for screen readers.
        assert re.search(rf'id="f-{field}"[^>]*aria-invalid="true"', response.text), (form, field)
        assert 'role="alert"' in response.text
    assert written(app) == before


def test_closing_a_referral_loop_needs_an_open_tracking_task_and_the_patients_note(
    client: TestClient, demo: Demo, ada: str, ada_sandbox: str, app
) -> None:  # type: ignore[no-untyped-def]
    before = written(app)
    diabetes = f"/chart/{ada_sandbox}/patients/diabetes-uncontrolled/forms/close-referral"
    bad = [
        (diabetes, {"note": Pick("Endocrinology consult")}, "tracking_task", "Referral being tracked is required."),
        (diabetes, {"tracking_task": Pick("Patient referral"), "note": "DocumentReference/another-patients"}, "note",
         "Choose one of the listed"),
        # Mr Okafor has no referral being tracked: another patient's task is not on his list.
        (f"/chart/{ada_sandbox}/patients/{PATIENT}/forms/close-referral", {"tracking_task": "Task/x"}, "tracking_task",
         "Choose one of the listed"),
    ]  # fmt: skip
    for url, fields, field, message in bad:
        response = fill(client, url, **fields)
        assert response.status_code == 422, (fields, response.text[:500])
        error = re.search(rf'<p class="error" id="f-{field}-error">([^<]*)</p>', response.text)
        assert error is not None and message in error.group(1), (fields, response.text)
    assert written(app) == before
    saved = fill(client, diabetes, tracking_task=Pick("Patient referral"), note=Pick("Endocrinology consult"))
    assert saved.status_code == 303
    # The loop is closed: the task no longer offers itself, so closing it twice is refused beside the field.
    again = fill(client, diabetes, tracking_task="Task/anything", note=Pick("Endocrinology consult"))
    assert again.status_code == 422 and 'id="f-tracking_task-error"' in again.text


def test_registration_refuses_a_future_birth_date_and_a_taken_mrn(
    client: TestClient, demo: Demo, ada: str, ada_sandbox: str, app
) -> None:  # type: ignore[no-untyped-def]
    url = f"/chart/{ada_sandbox}/register"
    person = {"given": "Dana", "family": "Whitfield", "gender": "female", "birth_date": IN_TWO_DAYS, "mrn": "CASE-0001"}
    response = fill(client, url, **person)
    assert response.status_code == 422
    assert 'id="f-birth_date-error">The birth date cannot be in the future.' in response.text
    assert 'id="f-mrn-error">MRN CASE-0001 already belongs to a patient.' in response.text
    assert 'value="Whitfield"' in response.text  # what was typed is kept
    before = written(app)
    assert fill(client, url, **{**person, "birth_date": "1990-04-12", "mrn": "bad mrn!"}).status_code == 422
    assert written(app) == before
    saved = fill(client, url, **{**person, "birth_date": "1990-04-12", "mrn": "MRN-1"})
    assert saved.status_code == 303
    chart = client.get(saved.headers["location"]).text
    assert "Dana Whitfield" in chart
    assert '<dd id="mrn">MRN-1</dd>' in chart


def test_form_posts_need_the_sessions_csrf_token(client: TestClient, demo: Demo, ada: str, ada_sandbox: str) -> None:
    response = client.post(
        f"/chart/{ada_sandbox}/patients/{PATIENT}/forms/vitals", data={"csrf_token": "forged", "heart_rate": "80"}
    )
    assert response.status_code == 403
    assert "Form expired" in response.text


def test_a_trainee_reaches_only_their_own_sandbox(client: TestClient, demo: Demo, ada: str, ada_sandbox: str) -> None:
    own = client.get(f"/chart/{ada_sandbox}/patients/{PATIENT}")
    assert own.status_code == 200
    assert "Walter James Okafor" in own.text
    for other in (demo.sandboxes["ben@demo.invalid"], "default", "no-such-sandbox"):
        for path in (f"/chart/{other}/patients", f"/chart/{other}/patients/{PATIENT}/vitals"):
            response = client.get(path)
            assert response.status_code == 403, path
            assert "Not your sandbox" in response.text
        posted = fill(client, f"/chart/{ada_sandbox}/patients/{PATIENT}/forms/vitals", heart_rate="80")
        assert posted.status_code == 303
        forged = client.post(
            f"/chart/{other}/patients/{PATIENT}/forms/vitals", data={"csrf_token": ada, "heart_rate": "80"}
        )
        assert forged.status_code == 403
        start = client.post(
            "/assignments/start",
            data={"csrf_token": ada, "sandbox": other, "task": "core-clinical/vitals-current-encounter"},
        )
        assert start.status_code == 403


@pytest.mark.parametrize("path", ["/assignments", "/chart/{sandbox}/task/result?task=core-clinical/problem-list"])
def test_trainee_pages_refuse_other_roles(client: TestClient, demo: Demo, app, path: str) -> None:  # type: ignore[no-untyped-def]
    sign_in(client, demo, "trainer@demo.invalid")
    response = client.get(path.format(sandbox=demo.sandboxes["ada@demo.invalid"]))
    assert response.status_code == 403
    assert "This page is for a trainee, not a trainer." in response.text


def test_a_trainer_reads_the_charts_of_their_cohort_but_a_vendor_without_a_sandbox_reads_none(
    client: TestClient, demo: Demo, app
) -> None:  # type: ignore[no-untyped-def]
    sandbox = demo.sandboxes["ada@demo.invalid"]
    sign_in(client, demo, "trainer@demo.invalid")
    assert client.get(f"/chart/{sandbox}/patients/{PATIENT}/results").status_code == 200
    client.cookies.clear()
    with app.state.db.write() as conn:
        create_user(conn, "Vic Vendor", "vic@example.org", "vendor", password="vendor password 1")
    client.get("/login")
    client.post(
        "/login",
        data={
            "email": "vic@example.org",
            "password": "vendor password 1",
            "csrf_token": client.cookies["ehr_sandbox_csrf"],
        },
    )
    for path in (f"/chart/{sandbox}/patients", "/chart/default/patients"):
        response = client.get(path)
        assert response.status_code == 403
        assert "Not your sandbox" in response.text


def test_signed_out_people_are_sent_to_sign_in(client: TestClient, demo: Demo) -> None:
    response = client.get("/assignments", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fassignments"


def test_unknown_patients_sections_and_forms_are_404(
    client: TestClient, demo: Demo, ada: str, ada_sandbox: str
) -> None:
    for path in (
        f"/chart/{ada_sandbox}/patients/nobody",
        f"/chart/{ada_sandbox}/patients/{PATIENT}/x-rays",
        f"/chart/{ada_sandbox}/patients/{PATIENT}/forms/tattoo",
        "/static/secrets.txt",
    ):
        assert client.get(path).status_code == 404, path


def test_the_sites_own_stylesheet_and_script_are_served(client: TestClient) -> None:
    css = client.get("/static/chart.css")
    assert css.status_code == 200
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    assert ".task-panel" in css.text
    js = client.get("/static/chart.js")
    assert js.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "task-panel" in js.text
