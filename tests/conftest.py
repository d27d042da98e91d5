"""Shared fixtures: every storage and API test runs on SQLite, and on PostgreSQL when
``EHR_SANDBOX_TEST_DATABASE_URL`` is set (``.ci/run`` sets it)."""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from sandbox.config import Settings
from sandbox.store.database import Database
from sandbox.store.schema import metadata

warnings.filterwarnings("ignore", message=".*httpx2.*")

from fastapi.testclient import TestClient  # noqa: E402

from sandbox.app import create_app  # noqa: E402

ADMIN_TOKEN = "test-admin-token"
PG_URL = os.environ.get("EHR_SANDBOX_TEST_DATABASE_URL")

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def _pg_schema_url(schema: str) -> str:
    assert PG_URL is not None
    sep = "&" if "?" in PG_URL else "?"
    # Commits need not wait for the disk in tests: that wait was most of the suite's wall time.
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}%20-csynchronous_commit%3Doff"


@pytest.fixture(scope="session")
def pg_database(worker_id: str) -> Iterator[Database]:
    """A schema of this test process's own (xdist worker and pid), so parallel runs never share tables."""
    if not PG_URL:
        pytest.skip("EHR_SANDBOX_TEST_DATABASE_URL is not set")
    schema = f"t_{worker_id}_{os.getpid()}"
    admin = Database(PG_URL)
    with admin.engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    db = Database(_pg_schema_url(schema))
    db.create_schema()
    yield db
    db.dispose()
    with admin.engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite database file at the newest schema revision, made once per test process: each test's database
    is a copy of it, since running the migrations cost every test 50 ms."""
    path = tmp_path_factory.mktemp("schema") / "schema.db"
    database = Database(f"sqlite:///{path}")
    database.create_schema()
    database.dispose()  # the last connection to close folds the WAL into the file
    return path


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        path = tmp_path / "test.db"
        shutil.copyfile(request.getfixturevalue("sqlite_schema"), path)
        database = Database(f"sqlite:///{path}")
        database.create_schema()  # finds it current, as every start on an existing database does
        yield database
        database.dispose()
        return
    database = request.getfixturevalue("pg_database")
    # DELETE beats TRUNCATE by ten times on tables this small (TRUNCATE has a fixed cost per table).
    with database.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
    yield database


@pytest.fixture
def settings(db: Database, tmp_path: Path) -> Settings:
    return Settings(database_url=db.url, admin_token=ADMIN_TOKEN, data_dir=tmp_path)


@pytest.fixture
def app(settings: Settings, db: Database):  # type: ignore[no-untyped-def]
    return create_app(settings, db=db)


@pytest.fixture
def client(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(app, base_url="http://testserver") as c:
        yield c


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


# ---- the browser (tests/e2e, and the SMART consent page's test) ---------------------------------------
# One Playwright at a time in a test process: its sync API cannot start while another runs, so every browser
# test shares this fixture.  Per module, not per session: while Playwright runs, it holds the thread's event
# loop and ``asyncio.run`` (the CDS Hooks client's sync callers) fails in whatever test comes next.

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str | None:
    configured = os.environ.get("EHR_SANDBOX_CHROMIUM")
    if configured:
        return configured
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from playwright import sync_api

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
