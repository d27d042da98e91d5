"""A fresh store for a benchmark: a SQLite file in a folder, or a PostgreSQL database of its own, recreated."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from sandbox.store.database import Database


def fresh_database(backend: str, folder: Path, pg_url: str) -> Database:
    """An empty store with the schema; ``pg_url``'s database is dropped and created again (never ``test``)."""
    if backend == "sqlite":
        db = Database(f"sqlite:///{folder / 'bench.db'}")
    else:
        url = make_url(pg_url)
        if not url.database or url.database in ("test", "postgres"):
            raise SystemExit(f"bench: refusing to recreate database '{url.database}'; name a database of its own")
        admin = Database(str(url.set(database="postgres")))
        with admin._autocommit.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}"'))
            conn.execute(text(f'CREATE DATABASE "{url.database}"'))
        admin.dispose()
        db = Database(url.render_as_string(hide_password=False))
    db.create_schema()
    return db
