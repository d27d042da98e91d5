"""Every built-in task can be done through the chart's entry forms: each form makes the resources, codes and
links the pack's checks look for, written as the signed-in trainee.  Also the assignment list, the task
panel's actions, the result page and the feedback question, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from sandbox.demo import Demo
from sandbox.hl7v2 import destinations
from sandbox.store.database import Database
from sandbox.store.schema import resource_versions, task_feedback
from tests.sandbox.hl7v2.test_outbound import Destination
from tests.tasks.reference_writes import deliver_outbound
from tests.web.chart.browser_form import Pick, fill

CHEST_PAIN, DIABETES, ASTHMA = "chest-pain-cardiology", "diabetes-uncontrolled", "pediatric-asthma"
NEXT_MONTH = (datetime.now(UTC) + timedelta(days=90)).strftime("%Y-%m-%dT14:00")

# task -> the patient, and the forms a competent trainee fills in (with what they type or pick).
SOLUTIONS: dict[str, tuple[str, list[tuple[str, dict[str, str | Pick | bool]]]]] = {
    "core-clinical/vitals-current-encounter": (
        CHEST_PAIN,
        [("vitals", {"systolic": "152", "diastolic": "94", "heart_rate": "88", "resp_rate": "16", "spo2": "97",
                     "temperature": "36.8"})],
    ),
    "core-clinical/allergy-with-reaction": (
        CHEST_PAIN,
        [("allergy", {"substance": "29046", "reaction": "41291007 Angioedema", "severity": "severe",
                      "criticality": "high"})],
    ),
    "core-clinical/cardiology-referral": (
        CHEST_PAIN,
        [("referral", {"performer": Pick("Cardiology"), "reason": Pick("Chest pain"), "priority": "urgent",
                       "track": True, "notify": True, "message": "Urgent: exertional chest pain."})],
    ),
    "core-clinical/medication-order": (
        CHEST_PAIN,
        [("med-order", {"medication": "243670", "dose": "81", "dose_unit": "mg", "route": "26643006",
                        "frequency": "1", "days": "90", "reason": Pick("Chest pain")})],
    ),
    "core-clinical/cbc-bmp-with-indication": (
        CHEST_PAIN,
        [("lab-order", {"test": "58410-2", "reason": Pick("Chest pain")}),
         ("lab-order", {"test": "51990-0", "reason": Pick("Chest pain")})],
    ),
    "orders-and-charting/stat-troponin": (
        CHEST_PAIN, [("lab-order", {"test": "89579-7", "priority": "stat", "reason": Pick("Chest pain")})]
    ),
    "orders-and-charting/chest-xray": (
        CHEST_PAIN, [("imaging-order", {"test": "36643-5", "reason": Pick("Chest pain")})]
    ),
    "orders-and-charting/immunization-lot-site": (
        ASTHMA,
        [("immunization", {"vaccine": "150", "lot": "FLU2026A", "site": "LA", "route": "IM", "dose": "0.5"})],
    ),
    "orders-and-charting/pain-reassessment": (CHEST_PAIN, [("vitals", {"pain": "4"})]),
    "orders-and-charting/progress-note": (
        DIABETES, [("note", {"title": "Diabetes follow-up", "text": "HbA1c 8.9%. Increase metformin."})]
    ),
    "orders-and-charting/problem-list": (
        CHEST_PAIN, [("problem", {"problem": "194828000", "verification": "provisional"})]
    ),
    "orders-and-charting/discontinue-with-reason": (
        CHEST_PAIN, [("discontinue", {"order": Pick("lisinopril"), "stop_reason": "41291007"})]
    ),
    "registration-and-referrals/register-new-patient": (
        "",
        [("register", {"given": "Dana", "family": "Whitfield", "gender": "female", "birth_date": "1990-04-12",
                       "phone": "555-0142", "mrn": "MRN-900142", "payor": Pick("Medicaid"),
                       "subscriber_id": "MCD-55501"})],
    ),
    "registration-and-referrals/follow-up-appointment": (
        DIABETES,
        [("appointment", {"start": NEXT_MONTH, "minutes": "30", "clinician": Pick("Endocrinology"),
                          "reason": Pick("diabetes"), "service": "Diabetes follow-up"})],
    ),
    "registration-and-referrals/med-reconciliation": (
        CHEST_PAIN,
        [("medrec", {"med1": "314076", "med2": "197361", "med3": "617310", "med4": "197806",
                     "status4": "stopped"})],
    ),
    "registration-and-referrals/pt-referral": (
        DIABETES,
        [("referral", {"service": "91251008", "performer": Pick("Family practice"), "reason": Pick("diabetes"),
                       "priority": "routine"})],
    ),
    "registration-and-referrals/referral-loop-closure": (
        DIABETES,
        [("close-referral", {"tracking_task": Pick("Patient referral"), "note": Pick("Endocrinology consult"),
                             "complete_referral": True, "comment": "Consult note reviewed."})],
    ),
    "registration-and-referrals/renal-nsaid-review": (
        DIABETES,
        [("discontinue", {"order": Pick("Ibuprofen"), "stop_reason": "182840001",
                          "reason_text": "NSAID stopped: CKD stage 3"}),
         ("med-order", {"medication": "313782", "dose": "2", "dose_unit": "{tbl}", "route": "26643006",
                        "frequency": "4"})],
    ),
    "registration-and-referrals/cardiology-consult-appointment": (
        CHEST_PAIN,
        [("appointment", {"start": NEXT_MONTH, "minutes": "45", "clinician": Pick("Cardiology"),
                          "reason": Pick("Chest pain"), "service": "New patient cardiology consult"})],
    ),
    "orders-and-charting/hba1c-lab-interface": (
        DIABETES, [("lab-order", {"test": "4548-4", "reason": Pick("diabetes")})]
    ),
    "orders-and-charting/asthma-reassessment": (
        ASTHMA, [("vitals", {"heart_rate": "124", "resp_rate": "22", "spo2": "97"})]
    ),
}  # fmt: skip


@pytest.fixture
def lab() -> Iterator[Destination]:
    """The lab's interface for the task whose checks read the HL7 v2 log: a real MLLP peer answering AA."""
    peer = Destination()
    yield peer
    peer.close()


