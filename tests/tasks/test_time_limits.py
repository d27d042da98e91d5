"""Timed tasks: an attempt closes as timed-out at its deadline (start + ``time_limit``), lazily on any action
and promptly from the live worker's sweep, judged as the sandbox stood at the deadline.  Time is moved with the
engine's clock (``tests.tasks.conftest.Clock``) or by writing ``started_at`` in the past: nothing sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

import orjson
import pytest
from sqlalchemy import func, select, update

from sandbox.fhir.interactions import Interactions
from sandbox.store.database import Database
from sandbox.store.layers import resolve_view
from sandbox.store.repository import Actor
from sandbox.store.sandboxes import delete_sandbox
from sandbox.store.schema import outbox, resource_versions, task_attempts
from tasks.engine import Attempt, TaskEngine, TimeIsUp
from tasks.live import start_live_checks
from tasks.timing import deadline, seconds_left, time_is_up
from tests.tasks.conftest import Clock
from tests.tasks.reference_writes import load_solutions, write_as_trainee

TROPONIN = "orders-and-charting/stat-troponin"  # time_limit: 10
VITALS = "core-clinical/vitals-current-encounter"  # time_limit: 15
ALLERGY = "core-clinical/allergy-with-reaction"  # untimed
SOLUTIONS = {s.task: s.reference for s in load_solutions()}


def _started_minutes_ago(engine: TaskEngine, clock: Clock, sandbox: str, task: str, minutes: float) -> Attempt:
    clock.offset = -timedelta(minutes=minutes)
    try:
        return engine.start(sandbox, "ana", task)
    finally:
        clock.offset = timedelta()


def _stored(engine: TaskEngine, sandbox: str, task: str) -> list[Attempt]:
    """The attempts as stored: ``attempts`` only reads (``latest`` would close one that is out of time)."""
    with engine.db.read() as conn:
        return [a for a in engine.attempts(conn, sandbox_id=sandbox) if f"{a.pack_id}/{a.task_id}" == task]


def test_deadlines_are_the_start_plus_the_limit() -> None:
    assert deadline("2026-03-01T10:00:00.000000", 15) == "2026-03-01T10:15:00.000000"
    assert deadline("2026-03-01T23:50:00.500000", 15) == "2026-03-02T00:05:00.500000"
    assert deadline("2026-03-01T10:00:00.000000", None) is None
    assert not time_is_up("2026-03-01T10:00:00.000000", 15, "2026-03-01T10:14:59.999999")
    assert time_is_up("2026-03-01T10:00:00.000000", 15, "2026-03-01T10:15:00.000000")
    assert not time_is_up("2026-03-01T10:00:00.000000", None, "2099-01-01T00:00:00.000000")
    assert seconds_left("2026-03-01T10:00:00.000000", 15, "2026-03-01T10:14:30.000000") == 30.0
    assert seconds_left("2026-03-01T10:00:00.000000", 15, "2026-03-01T11:00:00.000000") == 0.0


def test_work_done_in_time_counts_when_the_attempt_times_out(
    db: Database, fhir: Interactions, engine: TaskEngine, clock: Clock, new_sandbox: Callable[[str], str]
) -> None:
    sandbox = new_sandbox("in-time")
    attempt = _started_minutes_ago(engine, clock, sandbox, TROPONIN, 9)  # one minute left
    write_as_trainee(db, fhir, sandbox, "ana", attempt.context, SOLUTIONS[TROPONIN])
    assert engine.check(sandbox, "ana", TROPONIN).status == "active"
    clock.offset = timedelta(minutes=2)  # past the deadline
    closed = engine.check(sandbox, "ana", TROPONIN)
    assert (closed.status, closed.passed, closed.score, closed.max_score) == ("timed-out", True, 6.0, 6.0)
    assert closed.ended_at == deadline(attempt.started_at, 10)
    assert closed.seconds_on_task == 600.0  # capped at the limit, however late it was closed
    assert engine.check(sandbox, "ana", TROPONIN) == closed  # a closed attempt keeps its final result


def test_writes_after_the_deadline_do_not_count_and_stay_in_the_sandbox(
    db: Database, fhir: Interactions, engine: TaskEngine, clock: Clock, new_sandbox: Callable[[str], str]
) -> None:
    sandbox = new_sandbox("late")
    attempt = _started_minutes_ago(engine, clock, sandbox, TROPONIN, 11)  # the deadline was a minute ago
    written = write_as_trainee(db, fhir, sandbox, "ana", attempt.context, SOLUTIONS[TROPONIN])
    with db.read() as conn:
        versions = conn.execute(select(func.count()).select_from(resource_versions)).scalar()
        events = conn.execute(select(func.count()).select_from(outbox)).scalar()
    with db.write() as conn:  # what a chart save or the outbox consumer does after the late write
        [closed] = engine.recheck_sandbox(conn, sandbox)
    assert (closed.status, closed.passed, closed.score) == ("timed-out", False, 0.0)
    assert {r.check_id: r.status for r in closed.results}["ordered"] == "fail"
    rtype, rid = written["troponin"].split("/")
    with db.read() as conn:
        # Judged as at the deadline in a savepoint, then rolled back: the order is there, history and outbox
        # are as they were (no undo versions, no events for other consumers).
        assert not fhir.repo.current(conn, resolve_view(conn, sandbox), rtype, rid).deleted
        assert conn.execute(select(func.count()).select_from(resource_versions)).scalar() == versions
        assert conn.execute(select(func.count()).select_from(outbox)).scalar() == events


def test_the_final_check_sees_the_sandbox_as_it_stood_at_the_deadline(
    db: Database, fhir: Interactions, engine: TaskEngine, new_sandbox: Callable[[str], str]
) -> None:
    sandbox = new_sandbox("mixed")
    attempt = engine.start(sandbox, "ana", VITALS)
    reference = SOLUTIONS[VITALS]
    wrong_temperature = {**next(w for w in reference if w["as"] == "temp")}
    wrong_temperature["resource"] = {**wrong_temperature["resource"], "valueQuantity": {"value": 98.2, "unit": "F"}}
    in_time = [w for w in reference if w["as"] in ("bp", "hr", "rr")] + [wrong_temperature]
    names = write_as_trainee(db, fhir, sandbox, "ana", attempt.context, in_time)
    cut = engine.now()
    # After the deadline: the temperature corrected, and the missing oxygen saturation charted.
    write_as_trainee(db, fhir, sandbox, "ana", attempt.context, [w for w in reference if w["as"] == "spo2"])
    temp_id = names["temp"].split("/")[1]
    with db.write() as conn:
        view = resolve_view(conn, sandbox)
        stored = fhir.repo.current(conn, view, "Observation", temp_id)
        right = next(w for w in reference if w["as"] == "temp")["resource"]["valueQuantity"]
        corrected = {**orjson.loads(stored.content), "valueQuantity": right}
        fhir.update(conn, view, "Observation", temp_id, corrected, Actor("user:ana", "web-ui"))
    with db.read() as conn:
        late = conn.execute(
            select(func.min(resource_versions.c.last_updated)).where(
                resource_versions.c.layer_id == sandbox, resource_versions.c.last_updated > cut
            )
        ).scalar()
    assert late is not None  # the late writes really are later than the cut
    with db.write() as conn:  # the deadline falls between the in-time and the late writes
        conn.execute(
            update(task_attempts)
            .where(task_attempts.c.sandbox_id == sandbox)
            .values(started_at=(datetime.fromisoformat(cut) - timedelta(minutes=15)).isoformat(timespec="microseconds"))
        )
    closed = engine.check(sandbox, "ana", VITALS)
    statuses = {r.check_id: r.status for r in closed.results}
    assert closed.status == "timed-out" and not closed.passed
    assert statuses["blood-pressure"] == statuses["heart-rate"] == statuses["respiratory-rate"] == "pass"
    assert statuses["oxygen-saturation"] == "fail"  # charted late
    assert statuses["temperature"] == "fail"  # corrected late: judged as it was at the deadline
    with db.read() as conn:
        now = fhir.repo.current(conn, resolve_view(conn, sandbox), "Observation", temp_id)
        assert b'"Cel"' in now.content  # the correction itself is kept


def test_hint_and_submit_after_the_deadline_close_the_attempt_and_say_time_is_up(
    db: Database, engine: TaskEngine, clock: Clock, new_sandbox: Callable[[str], str]
) -> None:
    sandbox = new_sandbox("too-late")
    _started_minutes_ago(engine, clock, sandbox, VITALS, 16)
    with pytest.raises(
        TimeIsUp,
        match=r"^Time is up: attempt 1 at task 'vitals-current-encounter' closed at its"
        r" time limit of 15 minutes, scoring 2/8 \(not passed\); retry to start again$",
    ):
        engine.hint(sandbox, "ana", VITALS)
    [stored] = _stored(engine, sandbox, VITALS)
    assert (stored.status, stored.hints_used) == ("timed-out", 0)  # closed (and kept), no hint taken
    with pytest.raises(TimeIsUp, match="^Time is up"):
        engine.submit(sandbox, "ana", VITALS)
    assert [a.status for a in _stored(engine, sandbox, VITALS)] == ["timed-out"]


def test_submit_and_hints_within_the_limit_work_as_ever(
    db: Database, fhir: Interactions, engine: TaskEngine, clock: Clock, new_sandbox: Callable[[str], str]
) -> None:
    sandbox = new_sandbox("on-time")
    attempt = _started_minutes_ago(engine, clock, sandbox, VITALS, 14)
    assert engine.hint(sandbox, "ana", VITALS).cost == 1
    write_as_trainee(db, fhir, sandbox, "ana", attempt.context, SOLUTIONS[VITALS])
    final = engine.submit(sandbox, "ana", VITALS)
    assert (final.status, final.passed) == ("submitted", True)
    assert final.seconds_on_task <= 15 * 60
    clock.offset = timedelta(hours=1)
    assert engine.latest(sandbox, "ana", VITALS).status == "submitted"  # a submitted attempt never times out


def test_the_sweep_closes_overdue_attempts_and_leaves_the_others(
    db: Database, fhir: Interactions, engine: TaskEngine, clock: Clock, new_sandbox: Callable[[str], str]
) -> None:
    overdue, in_time, untimed, submitted = (new_sandbox(n) for n in ("overdue", "in-time", "untimed", "submitted"))
    _started_minutes_ago(engine, clock, overdue, TROPONIN, 11)
    _started_minutes_ago(engine, clock, in_time, TROPONIN, 5)
    _started_minutes_ago(engine, clock, untimed, ALLERGY, 600)
    _started_minutes_ago(engine, clock, submitted, TROPONIN, 9)
    engine.submit(submitted, "ana", TROPONIN)
    closed = engine.close_timed_out()
    assert [(a.sandbox_id, a.status) for a in closed] == [(overdue, "timed-out")]
    assert engine.close_timed_out() == []  # nothing left to close
    assert _stored(engine, in_time, TROPONIN)[0].status == "active"
    assert _stored(engine, untimed, ALLERGY)[0].status == "active"
    assert _stored(engine, submitted, TROPONIN)[0].status == "submitted"
    clock.offset = timedelta(minutes=6)  # the in-time one's deadline passes too
    assert [a.sandbox_id for a in engine.close_timed_out()] == [in_time]


def test_the_sweep_closes_an_overdue_attempt_whose_sandbox_was_deleted(
    db: Database, fhir: Interactions, engine: TaskEngine, clock: Clock, new_sandbox: Callable[[str], str]
) -> None:
    sandbox = new_sandbox("gone")
    attempt = _started_minutes_ago(engine, clock, sandbox, TROPONIN, 9)
    write_as_trainee(db, fhir, sandbox, "ana", attempt.context, SOLUTIONS[TROPONIN])
    checked = engine.check(sandbox, "ana", TROPONIN)
    with db.write() as conn:
        delete_sandbox(conn, sandbox)
    clock.offset = timedelta(minutes=2)
    [closed] = engine.close_timed_out()  # no sandbox to judge: the last stored results are final
    assert (closed.status, closed.score, closed.passed, closed.results) == (
        "timed-out",
        checked.score,
        True,
        checked.results,
    )
    assert engine.close_timed_out() == []  # and the next poll does not trip over it


def test_the_live_worker_closes_an_overdue_attempt_nobody_touches(
    db: Database, fhir: Interactions, engine: TaskEngine, clock: Clock, new_sandbox: Callable[[str], str]
) -> None:
    sandbox = new_sandbox("swept")
    _started_minutes_ago(engine, clock, sandbox, TROPONIN, 11)
    checker = start_live_checks(db, fhir)  # the server's worker, with the real clock
    try:
        for _ in range(600):  # it polls every half second: wait for its pass, not for a set time
            [stored] = _stored(engine, sandbox, TROPONIN)
            if stored.status != "active":
                break
            time.sleep(0.05)
    finally:
        checker.stop()
    assert stored.status == "timed-out" and stored.ended_at == deadline(stored.started_at, 10)


def test_start_shows_the_timed_out_attempt_and_retry_starts_a_new_timed_one(
    db: Database, fhir: Interactions, engine: TaskEngine, clock: Clock, new_sandbox: Callable[[str], str]
) -> None:
    sandbox = new_sandbox("again")
    attempt = _started_minutes_ago(engine, clock, sandbox, TROPONIN, 11)
    written = write_as_trainee(db, fhir, sandbox, "ana", attempt.context, SOLUTIONS[TROPONIN])  # late
    shown = engine.start(sandbox, "ana", TROPONIN)  # the trainee opens the task again
    assert (shown.attempt, shown.status) == (1, "timed-out")
    again = engine.retry(sandbox, "ana", TROPONIN)
    assert (again.attempt, again.status) == (2, "active")
    assert deadline(again.started_at, 10) > engine.now()  # a fresh clock
    assert [a.status for a in _stored(engine, sandbox, TROPONIN)] == ["timed-out", "active"]
    rtype, rid = written["troponin"].split("/")
    with db.read() as conn:
        assert fhir.repo.current(conn, resolve_view(conn, sandbox), rtype, rid).deleted  # the retry's reset
    write_as_trainee(db, fhir, sandbox, "ana", again.context, SOLUTIONS[TROPONIN])
    assert engine.submit(sandbox, "ana", TROPONIN).passed


def test_an_overdue_attempt_retried_is_on_record_as_timed_out_not_abandoned(
    db: Database, engine: TaskEngine, clock: Clock, new_sandbox: Callable[[str], str]
) -> None:
    sandbox = new_sandbox("retried-late")
    _started_minutes_ago(engine, clock, sandbox, TROPONIN, 30)
    engine.retry(sandbox, "ana", TROPONIN)
    first, second = _stored(engine, sandbox, TROPONIN)
    assert (first.status, first.seconds_on_task, second.status) == ("timed-out", 600.0, "active")
