"""Database housekeeping the loaders rely on."""

from __future__ import annotations

from sqlalchemy import text

from sandbox.store.database import Database


def test_analyze_after_a_load_gives_the_planner_statistics(db: Database):
    with db.write() as conn:
        conn.execute(text("INSERT INTO layers (id, kind, name, created_at) VALUES ('b', 'baseline', 'B', 'now')"))
    db.analyze()  # runs outside any transaction on both backends
    with db.read() as conn:
        if db.is_sqlite:
            assert conn.execute(text("SELECT count(*) FROM sqlite_stat1 WHERE tbl = 'layers'")).scalar() == 1
        else:
            analyzed = conn.execute(
                text(
                    "SELECT last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL FROM pg_stat_user_tables "
                    "WHERE relname = 'layers' AND schemaname = current_schema()"
                )
            ).scalar()
            assert analyzed
