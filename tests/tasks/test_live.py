"""The checklist is live: writes in a sandbox re-check its active attempts through the outbox."""

from __future__ import annotations

import time
from collections.abc import Callable

from sandbox.fhir.interactions import Interactions
from sandbox.store import outbox
from sandbox.store.database import Database
from sandbox.store.schema import outbox as outbox_rows
from tasks.engine import TaskEngine
from tasks.live import CONSUMER, recheck_changed, start_live_checks
from tests.tasks.reference_writes import load_solutions, write_as_trainee

ALLERGY = "core-clinical/allergy-with-reaction"
REFERENCE = next(s for s in load_solutions() if s.task == ALLERGY).reference


def test_a_write_re_checks_the_active_attempt_once(
    db: Database, fhir: Interactions, engine: TaskEngine, new_sandbox: Callable[[str], str]
) -> None:
    sandbox, other = new_sandbox("live"), new_sandbox("idle")
    with db.write() as conn:
        outbox.start_at_end(conn, CONSUMER)  # the case load is history
    attempt = engine.start(sandbox, "ana", ALLERGY)
    engine.start(other, "ben", ALLERGY)
    assert recheck_changed(engine, db) == (0, 0)
    write_as_trainee(db, fhir, sandbox, "ana", attempt.context, REFERENCE)
    assert recheck_changed(engine, db) == (1, 1)  # one event, one attempt (ben's sandbox did not change)
    latest = engine.latest(sandbox, "ana", ALLERGY)
    assert latest is not None and latest.passed and latest.checked_at is not None
    assert recheck_changed(engine, db) == (0, 0)  # the cursor moved on
    with db.read() as conn:
        assert not outbox.has_news(conn, CONSUMER)  # an idle poll is a read: no write lock taken
        assert outbox.has_news(conn, "a-consumer-that-never-ran")


def test_cursors_are_per_consumer_and_wait_at_a_fresh_gap(db: Database, new_sandbox: Callable[[str], str]) -> None:
    new_sandbox("cursor")
    with db.write() as conn:
        first = outbox.claim(conn, "a", batch=10)
        assert len(first) == 10 and first[0].seq == min(e.seq for e in first)
        outbox.advance(conn, "a", first)
    with db.write() as conn:
        assert outbox.position(conn, "a") == first[-1].seq
        assert outbox.claim(conn, "b", batch=10) == first  # another consumer still sees them
    with db.write() as conn:
        conn.execute(outbox_rows.delete().where(outbox_rows.c.seq == first[-1].seq + 1))
    with db.write() as conn:
        assert outbox.claim(conn, "a", batch=10, gap_timeout=3600) == []  # a fresh gap: an earlier write may commit
        later = outbox.claim(conn, "a", batch=10, gap_timeout=-3600)  # a settled gap is skipped
        assert later and later[0].seq == first[-1].seq + 2


def test_the_server_worker_re_checks_in_the_background(
    db: Database, fhir: Interactions, engine: TaskEngine, new_sandbox: Callable[[str], str]
) -> None:
    sandbox = new_sandbox("background")
    checker = start_live_checks(db, fhir)  # skips the outbox's history: the case load is not replayed
    try:
        attempt = engine.start(sandbox, "ana", ALLERGY)
        write_as_trainee(db, fhir, sandbox, "ana", attempt.context, REFERENCE)
        for _ in range(600):  # the worker polls every half second; wait for its pass, not for a set time
            latest = engine.latest(sandbox, "ana", ALLERGY)
            if latest is not None and latest.passed:
                break
            time.sleep(0.05)
        assert latest is not None and latest.passed and latest.checked_at is not None
    finally:
        checker.stop()
