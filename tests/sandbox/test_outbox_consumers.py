"""The outbox consumers' loops: a full batch means a backlog, worked through at once; a part batch means the
burst is over, so the consumer waits its interval and takes what is written meanwhile in one transaction."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from sandbox.hl7v2 import delivery
from sandbox.subscriptions import delivery as subscriptions
from tasks import live


class _Polls(threading.Event):
    """A consumer's stop event that records each wait for the interval, and stops the loop at the first."""

    def __init__(self, passes: list[Any]) -> None:
        super().__init__()
        self.passes = passes

    def wait(self, timeout: float | None = None) -> bool:
        self.passes.append("wait")
        self.set()
        return True


def _batches(passes: list[Any], *sizes: int) -> Iterator[int]:
    """What the consumer's batch step returns, pass after pass (then nothing), each recorded."""
    for size in (*sizes, 0, 0, 0):
        passes.append(size)
        yield size


def test_the_hl7v2_translator_waits_only_after_a_part_batch(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    passes: list[Any] = []
    worker = delivery.Worker(app.state.db, app.state.fhir, interval=60)
    returns = _batches(passes, worker.batch, worker.batch, 7)
    monkeypatch.setattr(delivery, "translate", lambda *_args, **_kw: next(returns))
    worker._stop = _Polls(passes)
    worker._run()
    assert passes == [worker.batch, worker.batch, 7, "wait"]


def test_the_subscription_matcher_waits_only_after_a_part_batch(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    passes: list[Any] = []
    worker = subscriptions.SubscriptionWorker(app.state.db, app.state.fhir, interval=60)
    returns = _batches(passes, worker.batch, 3)
    monkeypatch.setattr(subscriptions, "queue_events", lambda *_args, **_kw: next(returns))
    worker._stop = _Polls(passes)
    worker._run()
    assert passes == [worker.batch, 3, "wait"]


def test_the_task_recheck_waits_only_after_a_part_batch(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    passes: list[Any] = []
    returns = _batches(passes, live.RECHECK_BATCH, 1)
    monkeypatch.setattr(live, "recheck_changed", lambda *_args, **_kw: (next(returns), 0))

    class NoDeadlines:  # the attempts' time limits are another test's concern
        def close_timed_out(self) -> None:
            pass

    checker = live.LiveChecker(NoDeadlines(), app.state.db, interval=60)  # type: ignore[arg-type]
    checker._stop = _Polls(passes)
    checker._run()
    assert passes == [live.RECHECK_BATCH, 1, "wait"]


def test_consumers_take_bigger_batches_on_postgresql_than_on_sqlite(db: Any) -> None:
    """On SQLite a batch holds the one write lock every request's write waits for; on PostgreSQL only its cursor."""
    from sandbox.store import outbox

    assert outbox.batch_for(db, 100) == (100 if db.is_sqlite else 500)
