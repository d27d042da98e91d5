"""SQLite's WAL checkpoints, run beside the writer rather than inside its commits.

SQLite copies the WAL back into the database file (a checkpoint: thousands of page reads and writes, and two
fsyncs) in whichever connection's commit takes the WAL past ``wal_autocheckpoint`` pages.  Every write of
this process goes through one kept connection (``Database._write_connection``), so every checkpoint ran in
the writer's commit while each request's write waited behind it.  Here a thread of its own checkpoints
(``PRAGMA wal_checkpoint(PASSIVE)``, which waits on no reader and no writer) a moment after writes, while
the writer goes on, and the writer's connection makes no checkpoint of its own.

A passive checkpoint copies the frames committed when it starts; the WAL is only reused from its start
(rather than growing) once every frame is copied, and under a steady stream of writes new ones always
arrive during the copy.  So once the WAL holds ``RESTART_FRAMES`` frames, the next write, its commit done
and still holding the writer's turn, copies the few frames that came in meanwhile: the write after it then
starts the WAL anew.  (This thread taking the writer's turn for that instead waited for ever behind a busy
writer, which took the turn again each time it let go.)
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import Engine

_log = logging.getLogger("ehr_sandbox")


class WalCheckpoints:
    """Checkpoints of one SQLite database file, for the writes of one ``Database`` (``wrote`` after each)."""

    # Seconds from a write to the checkpoint after it: the writes of that moment are copied together.
    PAUSE = 0.25
    # WAL frames (pages) past which the WAL is brought to a full checkpoint, so that it starts anew: the size
    # at which SQLite's own automatic checkpoint ran (``_sqlite_on_connect``), about 40 MB.
    RESTART_FRAMES = 10_000
    # Seconds without a write after which the thread ends (and closes its connection); the next write
    # starts another.  An idle server, or a test's database, keeps no thread.
    IDLE = 5.0

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._written = threading.Event()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._finish = False  # whether the next write is to copy the last frames (``wrote``)
        self.thread_name = f"sqlite-checkpoints {engine.url.database}"

    def wrote(self, writer: Any) -> None:
        """A write has committed on ``writer`` (its driver connection, in no transaction), which the caller
        still holds as the only writer: checkpoint it soon, and finish a checkpoint now if one is due."""
        if self._finish:
            self._finish = False
            try:
                writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except Exception:  # the write has committed: its caller must not see it fail
                _log.exception("SQLite WAL checkpoint")
        self._written.set()
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._stopped.is_set():
                    self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
                    self._thread.start()

    def stop(self) -> None:
        """End the thread, after the checkpoint it is making, if any (``Database.dispose``); a later write
        starts another."""
        with self._lock:
            self._stopped.set()
            thread = self._thread
        self._written.set()
        if thread is not None:
            thread.join()
        with self._lock:
            self._stopped.clear()

    def _run(self) -> None:
        try:
            # A connection of its own, outside the pool: the pool's are for requests.
            args, kwargs = self._engine.dialect.create_connect_args(self._engine.url)
            raw = self._engine.dialect.connect(*args, **kwargs)
            try:
                while self._next():
                    if self._stopped.wait(self.PAUSE):
                        return
                    try:
                        self._checkpoint(raw)
                    except Exception:  # a failed checkpoint leaves the WAL as it was; the next write tries again
                        _log.exception("SQLite WAL checkpoint")
            finally:
                raw.close()
        finally:
            with self._lock:
                if self._thread is threading.current_thread():  # ended by ``stop`` or by an error
                    self._thread = None

    def _next(self) -> bool:
        """Wait for a write; False to end the thread (stopped, or idle for ``IDLE`` seconds)."""
        while not self._written.wait(self.IDLE):
            with self._lock:
                if not self._written.is_set():  # under the lock: a ``wrote`` from now on starts a new thread
                    self._thread = None
                    return False
        self._written.clear()
        return not self._stopped.is_set()

    def _checkpoint(self, raw: Any) -> None:
        _busy, frames, _copied = raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames >= self.RESTART_FRAMES:
            self._finish = True