def test_every_builtin_task_passes_through_the_forms(
    client: TestClient, demo: Demo, ada: str, ada_sandbox: str, db: Database, app: FastAPI, lab: Destination
) -> None:
    with db.write() as conn:  # as the trainer sets it up for the lab-interface task
        destinations.put(conn, ada_sandbox, "lab", {"host": "127.0.0.1", "port": lab.port})
    assignments = client.get("/assignments")
    assert assignments.status_code == 200
    listed = {task for task in SOLUTIONS if f'data-task="{task}"' in assignments.text}
    assert listed == set(SOLUTIONS), "every built-in task is assigned, and every one has a solution here"

    for task, (patient, steps) in SOLUTIONS.items():
        started = client.post(
            "/assignments/start",
            data={"csrf_token": ada, "sandbox": ada_sandbox, "task": task},
            follow_redirects=False,
        )
        assert started.status_code == 303
        assert started.headers["location"].startswith(f"/chart/{ada_sandbox}/patients/")
        for form, fields in steps:
            url = (
                f"/chart/{ada_sandbox}/register"
                if form == "register"
                else f"/chart/{ada_sandbox}/patients/{patient}/forms/{form}"
            )
            saved = fill(client, url, task, **fields)
            assert saved.status_code == 303, f"{task}: {form} was not saved:\n{saved.text}"
            shown = client.get(saved.headers["location"])  # post/redirect/get: the section shows the entry
            assert shown.status_code == 200
            assert 'id="saved"' in shown.text
        deliver_outbound(db, app.state.fhir)  # the outbox worker's part: orders to the lab
        submitted = client.post(
            f"/chart/{ada_sandbox}/task/submit", data={"csrf_token": ada, "task": task}, follow_redirects=False
        )
        assert submitted.status_code == 303
        result = client.get(submitted.headers["location"])
        assert result.status_code == 200
        assert ">Passed" in result.text.replace("\n", ""), f"{task} did not pass:\n{result.text}"

    listing = client.get("/assignments").text
    assert listing.count('<td class="status">Passed</td>') == len(SOLUTIONS)


