"""``ehr-sandbox db upgrade|current|check|revision``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from sandbox.cli import main
from sandbox.store import migrations
from sandbox.store.database import Database

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    """Run one command with ``EHR_SANDBOX_DATABASE_URL`` set to ``url``: (exit status, stdout, stderr)."""

    def run(url: str, *argv: str) -> tuple[int, str, str]:
        monkeypatch.setenv("EHR_SANDBOX_DATABASE_URL", url)
        status = main(list(argv))
        out, err = capsys.readouterr()
        return status, out, err

    return run


def test_on_an_up_to_date_database_every_command_says_so(run: Run, db: Database) -> None:
    head = migrations.head()
    assert run(db.url, "db", "current") == (0, f"{head} (head)\n", "")
    assert run(db.url, "db", "check") == (0, f"the database schema matches schema.py at revision {head}\n", "")
    assert run(db.url, "db", "upgrade") == (0, f"the database schema is up to date: revision {head}\n", "")


def test_upgrade_creates_the_schema_of_a_new_database_and_current_reads_without_creating(
    run: Run, tmp_path: Path
) -> None:
    path = tmp_path / "new" / "ehr.db"
    url = f"sqlite:///{path}"
    status, out, err = run(url, "db", "current")
    assert (status, out) == (2, "")
    assert err == f"ehr-sandbox: there is no database at {path}; check EHR_SANDBOX_DATABASE_URL\n"
    assert run(url, "db", "check")[0] == 2
    assert not path.exists()
    upgraded = f"upgraded the database schema from revision none to {migrations.head()}\n"
    assert run(url, "db", "upgrade") == (0, upgraded, "")
    assert run(url, "db", "current")[1] == f"{migrations.head()} (head)\n"


def test_current_and_check_tell_an_empty_database_and_one_made_before_migrations(run: Run, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ehr.db'}"
    db = Database(url)
    with db.write() as conn:
        conn.execute(text("CREATE TABLE other_things (id INTEGER)"))  # not ours: still an empty database to us
    assert run(url, "db", "current")[1].startswith("none (empty: the next start")
    db.create_schema()
    with db.write() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(text("DROP INDEX ix_versions_updated"))
    db.dispose()
    assert run(url, "db", "current")[1].startswith("none (tables made before migrations: the next start")
    status, out, err = run(url, "db", "check")
    assert (status, err) == (1, "")
    assert out.splitlines() == [
        f"the database is at revision none, not {migrations.head()}: run `ehr-sandbox db upgrade`",
        "missing from the database: index ix_versions_updated on resource_versions",
    ]
    assert run(url, "db", "upgrade")[1] == f"upgraded the database schema from revision none to {migrations.head()}\n"
    assert run(url, "db", "check")[0] == 0


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://nobody@127.0.0.1:1/ehr", "ehr-sandbox: cannot use the database (connection failed: "),
        ("not a url", "ehr-sandbox: 'not a url' is not a database URL; check EHR_SANDBOX_DATABASE_URL"),
        ("nosuch://host/db", "ehr-sandbox: cannot use the database URL (Can't load plugin: sqlalchemy.dialects:"),
    ],
)
@pytest.mark.parametrize("command", ["upgrade", "current", "check"])
def test_a_database_that_cannot_be_used_is_one_line(run: Run, command: str, url: str, says: str) -> None:
    status, out, err = run(url, "db", command)
    assert (status, out) == (2, "")
    assert err.startswith(says) and err.count("\n") == 1


def test_a_database_upgraded_by_a_newer_version_stops_every_command_with_one_line(run: Run, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ehr.db'}"
    db = Database(url)
    db.create_schema()
    with db.write() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    db.dispose()
    for argv in (["db", "upgrade"], ["user", "list"]):
        status, out, err = run(url, *argv)
        assert (status, out) == (1, "")
        assert err.startswith("ehr-sandbox: the database is at schema revision 9999, which this ehr-sandbox does not")
        assert err.count("\n") == 1
    # The read-only commands still tell.
    newer = f"9999 (newer than this ehr-sandbox, whose newest revision is {migrations.head()})\n"
    assert run(url, "db", "current")[1] == newer
    assert run(url, "db", "check")[0] == 1


def test_revision_needs_a_message_and_writes_nothing_without_one(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "0001_baseline.py").write_text((migrations.VERSION_LOCATIONS[0] / "0001_baseline.py").read_text())
    monkeypatch.setattr(migrations, "VERSION_LOCATIONS", [versions])
    status, out, err = run("sqlite://", "db", "revision", "  ")
    assert (status, out) == (2, "")
    assert err == "ehr-sandbox: a revision needs a message saying what it changes\n"
    assert sorted(p.name for p in versions.iterdir()) == ["0001_baseline.py"]


@pytest.fixture
def kept_logging() -> Iterator[None]:
    """``serve`` and ``worker`` set up the root logger for a terminal; the tests after this one keep pytest's."""
    root, alembic = logging.getLogger(), logging.getLogger("alembic")
    handlers, level, alembic_level = root.handlers[:], root.level, alembic.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    alembic.setLevel(alembic_level)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://nobody@127.0.0.1:1/ehr", "ehr-sandbox: cannot use the database (connection failed: "),
        ("nosuch://host/db", "ehr-sandbox: cannot use the database URL (Can't load plugin: sqlalchemy.dialects:"),
    ],
)
@pytest.mark.parametrize("argv", [["serve", "--no-demo"], ["worker"], ["sandbox", "list"]])
def test_the_long_running_commands_say_the_database_is_unusable_in_one_line(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], url: str, says: str, kept_logging: None
) -> None:
    monkeypatch.setenv("EHR_SANDBOX_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EHR_SANDBOX_ADMIN_TOKEN", "t" * 32)
    status, out, err = run(url, *argv)
    assert status == 2
    assert err.startswith(says) and err.count("\n") == 1
