"""SQLite's WAL is checkpointed by a thread beside the writer, not in the writer's commits."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from sandbox.store.checkpoints import WalCheckpoints
from sandbox.store.database import Database


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Iterator[tuple[Database, Path]]:
    path = tmp_path / "wal.db"
    db = Database(f"sqlite:///{path}")
    with db.write() as conn:
        conn.execute(text("CREATE TABLE notes (body BLOB)"))
    try:
        yield db, path
    finally:
        db.dispose()


def test_a_write_reaches_the_database_file_soon_though_the_writer_makes_no_checkpoint(sqlite_file):
    db, path = sqlite_file
    with db.write() as conn:
        conn.execute(text("INSERT INTO notes VALUES (x'01')"))
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    # ``immutable`` reads the database file alone, not the WAL: a row there has been checkpointed.  The
    # database stays open throughout, so it is not the checkpoint SQLite makes when the last connection closes.
    assert _eventually(lambda: _rows_in_file(path) == 1)


def test_under_a_steady_stream_of_writes_the_wal_starts_anew(sqlite_file, monkeypatch):
    """A passive checkpoint cannot finish while writes keep coming; past ``RESTART_FRAMES`` the last frames
    are copied holding the writer's lock, and the next write starts the WAL from its beginning."""
    db, path = sqlite_file
    monkeypatch.setattr(WalCheckpoints, "RESTART_FRAMES", 50)
    monkeypatch.setattr(WalCheckpoints, "PAUSE", 0.01)
    note = 8192  # two pages
    written = 0
    deadline = time.monotonic() + 5
    while written < 16 * 1024 * 1024 and time.monotonic() < deadline:
        with db.write() as conn:
            conn.execute(text("INSERT INTO notes VALUES (randomblob(:n))"), {"n": note})
        written += note
        time.sleep(0.001)  # as requests come, not back to back: the checkpoint thread gets the GIL in between
    wal = path.with_name(path.name + "-wal").stat().st_size
    # Never started anew, the WAL would hold every page written (and more: 34 MB for 16 MB of notes).
    assert written >= 1024 * 1024
    assert wal < written / 2


def test_the_thread_ends_when_writes_stop_or_the_database_is_disposed_and_the_next_write_starts_another(
    sqlite_file, monkeypatch
):
    db, path = sqlite_file
    monkeypatch.setattr(WalCheckpoints, "IDLE", 0.2)
    with db.write() as conn:
        conn.execute(text("INSERT INTO notes VALUES (x'01')"))
    assert _checkpoint_threads(path) == 1
    assert _eventually(lambda: _checkpoint_threads(path) == 0)
    with db.write() as conn:
        conn.execute(text("INSERT INTO notes VALUES (x'02')"))
    assert _checkpoint_threads(path) == 1
    db.dispose()
    assert _checkpoint_threads(path) == 0
    with db.write() as conn:  # a database disposed of is opened again by its next use
        conn.execute(text("INSERT INTO notes VALUES (x'03')"))
    assert _checkpoint_threads(path) == 1
    assert _eventually(lambda: _rows_in_file(path) == 3)


def _rows_in_file(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM notes").fetchone()[0]
    except sqlite3.OperationalError:  # the table itself is not in the file yet
        return 0
    finally:
        conn.close()


def _checkpoint_threads(path: Path) -> int:
    """This database's checkpoint threads (other tests' databases may have theirs)."""
    return sum(thread.name == f"sqlite-checkpoints {path}" for thread in threading.enumerate())


def _eventually(check: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