def test_entries_are_attributed_to_the_trainee_through_the_web_ui(
    client: TestClient, demo: Demo, ada: str, ada_sandbox: str, app
) -> None:  # type: ignore[no-untyped-def]
    saved = fill(client, f"/chart/{ada_sandbox}/patients/{CHEST_PAIN}/forms/problem", problem="194828000")
    assert saved.status_code == 303
    assert saved.headers["location"] == f"/chart/{ada_sandbox}/patients/{CHEST_PAIN}/problems?saved=Add+a+problem"
    problems = client.get(saved.headers["location"]).text
    assert "Angina" in problems
    with app.state.db.read() as conn:
        rows = conn.execute(
            select(resource_versions.c.resource_type, resource_versions.c.actor, resource_versions.c.route).where(
                resource_versions.c.layer_id == ada_sandbox
            )
        ).all()
    ada_id = next(m.user.id for m in _members(app, demo) if m.user.email == "ada@demo.invalid")
    assert [tuple(r) for r in rows] == [("Condition", f"user:{ada_id}", "web-ui")]


def _members(app, demo: Demo):  # type: ignore[no-untyped-def]
    from sandbox.accounts.cohorts import get_cohort

    with app.state.db.read() as conn:
        return get_cohort(conn, demo.cohort_id).members


def test_the_task_panel_checks_hints_and_takes_feedback(
    client: TestClient, demo: Demo, ada: str, ada_sandbox: str, app
) -> None:  # type: ignore[no-untyped-def]
    task = "core-clinical/vitals-current-encounter"
    client.post("/assignments/start", data={"csrf_token": ada, "sandbox": ada_sandbox, "task": task})
    chart = f"/chart/{ada_sandbox}/patients/{CHEST_PAIN}/vitals"
    shown = client.post(
        f"/chart/{ada_sandbox}/task/hint", data={"csrf_token": ada, "task": task, "back": chart}, follow_redirects=False
    )
    assert shown.status_code == 303
    assert shown.headers["location"] == chart + "?task=core-clinical%2Fvitals-current-encounter"
    page = client.get(shown.headers["location"]).text
    assert "Blood pressure is one Observation (LOINC 85354-9)" in page
    checked = client.post(f"/chart/{ada_sandbox}/task/check", data={"csrf_token": ada, "task": task, "back": chart})
    assert "Chart blood pressure as one Observation coded LOINC 85354-9" in checked.text  # failed check's feedback
    panel = client.get(f"/chart/{ada_sandbox}/task/panel", params={"task": task}).text
    # Nothing charted yet: the five vital signs fail; "no vital sign outside the encounter" holds.
    assert panel.count('class="check fail') == 5
    assert panel.count('class="check pass') == 1

    client.post(f"/chart/{ada_sandbox}/task/submit", data={"csrf_token": ada, "task": task})
    result = f"/chart/{ada_sandbox}/task/result?task=core-clinical%2Fvitals-current-encounter"
    assert "Not passed" in client.get(result).text

    bad = client.post(f"/chart/{ada_sandbox}/feedback", data={"csrf_token": ada, "task": task, "rating": "9"})
    assert bad.status_code == 422
    assert 'id="rating-error">Choose one of the five answers.' in bad.text
    good = client.post(
        f"/chart/{ada_sandbox}/feedback",
        data={"csrf_token": ada, "task": task, "rating": "2", "comment": "Too long"},
        follow_redirects=False,
    )
    assert good.status_code == 303
    assert 'id="feedback-thanks"' in client.get(good.headers["location"]).text
    with app.state.db.read() as conn:
        stored = conn.execute(select(task_feedback.c.rating, task_feedback.c.comment, task_feedback.c.attempt)).all()
    assert [tuple(r) for r in stored] == [(2, "Too long", 1)]
