"""Cohort reports: the matrix, completion per task and competency, CSV, and xAPI 1.0.3 statements."""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from datetime import timedelta
from typing import Any

import pytest

from sandbox.accounts.cohorts import create_cohort
from sandbox.accounts.roster import RosterLine
from sandbox.accounts.users import create_user
from sandbox.cli import main
from sandbox.fhir.interactions import Interactions
from sandbox.store.database import Database
from tasks.engine import TaskEngine
from tasks.reports import cohort_report, iso_duration, to_csv, xapi_statements
from tasks.timing import deadline
from tests.tasks.conftest import Clock
from tests.tasks.reference_writes import load_solutions, write_as_trainee

ALLERGY = "core-clinical/allergy-with-reaction"
SOLUTION = next(s for s in load_solutions() if s.task == ALLERGY)
TROPONIN = "orders-and-charting/stat-troponin"  # time_limit: 10
TROPONIN_SOLUTION = next(s for s in load_solutions() if s.task == TROPONIN)

# xAPI 1.0.3 (xAPI-Data.md): the rules an LRS enforces on the parts we send.
_DURATION = re.compile(r"^P(?:\d+Y)?(?:\d+M)?(?:\d+D)?(?:T(?:\d+H)?(?:\d+M)?(?:\d+(?:\.\d+)?S)?)?$")
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
_IRI = re.compile(r"^[a-z][a-z0-9+.-]*:\S+$")


def assert_xapi_statement(s: dict[str, Any]) -> None:
    assert set(s) <= {"id", "actor", "verb", "object", "result", "context", "timestamp", "version", "attachments"}
    assert uuid.UUID(s["id"]).version == 5
    actor = s["actor"]
    ifis = [k for k in ("mbox", "mbox_sha1sum", "openid", "account") if k in actor]
    assert actor["objectType"] == "Agent" and len(ifis) == 1  # exactly one inverse functional identifier
    assert _IRI.match(actor["account"]["homePage"]) and actor["account"]["name"]
    assert _IRI.match(s["verb"]["id"]) and all(isinstance(v, str) for v in s["verb"]["display"].values())
    assert s["object"]["objectType"] == "Activity" and _IRI.match(s["object"]["id"])
    assert _IRI.match(s["object"]["definition"]["type"])
    assert _TIMESTAMP.match(s["timestamp"])
    context = s["context"]
    uuid.UUID(context["registration"])
    for group in context["contextActivities"].values():
        assert isinstance(group, list) and all(_IRI.match(a["id"]) for a in group)
    if "result" in s:
        result = s["result"]
        score = result["score"]
        assert -1 <= score["scaled"] <= 1 and score["min"] <= score["raw"] <= score["max"]
        assert isinstance(result["success"], bool) and isinstance(result["completion"], bool)
        assert _DURATION.match(result["duration"])


@pytest.fixture
def cohort(db: Database, case_baseline: str) -> dict[str, Any]:
    with db.write() as conn:
        create_user(conn, "Tess Trainer", "tess@example.org", "trainer")
        roster = [
            RosterLine("Ana Alves", "ana@example.org", "trainee"),
            RosterLine("Ben Bell", "ben@example.org", "trainee"),
        ]
        made = create_cohort(conn, "Nurses 2026", "tess@example.org", baseline_id=case_baseline, roster=roster)
    return {"id": made.id, "members": {m.user.name.split()[0].lower(): (m.user.id, m.sandbox_id) for m in made.members}}


def test_matrix_completion_csv_and_xapi(
    db: Database, fhir: Interactions, engine: TaskEngine, cohort: dict[str, Any]
) -> None:
    (ana, ana_sandbox), (ben, ben_sandbox) = cohort["members"]["ana"], cohort["members"]["ben"]
    attempt = engine.start(ana_sandbox, ana, ALLERGY, cohort_id=cohort["id"])
    write_as_trainee(db, fhir, ana_sandbox, ana, attempt.context, SOLUTION.reference)
    engine.submit(ana_sandbox, ana, ALLERGY)
    engine.start(ben_sandbox, ben, ALLERGY)
    assert not engine.submit(ben_sandbox, ben, ALLERGY).passed  # submitted without charting anything
    engine.retry(ben_sandbox, ben, ALLERGY)

    with db.read() as conn:
        report = cohort_report(conn, engine, cohort["id"], packs=["core-clinical"])
    pack, task = engine.library.find(ALLERGY)
    assert report.cell(ana, pack.id, task).status == "passed"
    ben_cell = report.cell(ben, pack.id, task)
    assert (ben_cell.status, ben_cell.attempts) == ("in-progress", 2)
    assert report.completion_by_task()[ALLERGY] == 0.5
    assert report.completion_by_task()["core-clinical/cbc-bmp-with-indication"] == 0.0
    by_competency = report.completion_by_competency()
    assert by_competency["skill:allergy-documentation"] == 0.5
    assert by_competency["skill:lab-ordering"] == 0.0

    rows = list(csv.DictReader(io.StringIO(to_csv(report))))
    assert len(rows) == 2 * len(pack.tasks)
    ana_row = next(r for r in rows if r["trainee"] == ana and r["task"] == task.id)
    assert (ana_row["status"], ana_row["score"], ana_row["max_score"], ana_row["scaled"]) == ("passed", "6", "6", "1")

    statements = xapi_statements(report, "http://ehr.example.org")
    for statement in statements:
        assert_xapi_statement(statement)
    verbs = sorted((s["actor"]["account"]["name"] == ana, s["verb"]["display"]["en-US"]) for s in statements)
    assert verbs == [
        (False, "attempted"),
        (False, "attempted"),
        (False, "completed"),
        (False, "failed"),
        (True, "attempted"),
        (True, "completed"),
        (True, "passed"),
    ]
    passed = next(s for s in statements if s["verb"]["display"]["en-US"] == "passed")
    assert passed["result"]["score"] == {"scaled": 1.0, "raw": 6.0, "min": 0, "max": 6.0}
    assert (
        passed["context"]["contextActivities"]["grouping"][0]["id"] == f"http://ehr.example.org/cohorts/{cohort['id']}"
    )
    assert xapi_statements(report, "http://ehr.example.org") == statements  # stable ids: re-export is idempotent


