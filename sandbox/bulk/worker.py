"""The background worker that runs bulk export jobs: one thread per app, any number of apps per database."""

from __future__ import annotations

import logging
import threading
import uuid

from sandbox.bulk import export, jobs
from sandbox.store.database import Database
from sandbox.store.repository import Repository

_log = logging.getLogger("ehr_sandbox.bulk")


def run_due(db: Database, repo: Repository, worker_id: str) -> int:
    """Run every job that is due (queued, or abandoned by a worker whose lease lapsed); returns how many ran.

    Jobs finished longer ago than ``jobs.RETENTION`` are deleted first, files and all.
    """
    jobs.purge_expired(db)
    ran = 0
    while jobs.has_due(db):
        job = jobs.claim(db, worker_id)
        if job is None:
            break  # another worker took it
        export.run(db, repo, job, worker_id)
        ran += 1
    return ran


class ExportWorker:
    """Polls for due jobs every ``interval`` seconds, and at once when a kick-off in this app calls ``wake``."""

    def __init__(self, db: Database, repo: Repository, *, interval: float = 2.0) -> None:
        self.db = db
        self.repo = repo
        self.interval = interval
        self.worker_id = f"bulk-{uuid.uuid4().hex[:12]}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="bulk-export", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join(timeout=30)
            self._thread = None

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                run_due(self.db, self.repo, self.worker_id)
            except Exception:  # a database hiccup must not end exports for the life of the server
                _log.exception("bulk export worker")
            self._wake.wait(self.interval)
