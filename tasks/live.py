"""Live checklists: when a sandbox changes, re-check the active attempts in it.

Follows the outbox with a cursor of its own (``sandbox.store.outbox``): one
batch of events, each sandbox they touch re-checked once, and the cursor moved
on, all in one transaction, so a worker that dies half-way leaves the batch
for the next one.

Each poll also closes the attempts whose time limit has run out
(``TaskEngine.close_timed_out``), so a timed attempt closes within one poll
interval of its deadline (0.5 s by default; ``ehr-sandbox worker --interval``)
even when nobody touches it.  Without a running worker an attempt still closes,
at the next action on it (``tasks.engine``), judged as at its deadline either way.

The same loop runs the worker's housekeeping chores (``sandbox.worker.housekeeping``: the sweep of expired SMART
rows), each of which decides for itself whether it is time: this is the one loop that both ``serve`` and
``ehr-sandbox worker`` run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection

from sandbox.fhir.interactions import Interactions
from sandbox.store import outbox
from sandbox.store.database import Database
from tasks.engine import TaskEngine
from tasks.library import Library

CONSUMER = "task-recheck"
_log = logging.getLogger("ehr_sandbox.tasks")


RECHECK_BATCH = 500  # outbox events a re-check transaction takes at most


def recheck_changed(engine: TaskEngine, db: Database, *, batch: int = RECHECK_BATCH) -> tuple[int, int]:
    """One batch: (events consumed, attempts re-checked)."""

    def recheck(conn: Connection, events: list[Any]) -> int:
        return sum(len(engine.recheck_sandbox(conn, sandbox_id)) for sandbox_id in sorted({e.layer_id for e in events}))

    consumed, rechecked = outbox.consume(db, CONSUMER, recheck, batch=batch)
    return consumed, rechecked or 0


class LiveChecker:
    """A background thread that keeps re-checking (and running its ``chores``) until stopped."""

    def __init__(
        self,
        engine: TaskEngine,
        db: Database,
        *,
        interval: float = 0.5,
        chores: Sequence[Callable[[], object]] = (),
    ) -> None:
        self.engine = engine
        self.db = db
        self.interval = interval
        self.chores = tuple(chores)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="task-recheck", daemon=True)
        self._poked: set[str] = set()
        self._poked_lock = threading.Lock()

    def poke(self, sandbox_id: str) -> None:
        """Re-check this sandbox at the next poll: its HL7 v2 message log changed (a delivery's ACK), which
        makes no outbox event.  The HL7 v2 delivery worker of the same process calls it (``on_sent``)."""
        with self._poked_lock:
            self._poked.add(sandbox_id)

    def recheck_poked(self) -> int:
        """Re-check the sandboxes poked since the last poll; returns how many attempts were re-checked."""
        with self._poked_lock:
            poked, self._poked = self._poked, set()
        rechecked = 0
        for sandbox_id in sorted(poked):
            with self.db.write() as conn:
                rechecked += len(self.engine.recheck_sandbox(conn, sandbox_id))
        return rechecked

    def start(self) -> None:
        with self.db.write() as conn:
            if outbox.position(conn, CONSUMER) is None:
                outbox.start_at_end(conn, CONSUMER)  # the first run does not replay loads from before it existed
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                consumed, _ = recheck_changed(self.engine, self.db)
                self.recheck_poked()
            except Exception:  # a database hiccup must not end live checking for the life of the server
                _log.exception("task re-check worker")
                consumed = 0
            try:
                self.engine.close_timed_out()
            except Exception:  # likewise: the next poll tries again
                _log.exception("task time-limit sweep")
            for chore in self.chores:
                try:
                    chore()
                except Exception:  # likewise: the chore runs again when it is next due
                    _log.exception("background chore %r", chore)
            if not outbox.backlog(consumed, RECHECK_BATCH):
                self._stop.wait(self.interval)


def start_live_checks(db: Database, fhir: Interactions, *, chores: Sequence[Callable[[], object]] = ()) -> LiveChecker:
    """The server's re-check worker over the built-in packs (``ehr-sandbox serve`` starts it; a daemon thread)."""
    checker = LiveChecker(TaskEngine(db, fhir, Library.builtin()), db, chores=chores)
    checker.start()
    return checker
