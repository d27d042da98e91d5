"""Database housekeeping the loaders rely on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import text

from sandbox.demo import create_demo
from sandbox.store.database import Database


def test_analyze_after_a_load_gives_the_planner_statistics(db: Database):
    with db.write() as conn:
        conn.execute(text("INSERT INTO layers (id, kind, name, created_at) VALUES ('b', 'baseline', 'B', 'now')"))
    db.analyze()  # runs outside any transaction on both backends
    assert _analyzed(db, "layers")


def test_the_demo_cases_are_analyzed_once_loaded(app: Any, tmp_path: Path):
    """``serve`` loads the demo's cases into an empty store: without statistics the planner picks slow plans."""
    create_demo(app.state.db, app.state.fhir, tmp_path)
    assert _analyzed(app.state.db, "resources")


def _analyzed(db: Database, table: str) -> bool:
    """Whether the planner has statistics of ``table``."""
    with db.read() as conn:
        if db.is_sqlite:
            return bool(conn.execute(text("SELECT count(*) FROM sqlite_stat1 WHERE tbl = :t"), {"t": table}).scalar())
        return bool(
            conn.execute(
                text(
                    "SELECT last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL FROM pg_stat_user_tables "
                    "WHERE relname = :t AND schemaname = current_schema()"
                ),
                {"t": table},
            ).scalar()
        )


def test_every_sqlite_connection_is_set_up_for_a_server(tmp_path):
    """WAL with NORMAL sync, and a checkpoint every 10,000 pages: at SQLite's 1,000 a FHIR write (many index pages)
    paid a checkpoint every few commits."""
    db = Database(f"sqlite:///{tmp_path / 'settings.db'}")
    try:
        with db.read() as conn:
            names = ("journal_mode", "synchronous", "wal_autocheckpoint")
            pragma = {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar() for name in names}
        assert pragma == {"journal_mode": "wal", "synchronous": 1, "wal_autocheckpoint": 10000}
    finally:
        db.dispose()
