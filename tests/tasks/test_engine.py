"""Attempts: start, check, hint, submit, retry; authorship counts; bad requests are refused with one line."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sandbox.fhir.interactions import Interactions
from sandbox.store.database import Database
from sandbox.store.sandboxes import create_sandbox
from tasks.engine import TaskEngine, TaskFailure
from tests.tasks.reference_writes import load_solutions, write_as_trainee

ALLERGY = "core-clinical/allergy-with-reaction"
REFERENCE = next(s for s in load_solutions() if s.task == ALLERGY).reference


def test_only_the_trainees_own_writes_after_the_start_count(
    db: Database, fhir: Interactions, engine: TaskEngine, new_sandbox: Callable[[str], str]
) -> None:
    sandbox = new_sandbox("shared")
    attempt = engine.start(sandbox, "ana", ALLERGY)
    write_as_trainee(db, fhir, sandbox, "someone-else", attempt.context, REFERENCE)
    graded = engine.check(sandbox, "ana", ALLERGY)
    assert not graded.passed
    assert {r.check_id: r.status for r in graded.results} == {
        "allergy-recorded": "fail",
        "reaction": "fail",
        "severity": "fail",
        "no-duplicate": "pass",  # counts everyone's entries: one is on the list
    }
    assert "Expected at least 1 matching AllergyIntolerance written by you" in graded.results[0].message


def test_hints_cost_points_and_submit_closes_the_attempt(
    db: Database, fhir: Interactions, engine: TaskEngine, new_sandbox: Callable[[str], str]
) -> None:
    sandbox = new_sandbox("hinted")
    attempt = engine.start(sandbox, "ana", ALLERGY)
    assert engine.start(sandbox, "ana", ALLERGY).attempt == attempt.attempt  # starting again: the same attempt
    hint = engine.hint(sandbox, "ana", ALLERGY)
    assert hint.cost == 1 and "RxNorm" in hint.text
    with pytest.raises(TaskFailure, match="no more hints"):
        engine.hint(sandbox, "ana", ALLERGY)
    write_as_trainee(db, fhir, sandbox, "ana", attempt.context, REFERENCE)
    final = engine.submit(sandbox, "ana", ALLERGY)
    assert (final.status, final.score, final.max_score, final.passed) == ("submitted", 5.0, 6.0, True)
    assert final.ended_at is not None and final.seconds_on_task >= 0
    with pytest.raises(TaskFailure, match="is submitted; retry to start again"):
        engine.submit(sandbox, "ana", ALLERGY)


def test_retry_undoes_the_tasks_own_writes_and_starts_attempt_two(
    db: Database, fhir: Interactions, engine: TaskEngine, new_sandbox: Callable[[str], str]
) -> None:
    sandbox = new_sandbox("retried")
    attempt = engine.start(sandbox, "ana", ALLERGY)
    written = write_as_trainee(db, fhir, sandbox, "ana", attempt.context, REFERENCE)
    assert engine.check(sandbox, "ana", ALLERGY).passed
    again = engine.retry(sandbox, "ana", ALLERGY)
    assert (again.attempt, again.status) == (2, "active")
    rtype, rid = written["allergy"].split("/")
    with db.read() as conn:
        from sandbox.store.layers import resolve_view

        assert fhir.repo.current(conn, resolve_view(conn, sandbox), rtype, rid).deleted
        assert [a.status for a in engine.attempts(conn, sandbox_id=sandbox)] == ["abandoned", "active"]
    assert not engine.check(sandbox, "ana", ALLERGY).passed


def test_bad_requests_are_refused_with_a_clear_message(
    db: Database, engine: TaskEngine, new_sandbox: Callable[[str], str]
) -> None:
    sandbox = new_sandbox("plain")
    with pytest.raises(TaskFailure, match="There is no sandbox 'nowhere'"):
        engine.start("nowhere", "ana", ALLERGY)
    with pytest.raises(TaskFailure, match="has not started task 'allergy-with-reaction'"):
        engine.check(sandbox, "ana", ALLERGY)
    with pytest.raises(LookupError, match="There is no task 'core-clinical/nope'"):
        engine.start(sandbox, "ana", "core-clinical/nope")
    with db.write() as conn:
        empty = create_sandbox(conn, "empty", None, sandbox_id="empty").id
    with pytest.raises(TaskFailure, match="has no Patient/chest-pain-cardiology"):
        engine.start(empty, "ana", ALLERGY)
