"""``ehr-sandbox db upgrade|current|check|revision|citus-sql|reindex``: the schema's migrations from the command line,
and the search index worked out again (``reindex``).

Every process upgrades the schema as it starts; ``db upgrade`` is the same step for operators who run it once,
as a deploy step, before starting the new version.  See docs/migrations.md.  ``db citus-sql`` prints what to run on
a Citus coordinator after an upgrade (``sharding.py``, docs/scaling.md).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from sandbox.cli import CliError, database_error
from sandbox.config import Settings
from sandbox.store import migrations, sharding
from sandbox.store.database import Database


@contextmanager
def _database(*, must_exist: bool) -> Iterator[Database]:
    """The database of ``$EHR_SANDBOX_DATABASE_URL``, with its failures as one-line errors.  ``must_exist``:
    do not create an SQLite file by looking at it."""
    url = Settings.from_env().database_url
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise CliError(f"'{url}' is not a database URL; check EHR_SANDBOX_DATABASE_URL") from None
    path = parsed.database
    sqlite_file = parsed.get_backend_name() == "sqlite" and path and path != ":memory:"
    if must_exist and sqlite_file and not Path(path).exists():
        raise CliError(f"there is no database at {path}; check EHR_SANDBOX_DATABASE_URL")
    try:
        db = Database(url)
    except ArgumentError as exc:  # an unknown dialect or driver
        raise database_error(exc) from None
    try:
        yield db
    except OperationalError as exc:
        raise database_error(exc) from None
    finally:
        db.dispose()


def _describe(revisions: tuple[str, ...]) -> str:
    return ", ".join(revisions) if revisions else "none"


def _upgrade(_args: argparse.Namespace) -> None:
    with _database(must_exist=False) as db:
        before = db.create_schema()
    head = migrations.head()
    if before == (head,):
        print(f"the database schema is up to date: revision {head}")
    else:
        print(f"upgraded the database schema from revision {_describe(before)} to {head}")


def _state(db: Database) -> tuple[tuple[str, ...], bool]:
    """The revisions the database is at, and whether it holds any of our tables."""
    with db.read() as conn:
        return migrations.current_revisions(conn), migrations.holds_tables(conn)


def _current(_args: argparse.Namespace) -> None:
    with _database(must_exist=True) as db:
        current, has_tables = _state(db)
    head = migrations.head()
    if current == (head,):
        print(f"{head} (head)")
    elif migrations.unknown(current):
        print(f"{_describe(current)} (newer than this ehr-sandbox, whose newest revision is {head})")
    elif current:
        print(f"{_describe(current)} (behind {head}: the next start, or `ehr-sandbox db upgrade`, upgrades it)")
    elif has_tables:
        print("none (tables made before migrations: the next start, or `ehr-sandbox db upgrade`, adopts them)")
    else:
        print("none (empty: the next start, or `ehr-sandbox db upgrade`, creates the schema)")


def _check(_args: argparse.Namespace) -> int:
    with _database(must_exist=True) as db:
        current, _has_tables = _state(db)
        with db.read() as conn:
            found = migrations.differences(conn)
    head = migrations.head()
    if current != (head,):
        found.insert(0, f"the database is at revision {_describe(current)}, not {head}: run `ehr-sandbox db upgrade`")
    if not found:
        print(f"the database schema matches schema.py at revision {head}")
        return 0
    for line in found:
        print(line)
    return 1


def _revision(args: argparse.Namespace) -> None:
    try:
        path = migrations.new_revision(args.message)
    except migrations.SchemaError as exc:
        raise CliError(str(exc)) from None
    print(f"wrote {path}")
    print("review it, run `ruff format` on it, and run tests/sandbox/store/test_migrations.py on both backends")


def _reindex(args: argparse.Namespace) -> None:
    from sandbox.fhir.resource_types import resource_types
    from sandbox.fhir.search_params import registry
    from sandbox.store.reindex import reindex
    from sandbox.store.repository import Repository

    unknown = sorted(set(args.type) - resource_types())
    if unknown:
        raise CliError(f"unknown resource type {', '.join(repr(t) for t in unknown)}")
    with _database(must_exist=True) as db:
        db.create_schema()
        done = reindex(db, Repository(registry()), types=args.type)
    print(f"reindexed {_count(done.resources, 'resource')} in {_count(done.layers, 'layer')}")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _citus_sql(_args: argparse.Namespace) -> None:
    try:
        print(sharding.citus_sql(), end="")
    except sharding.PlanError as exc:
        raise CliError(str(exc)) from None


def add_db_commands(sub: Any) -> None:
    """Register the ``db`` command group on the main parser."""
    db = sub.add_parser("db", help="the database schema: upgrade, current, check, revision, citus-sql, reindex")
    dsub = db.add_subparsers(dest="db_command", required=True)
    commands: list[tuple[str, str, Callable[[argparse.Namespace], int | None]]] = [
        ("upgrade", "upgrade the schema to this version's newest revision (every start does it too)", _upgrade),
        ("current", "print the schema revision the database is at", _current),
        ("check", "compare the database with sandbox/store/schema.py; exit 1 listing any differences", _check),
        (
            "citus-sql",
            "print the SQL that gives every table its role on a Citus coordinator (docs/scaling.md)",
            _citus_sql,
        ),
    ]
    for name, help_text, func in commands:
        dsub.add_parser(name, help=help_text).set_defaults(func=func)
    reindex = dsub.add_parser(
        "reindex", help="work out the search index rows of every stored resource again (docs/migrations.md)"
    )
    reindex.add_argument(
        "--type", action="append", default=[], metavar="TYPE", help="only resources of this type (repeatable)"
    )
    reindex.set_defaults(func=_reindex)
    revision = dsub.add_parser(
        "revision", help="(developers, in a source checkout) write the next migration from how schema.py changed"
    )
    revision.add_argument("message", help="what the migration changes, e.g. 'add users.locale'")
    revision.set_defaults(func=_revision)