def test_timed_out_attempts_in_the_matrix_csv_and_xapi(
    db: Database, fhir: Interactions, engine: TaskEngine, clock: Clock, cohort: dict[str, Any]
) -> None:
    (ana, ana_sandbox), (ben, ben_sandbox) = cohort["members"]["ana"], cohort["members"]["ben"]
    clock.offset = -timedelta(minutes=9)  # both start nine minutes ago: one minute left of ten
    engine.start(ana_sandbox, ana, TROPONIN, cohort_id=cohort["id"])
    attempt = engine.start(ben_sandbox, ben, TROPONIN, cohort_id=cohort["id"])
    clock.offset = timedelta()
    write_as_trainee(db, fhir, ben_sandbox, ben, attempt.context, TROPONIN_SOLUTION.reference)  # in time
    clock.offset = timedelta(minutes=2)  # ana did nothing; ben did it all but never submitted
    assert {a.trainee_id: a.status for a in engine.close_timed_out()} == {ana: "timed-out", ben: "timed-out"}

    with db.read() as conn:
        report = cohort_report(conn, engine, cohort["id"])
    pack, task = engine.library.find(TROPONIN)
    ana_cell, ben_cell = report.cell(ana, pack.id, task), report.cell(ben, pack.id, task)
    assert (ana_cell.status, ana_cell.timed_out, ana_cell.seconds) == ("timed-out", True, 600.0)
    assert (ben_cell.status, ben_cell.timed_out, ben_cell.score) == ("passed", True, 6.0)  # met the threshold
    assert report.completion_by_task()[TROPONIN] == 0.5
    cells = {row["trainee"]: row["cells"][TROPONIN] for row in report.to_json()["matrix"]}
    assert (cells[ana]["status"], cells[ana]["timed_out"], cells[ben]["timed_out"]) == ("timed-out", True, True)

    rows = {r["trainee"]: r for r in csv.DictReader(io.StringIO(to_csv(report)))}
    assert (rows[ana]["status"], rows[ana]["timed_out"], rows[ana]["seconds_on_task"]) == (
        "timed-out",
        "true",
        "600.00",
    )
    assert (rows[ben]["status"], rows[ben]["timed_out"]) == ("passed", "true")

    statements = xapi_statements(report, "http://ehr.example.org")
    for statement in statements:
        assert_xapi_statement(statement)
    verbs = {(s["actor"]["account"]["name"], s["verb"]["display"]["en-US"]) for s in statements}
    # No "completed": the time limit ended these attempts, the trainees did not finish them.
    assert verbs == {(ana, "attempted"), (ana, "failed"), (ben, "attempted"), (ben, "passed")}
    failed = next(s for s in statements if s["verb"]["display"]["en-US"] == "failed")
    assert failed["verb"]["id"] == "http://adlnet.gov/expapi/verbs/failed"
    assert failed["result"]["success"] is False and failed["result"]["completion"] is False
    assert failed["result"]["duration"] == "PT10M0S"  # capped at the limit, though closed two minutes later
    assert failed["result"]["extensions"] == {
        "http://ehr.example.org/xapi/extensions/time-limit": "PT10M0S",
        "http://ehr.example.org/xapi/extensions/timed-out": True,
    }
    ana_attempt = next(a for a in report.attempts if a.trainee_id == ana)
    assert ana_attempt.ended_at == deadline(ana_attempt.started_at, 10)
    assert failed["timestamp"] == ana_attempt.ended_at[:23] + "Z"  # it ended at its deadline
    passed = next(s for s in statements if s["verb"]["display"]["en-US"] == "passed")
    assert passed["result"]["success"] is True and passed["result"]["completion"] is False


def test_iso_durations_to_a_hundredth() -> None:
    assert [iso_duration(s) for s in (0, 5, 65.5, 3723.456)] == ["PT0S", "PT5S", "PT1M5.50S", "PT1H2M3.46S"]


def test_report_command(
    db: Database, cohort: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EHR_SANDBOX_DATABASE_URL", db.url)
    assert main(["report", cohort["id"], "--format", "csv", "--pack", "core-clinical"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("cohort,trainee,trainee_name") and len(lines) == 1 + 2 * 5
    assert main(["report", cohort["id"], "--format", "xapi"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["report", "no-such-cohort"]) == 2
    assert "no-such-cohort" in capsys.readouterr().err
    assert main(["report", cohort["id"], "--pack", "nope"]) == 2
    assert "There is no pack 'nope'" in capsys.readouterr().err
