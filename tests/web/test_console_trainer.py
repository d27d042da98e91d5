"""The trainer console: cohorts, rosters, resets, snapshots, the progress matrix, drill-down, exports, certificates;
and who may see which cohort."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from sandbox.accounts.cohorts import assign_pack, create_cohort, get_cohort
from sandbox.accounts.roster import RosterLine
from sandbox.accounts.users import User
from sandbox.store.database import Database
from sandbox.store.layers import resolve_view
from sandbox.store.schema import cohorts, layers, task_attempts, users
from tasks.feedback import record_feedback
from tasks.library import Library
from tasks.model import Pack
from tasks.timing import INDEX_FORMAT
from tests.tasks.reference_writes import write_as_trainee
from tests.web.console_data import (
    VITALS,
    VITALS_SOLUTION,
    csrf_token,
    do_vitals,
    make_user,
    sign_in,
    small_case_baseline,
)
from web.task_engine import task_engine


@dataclass
class Classroom:
    trainer: User
    other_trainer: User
    cohort_id: str
    foreign_cohort_id: str
    ann: User
    ann_sandbox: str
    bob: User


@pytest.fixture
def room(app: FastAPI, db: Database) -> Classroom:
    baseline = small_case_baseline(app)
    tom = make_user(db, "Tom Trainer", "tom@example.org", "trainer")
    tia = make_user(db, "Tia Trainer", "tia@example.org", "trainer")
    roster = [RosterLine("Ann Trainee", "ann@example.org"), RosterLine("Bob Trainee", "bob@example.org")]
    with db.write() as conn:
        mine = create_cohort(conn, "Ward 4", tom.id, baseline_id=baseline, roster=roster, packs=["core-clinical"])
        theirs = create_cohort(conn, "Tia's ward", tia.id, baseline_id=baseline)
    ann, bob = (m.user for m in mine.members)
    return Classroom(tom, tia, mine.id, theirs.id, ann, mine.members[0].sandbox_id, bob)


def post(client: TestClient, path: str, data: dict | None = None, files: dict | None = None, **kw):  # type: ignore[no-untyped-def]
    return client.post(path, data={"csrf_token": csrf_token(client), **(data or {})}, files=files, **kw)


# ---- who may open the console ------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["trainee", "vendor"])
def test_trainees_and_vendors_get_403_everywhere_in_the_trainer_console(
    client: TestClient, db: Database, room: Classroom, role: str
) -> None:
    make_user(db, "Someone", "someone@example.org", role)
    sign_in(client, "someone@example.org")
    cid = room.cohort_id
    for path in (
        "/trainer",
        f"/trainer/cohorts/{cid}",
        f"/trainer/cohorts/{cid}/progress",
        f"/trainer/cohorts/{cid}/progress.csv",
        f"/trainer/cohorts/{cid}/progress.xapi.json",
        f"/trainer/cohorts/{cid}/trainees/{room.ann.id}/tasks/{VITALS}",
        f"/trainer/cohorts/{cid}/trainees/{room.ann.id}/certificates/core-clinical",
    ):
        answer = client.get(path)
        assert answer.status_code == 403, path
        assert "Ann Trainee" not in answer.text
    assert post(client, f"/trainer/cohorts/{cid}/reset").status_code == 403
    assert post(client, "/trainer/cohorts", {"name": "Mine now"}).status_code == 403
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(cohorts)).scalar() == 2


def test_not_signed_in_is_sent_to_sign_in(client: TestClient, room: Classroom) -> None:
    answer = client.get(f"/trainer/cohorts/{room.cohort_id}/progress", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/login?next=")


def test_a_trainer_sees_only_their_cohorts_and_gets_403_on_anothers(client: TestClient, room: Classroom) -> None:
    sign_in(client, "tom@example.org")
    listing = client.get("/trainer").text
    assert "Ward 4" in listing
    assert "Tia&#39;s ward" not in listing
    foreign = room.foreign_cohort_id
    for path in (f"/trainer/cohorts/{foreign}", f"/trainer/cohorts/{foreign}/progress"):
        assert client.get(path).status_code == 403
    assert post(client, f"/trainer/cohorts/{foreign}/reset").status_code == 403
    assert post(client, f"/trainer/cohorts/{foreign}/roster", {"roster_text": "Eve,eve@example.org"}).status_code == 403


def test_an_unknown_cohort_is_404(client: TestClient, room: Classroom) -> None:
    sign_in(client, "tom@example.org")
    answer = client.get("/trainer/cohorts/no-such-cohort")
    assert answer.status_code == 404
    assert "no cohort" in answer.text
    assert client.get("/trainer/cohorts/no-such-cohort/progress").status_code == 404
    assert post(client, "/trainer/cohorts/no-such-cohort/reset").status_code == 404


def test_a_form_post_without_the_csrf_token_is_refused(client: TestClient, db: Database, room: Classroom) -> None:
    sign_in(client, "tom@example.org")
    answer = client.post("/trainer/cohorts", data={"name": "Sneaky", "baseline": "chest-pain", "pack": "core-clinical"})
    assert answer.status_code == 403
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(cohorts)).scalar() == 2


# ---- creating a cohort -----------------------------------------------------------------------------------


def test_a_trainer_creates_a_cohort_from_a_baseline_a_pack_and_a_roster_file(
    client: TestClient, db: Database, room: Classroom
) -> None:
    sign_in(client, "tom@example.org")
    form = client.get("/trainer").text
    assert 'value="chest-pain"' in form and 'value="core-clinical"' in form
    roster = "name,email,role\nCara Nurse,cara@example.org,trainee\nDev Vendor,dev@example.org,vendor\n"
    answer = post(
        client,
        "/trainer/cohorts",
        {"name": "Night shift", "baseline": "chest-pain", "pack": "orders-and-charting", "mode": "private"},
        files={"roster": ("roster.csv", roster.encode(), "text/csv")},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    cohort_id = answer.headers["location"].split("/")[3].split("?")[0]
    with db.read() as conn:
        cohort = get_cohort(conn, cohort_id)
        assert resolve_view(conn, cohort.members[0].sandbox_id).layers[1] == "chest-pain"
    assert cohort.trainer_id == room.trainer.id
    assert cohort.baseline_id == "chest-pain"
    assert cohort.packs == ("orders-and-charting",)
    assert [(m.user.email, m.user.role) for m in cohort.members] == [
        ("cara@example.org", "trainee"),
        ("dev@example.org", "vendor"),
    ]
    page = client.get(answer.headers["location"]).text
    assert "Cohort created." in page and "cara@example.org" in page and "Orders and charting" in page


def test_bad_cohort_input_is_shown_beside_each_field_and_creates_nothing(
    client: TestClient, db: Database, room: Classroom
) -> None:
    sign_in(client, "tom@example.org")
    answer = post(client, "/trainer/cohorts", {"name": " ", "baseline": "nope", "pack": "no-pack", "mode": "odd"})
    assert answer.status_code == 400
    page = answer.text
    assert 'id="name-error"' in page and "needs a name" in page
    assert 'id="baseline-error"' in page and "no such baseline" in page
    assert 'id="pack-error"' in page and "Choose a task pack" in page
    assert 'id="mode-error"' in page
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(cohorts)).scalar() == 2


def test_a_bad_roster_shows_every_bad_line_and_imports_nothing(
    client: TestClient, db: Database, room: Classroom
) -> None:
    sign_in(client, "tom@example.org")
    roster = "Ok Person,ok@example.org\nNo Email,not-an-email\nToo,many,fields,here\nBoss,boss@example.org,admin\n"
    answer = post(
        client,
        "/trainer/cohorts",
        {"name": "Bad roster", "baseline": "chest-pain", "pack": "core-clinical"},
        files={"roster": ("roster.csv", roster.encode(), "text/csv")},
    )
    assert answer.status_code == 400
    assert 'id="roster-lines"' in answer.text
    for number in (2, 3, 4):
        assert f"<li>line {number}: " in answer.text
    assert "line 1:" not in answer.text
    assert 'value="Bad roster"' in answer.text  # what was typed stays in the form
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(cohorts)).scalar() == 2
        assert conn.execute(select(users.c.id).where(users.c.email == "ok@example.org")).first() is None


def test_a_roster_file_that_is_not_utf8_is_refused(client: TestClient, room: Classroom) -> None:
    sign_in(client, "tom@example.org")
    answer = post(
        client,
        f"/trainer/cohorts/{room.cohort_id}/roster",
        files={"roster": ("roster.csv", "Zoë,zoe@example.org\n".encode("utf-16"), "text/csv")},
    )
    assert answer.status_code == 400
    assert "not UTF-8" in answer.text


# ---- rosters, resets, snapshots on an existing cohort -------------------------------------------------------


def test_importing_a_roster_adds_members_with_their_own_sandboxes(
    client: TestClient, db: Database, room: Classroom
) -> None:
    sign_in(client, "tom@example.org")
    answer = post(
        client,
        f"/trainer/cohorts/{room.cohort_id}/roster",
        {"roster_text": "Ann Trainee,ann@example.org\nEve New,eve@example.org\n"},
        follow_redirects=False,
    )
    assert answer.status_code == 303 and answer.headers["location"].endswith("?done=roster")
    with db.read() as conn:
        members = get_cohort(conn, room.cohort_id).members
    assert [m.user.email for m in members] == ["ann@example.org", "bob@example.org", "eve@example.org"]
    assert len({m.sandbox_id for m in members}) == 3


def test_an_empty_roster_upload_is_an_error_beside_the_field(client: TestClient, room: Classroom) -> None:
    sign_in(client, "tom@example.org")
    answer = post(client, f"/trainer/cohorts/{room.cohort_id}/roster", {"roster_text": ""})
    assert answer.status_code == 400
    assert 'id="roster-error"' in answer.text


def test_a_roster_naming_a_trainer_as_trainee_changes_nothing(
    client: TestClient, db: Database, room: Classroom
) -> None:
    sign_in(client, "tom@example.org")
    answer = post(
        client,
        f"/trainer/cohorts/{room.cohort_id}/roster",
        {"roster_text": "Fay New,fay@example.org\nTia,tia@example.org\n"},
    )
    assert answer.status_code == 400
    assert "already a trainer" in answer.text
    with db.read() as conn:
        assert len(get_cohort(conn, room.cohort_id).members) == 2
        assert conn.execute(select(users.c.id).where(users.c.email == "fay@example.org")).first() is None


def test_resetting_one_trainee_puts_back_the_baseline_and_keeps_the_attempt_record(
    client: TestClient, app: FastAPI, db: Database, room: Classroom
) -> None:
    do_vitals(app, room.ann_sandbox, room.ann.id, room.cohort_id)
    assert _observations(client, app, room.ann_sandbox) == 5
    sign_in(client, "tom@example.org")
    answer = post(client, f"/trainer/cohorts/{room.cohort_id}/members/{room.ann.id}/reset", follow_redirects=False)
    assert answer.status_code == 303
    assert "back at its baseline" in client.get(answer.headers["location"]).text
    assert _observations(client, app, room.ann_sandbox) == 0
    progress = client.get(f"/trainer/cohorts/{room.cohort_id}/progress").text
    assert 'data-status="passed"' in progress  # the record of the submitted attempt stays


def test_reset_all_resets_every_sandbox_of_the_cohort(client: TestClient, app: FastAPI, room: Classroom) -> None:
    do_vitals(app, room.ann_sandbox, room.ann.id, room.cohort_id, submit=False)
    sign_in(client, "tom@example.org")
    assert post(client, f"/trainer/cohorts/{room.cohort_id}/reset", follow_redirects=False).status_code == 303
    assert _observations(client, app, room.ann_sandbox) == 0


def test_resetting_someone_not_in_the_cohort_is_404(client: TestClient, room: Classroom) -> None:
    sign_in(client, "tom@example.org")
    assert post(client, f"/trainer/cohorts/{room.cohort_id}/members/{room.trainer.id}/reset").status_code == 404


def test_a_snapshot_of_a_trainees_sandbox_becomes_a_baseline(
    client: TestClient, app: FastAPI, db: Database, room: Classroom
) -> None:
    do_vitals(app, room.ann_sandbox, room.ann.id, room.cohort_id, submit=False)
    sign_in(client, "tom@example.org")
    answer = post(
        client,
        f"/trainer/cohorts/{room.cohort_id}/snapshot",
        {"sandbox": room.ann_sandbox, "snapshot_name": "Vitals charted"},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    with db.read() as conn:
        row = conn.execute(select(layers.c.id, layers.c.kind).where(layers.c.name == "Vitals charted")).one()
    assert row.kind == "baseline"
    assert "Vitals charted" in client.get("/trainer").text  # offered for the next cohort


def test_a_snapshot_of_a_sandbox_outside_the_cohort_is_refused(
    client: TestClient, db: Database, room: Classroom
) -> None:
    with db.read() as conn:
        foreign = get_cohort(conn, room.foreign_cohort_id)
    sign_in(client, "tom@example.org")
    answer = post(
        client, f"/trainer/cohorts/{room.cohort_id}/snapshot", {"sandbox": "default", "snapshot_name": "Stolen"}
    )
    assert answer.status_code == 400
    assert 'id="sandbox-error"' in answer.text
    answer = post(client, f"/trainer/cohorts/{room.cohort_id}/snapshot", {"sandbox": room.ann_sandbox})
    assert answer.status_code == 400 and 'id="snapshot-name-error"' in answer.text
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(layers).where(layers.c.kind == "baseline")).scalar() == 1
    assert foreign.members == []


# ---- progress ---------------------------------------------------------------------------------------------


def test_the_matrix_shows_each_trainees_status_score_and_time_in_words_and_colour(
    client: TestClient, app: FastAPI, room: Classroom
) -> None:
    do_vitals(app, room.ann_sandbox, room.ann.id, room.cohort_id)
    sign_in(client, "tom@example.org")
    page = client.get(f"/trainer/cohorts/{room.cohort_id}/progress").text
    ann_row = page.split(f'data-user="{room.ann.id}"')[1].split("</tr>")[0]
    bob_row = page.split(f'data-user="{room.bob.id}"')[1].split("</tr>")[0]
    vitals_cell = ann_row.split(f'data-task="{VITALS}"')[1].split("</td>")[0]
    assert 'data-status="passed"' in vitals_cell and "Passed" in vitals_cell and "8/8" in vitals_cell
    assert f"/trainer/cohorts/{room.cohort_id}/trainees/{room.ann.id}/tasks/{VITALS}" in vitals_cell
    assert 'class="status-passed"' in ann_row.replace(f' data-task="{VITALS}" data-status="passed"', "")
    assert "Not started" in bob_row and "Passed" not in bob_row
    # every task of the assigned pack is a column, attempted or not
    assert page.count('<th scope="col" title="core-clinical/') == 5
    completion = page.split(f'class="completion" data-task="{VITALS}">')[1].split("</td>")[0]
    assert completion == "50% passed"
    assert "skill:vital-signs" in page.split('id="competencies"')[1]


def test_the_drill_down_shows_checks_and_the_trainees_own_entries(
    client: TestClient, app: FastAPI, room: Classroom
) -> None:
    do_vitals(app, room.ann_sandbox, room.ann.id, room.cohort_id)
    sign_in(client, "tom@example.org")
    page = client.get(f"/trainer/cohorts/{room.cohort_id}/trainees/{room.ann.id}/tasks/{VITALS}")
    assert page.status_code == 200
    checks = page.text.split('id="checks"')[1].split("</table>")[0]
    vitals = task_engine(app).library.find(VITALS)[1]
    assert checks.count('class="check-pass"') == len(vitals.checks) and "<strong>Pass</strong>" in checks
    entries = page.text.split('id="entries"')[1].split("</table>")[0]
    assert entries.count("<td>POST</td>") == 5
    assert "85354-9" in entries  # the blood pressure the trainee charted, as stored
    assert "time on task" in page.text and 'id="time-on-task"' in page.text


def test_the_drill_down_of_a_failed_attempt_shows_the_feedback(
    client: TestClient, app: FastAPI, room: Classroom
) -> None:
    task_engine(app).start(room.ann_sandbox, room.ann.id, VITALS, cohort_id=room.cohort_id)
    task_engine(app).submit(room.ann_sandbox, room.ann.id, VITALS)
    sign_in(client, "tom@example.org")
    page = client.get(f"/trainer/cohorts/{room.cohort_id}/trainees/{room.ann.id}/tasks/{VITALS}").text
    assert 'id="attempt-status">Failed' in page
    assert 'class="check-fail"' in page and "<strong>Fail</strong>" in page
    assert "LOINC 85354-9" in page  # the pack's feedback for the blood pressure check
    assert 'id="no-entries"' in page


def test_the_drill_down_shows_the_trainees_answer_to_the_feedback_question(
    client: TestClient, app: FastAPI, room: Classroom
) -> None:
    attempt = do_vitals(app, room.ann_sandbox, room.ann.id, room.cohort_id)
    sign_in(client, "tom@example.org")
    url = f"/trainer/cohorts/{room.cohort_id}/trainees/{room.ann.id}/tasks/{VITALS}"
    assert 'id="no-feedback"' in client.get(url).text
    with app.state.db.write() as conn:
        record_feedback(conn, room.ann_sandbox, room.ann.id, *VITALS.split("/"), attempt.attempt, 4, "Like <clinic>")
    answer = client.get(url).text.split('id="trainee-feedback">')[1].split("</p>")[0]
    assert "How useful was this task for your work?" in answer
    assert "<strong>4: Very useful</strong>" in answer and "Like &lt;clinic&gt;" in answer


def test_drill_down_bad_input_is_404(client: TestClient, app: FastAPI, room: Classroom) -> None:
    do_vitals(app, room.ann_sandbox, room.ann.id, room.cohort_id)
    sign_in(client, "tom@example.org")
    base = f"/trainer/cohorts/{room.cohort_id}/trainees"
    assert client.get(f"{base}/{room.bob.id}/tasks/{VITALS}").status_code == 404  # not started
    assert client.get(f"{base}/{room.ann.id}/tasks/{VITALS}?attempt=7").status_code == 404
    assert client.get(f"{base}/{room.other_trainer.id}/tasks/{VITALS}").status_code == 404  # not a member
    assert client.get(f"{base}/{room.ann.id}/tasks/{VITALS}?attempt=x").status_code == 400


def test_csv_and_xapi_exports_are_the_reports_of_tasks_reports(
    client: TestClient, app: FastAPI, room: Classroom
) -> None:
    do_vitals(app, room.ann_sandbox, room.ann.id, room.cohort_id)
    sign_in(client, "tom@example.org")
    answer = client.get(f"/trainer/cohorts/{room.cohort_id}/progress.csv")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert len(rows) == 2 * 5  # two trainees by the pack's five tasks
    ann = next(r for r in rows if r["trainee"] == room.ann.id and r["task"] == VITALS.split("/")[1])
    assert ann["status"] == "passed" and ann["score"] == "8"
    statements = json.loads(client.get(f"/trainer/cohorts/{room.cohort_id}/progress.xapi.json").text)
    verbs = sorted(s["verb"]["display"]["en-US"] for s in statements)
    assert verbs == ["attempted", "completed", "passed"]
    assert statements[0]["actor"]["account"] == {"homePage": "http://testserver", "name": room.ann.id}


def _deadline_passed(db: Database, sandbox_id: str) -> None:
    """Move the active attempt's start back so that its 15-minute deadline is now: what was written before was
    in time, and any later look finds the time up."""
    started = (datetime.now(UTC) - timedelta(minutes=15)).strftime(INDEX_FORMAT)
    with db.write() as conn:
        conn.execute(
            update(task_attempts)
            .where(task_attempts.c.sandbox_id == sandbox_id, task_attempts.c.status == "active")
            .values(started_at=started)
        )


def test_timed_out_attempts_show_in_the_matrix_the_drill_down_and_the_exports(
    client: TestClient, app: FastAPI, db: Database, room: Classroom
) -> None:
    engine = task_engine(app)
    engine.start(room.ann_sandbox, room.ann.id, VITALS, cohort_id=room.cohort_id)  # and did nothing
    with db.read() as conn:
        bob_sandbox = next(m.sandbox_id for m in get_cohort(conn, room.cohort_id).members if m.user.id == room.bob.id)
    do_vitals(app, bob_sandbox, room.bob.id, room.cohort_id, submit=False)  # all done, never submitted
    _deadline_passed(db, room.ann_sandbox)
    _deadline_passed(db, bob_sandbox)
    assert sorted(a.passed for a in engine.close_timed_out()) == [False, True]  # what the live worker does

    sign_in(client, "tom@example.org")
    page = client.get(f"/trainer/cohorts/{room.cohort_id}/progress").text
    ann_cell = page.split(f'data-user="{room.ann.id}"')[1].split(f'data-task="{VITALS}"')[1].split("</td>")[0]
    bob_cell = page.split(f'data-user="{room.bob.id}"')[1].split(f'data-task="{VITALS}"')[1].split("</td>")[0]
    assert 'data-status="timed-out"' in ann_cell and '<span class="status">Timed out</span>' in ann_cell
    assert "15m 00s" in ann_cell  # time on task: the limit
    assert 'data-status="passed"' in bob_cell and "Passed (time ran out)" in bob_cell
    assert f'class="status-timed-out" data-task="{VITALS}"' in page

    drill = client.get(f"/trainer/cohorts/{room.cohort_id}/trainees/{room.ann.id}/tasks/{VITALS}").text
    assert 'id="attempt-status">Timed out</strong>' in drill and " · time ran out 20" in drill
    assert 'id="time-on-task">15m 00s' in drill

    rows = list(csv.DictReader(io.StringIO(client.get(f"/trainer/cohorts/{room.cohort_id}/progress.csv").text)))
    vitals = {r["trainee"]: r for r in rows if r["task"] == VITALS.split("/")[1]}
    assert (vitals[room.ann.id]["status"], vitals[room.ann.id]["timed_out"]) == ("timed-out", "true")
    assert (vitals[room.bob.id]["status"], vitals[room.bob.id]["timed_out"]) == ("passed", "true")
    statements = json.loads(client.get(f"/trainer/cohorts/{room.cohort_id}/progress.xapi.json").text)
    verbs = sorted((s["actor"]["account"]["name"] == room.ann.id, s["verb"]["display"]["en-US"]) for s in statements)
    assert verbs == [(False, "attempted"), (False, "passed"), (True, "attempted"), (True, "failed")]


def test_the_certificate_is_printable_once_every_task_of_the_pack_is_passed(
    client: TestClient, app: FastAPI, db: Database, room: Classroom
) -> None:
    sign_in(client, "tom@example.org")
    with db.write() as conn:
        assign_pack(conn, room.cohort_id, "vitals-only")  # a pack the library does not have is skipped
    path = f"/trainer/cohorts/{room.cohort_id}/trainees/{room.ann.id}/certificates/core-clinical"
    page = client.get(path).text
    assert 'id="not-complete"' in page and "0 of 5 tasks passed" in page
    assert 'id="certificate"' not in page
    assert client.get(f"/trainer/cohorts/{room.cohort_id}/trainees/{room.ann.id}/certificates/nope").status_code == 404
    assert client.get("/console/console.css").text.count("@media print") == 1


def test_a_certificate_for_a_completed_pack(client: TestClient, app: FastAPI, db: Database, room: Classroom) -> None:
    # A one-task pack, so that one passed task completes it.
    engine = task_engine(app)
    core = engine.library.packs["core-clinical"]
    vitals = core.task("vitals-current-encounter")
    assert vitals is not None
    small = Pack("vitals-only", "Vital signs", core.threshold, (vitals,))
    engine.library = Library([*engine.library.packs.values(), small])
    with db.write() as conn:
        assign_pack(conn, room.cohort_id, "vitals-only")
    engine.start(room.ann_sandbox, room.ann.id, "vitals-only/vitals-current-encounter", cohort_id=room.cohort_id)
    attempt = engine.latest(room.ann_sandbox, room.ann.id, "vitals-only/vitals-current-encounter")
    assert attempt is not None
    write_as_trainee(db, app.state.fhir, room.ann_sandbox, room.ann.id, attempt.context, VITALS_SOLUTION.reference)
    engine.submit(room.ann_sandbox, room.ann.id, "vitals-only/vitals-current-encounter")
    sign_in(client, "tom@example.org")
    page = client.get(f"/trainer/cohorts/{room.cohort_id}/trainees/{room.ann.id}/certificates/vitals-only").text
    certificate = page.split('id="certificate"')[1]
    assert "Ann Trainee" in certificate and "Vital signs" in certificate and "Ward 4" in certificate
    assert "Passed" in certificate


def test_an_admin_sees_and_manages_any_cohort(client: TestClient, db: Database, room: Classroom) -> None:
    make_user(db, "Ada Admin", "ada@example.org", "admin")
    sign_in(client, "ada@example.org")
    listing = client.get("/trainer").text
    assert "Ward 4" in listing and "Tia&#39;s ward" in listing
    assert client.get(f"/trainer/cohorts/{room.foreign_cohort_id}/progress").status_code == 200


def _observations(client: TestClient, app: FastAPI, sandbox_id: str) -> int:
    """Observations the sandbox holds, counted through the FHIR search engine."""
    with app.state.db.read() as conn:
        view = resolve_view(conn, sandbox_id)
        return len(app.state.fhir.search(conn, view, "Observation", [("_count", "100")]).matches)
