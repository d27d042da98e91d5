"""Schema migrations: Alembic revisions in ``versions/``, run from code (there is no alembic.ini).

Every process brings the database to the newest revision as it starts (``Database.create_schema``, which holds
the lock that makes processes starting together take turns); operators who prefer a deploy step run
``ehr-sandbox db upgrade`` first, and the processes then find nothing to do.  See docs/migrations.md.

Revisions are numbered: ``versions/0002_add_something.py`` holds revision ``"0002"``, whose ``down_revision`` is
``"0001"``.  So the head is the highest number among the file names, and a start on an up-to-date database
reads one row and never imports Alembic (which alone takes a tenth of a second).
``tests/sandbox/store/test_migrations.py`` holds the files to that rule.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, create_engine, inspect, text
from sqlalchemy.exc import DBAPIError

from sandbox.store.schema import metadata

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger("ehr_sandbox")

SCRIPT_LOCATION = Path(__file__).parent
# Where revisions are read from.  A list, so that a test can add a directory of revisions of its own.
VERSION_LOCATIONS: list[Path] = [SCRIPT_LOCATION / "versions"]
# The first revision: the schema as it stood when migrations began, which is what every start made (with
# ``metadata.create_all``) before.  It creates each table and index only if it is missing, so a database made
# before migrations is adopted by the ordinary upgrade (see ``upgrade``).
BASELINE = "0001"

_REVISION_FILE = re.compile(r"(\d{4})_\w+\.py")


class SchemaError(Exception):
    """The database's schema cannot be brought to this version's; the message says why, on one line."""


def head() -> str:
    """The newest revision: the highest number among the revision files."""
    numbers = [
        found.group(1)
        for location in VERSION_LOCATIONS
        for path in location.iterdir()
        if (found := _REVISION_FILE.fullmatch(path.name))
    ]
    return max(numbers)


def is_current(conn: Connection) -> bool:
    """True when the database says it is at the head revision: one row read, nothing of Alembic imported.

    Any error (no ``alembic_version`` table yet, a busy database) answers False, and the caller takes the slow
    path under the lock, which reports a real problem properly.
    """
    try:
        stored = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    except DBAPIError:
        return False
    return stored == [head()]


def upgrade(conn: Connection) -> tuple[str, ...]:
    """Bring the database to the head revision in ``conn``'s transaction, which the caller holds the schema lock
    around; returns the revisions it was at before (none: empty, or made before migrations).

    Three cases.  An empty database runs every revision.  A database made before migrations (our tables, no
    ``alembic_version``) runs them too: the baseline creates only what is missing, as every start used to, and
    stamps it; then the result must match ``schema.py`` exactly, or the whole transaction is undone and a
    ``SchemaError`` lists the differences.  A database already at the head is left alone (``is_current``
    answers that before any lock, in one read).
    """
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.util import CommandError

    newest = head()
    current = MigrationContext.configure(conn).get_current_heads()
    if current == (newest,):
        return current
    made_before_migrations = not current and holds_tables(conn)
    if newer := unknown(current):
        raise SchemaError(
            f"the database is at schema revision {', '.join(newer)}, which this ehr-sandbox does not know (its "
            f"newest is {newest}): a newer version has upgraded it, so run that version"
        )
    config = _config(conn)
    try:
        command.upgrade(config, "head")
    except CommandError as exc:
        raise SchemaError(f"cannot upgrade the database schema: {exc}") from None
    if made_before_migrations:
        found = differences(conn)
        if found:
            raise SchemaError(
                "the tables were made before migrations and do not match this version's schema, so nothing was "
                f"changed: {'; '.join(found)}"
            )
    before = ", ".join(current) or ("none (tables made before migrations)" if made_before_migrations else "none")
    log.info("upgraded the database schema from revision %s to %s", before, newest)
    return current


def unknown(revisions: tuple[str, ...]) -> list[str]:
    """The revisions this version has no file for (a newer version upgraded the database)."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    script = ScriptDirectory.from_config(_config())
    found = []
    for revision in revisions:
        try:
            script.get_revision(revision)
        except CommandError:
            found.append(revision)
    return found


def holds_tables(conn: Connection) -> bool:
    """Whether any of ``schema.py``'s tables exist (with no revision: a database made before migrations)."""
    return bool(set(inspect(conn).get_table_names()) & set(metadata.tables))


def current_revisions(conn: Connection) -> tuple[str, ...]:
    """The revisions ``alembic_version`` holds: none on an empty database or one made before migrations."""
    from alembic.runtime.migration import MigrationContext

    return tuple(MigrationContext.configure(conn).get_current_heads())


def differences(conn: Connection) -> list[str]:
    """How the database's tables differ from ``schema.py``, one line each; empty when they match.

    Tables that ``schema.py`` does not name are left out: the database may hold other things.
    """
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(conn, opts={"include_name": _ours})
    return [_describe(diff) for diff in compare_metadata(context, metadata)]


def new_revision(message: str) -> Path:
    """Write the next revision, autogenerated from how ``schema.py`` differs from the migrations' head (for
    developers, in a source checkout; review what it wrote).  Returns the new file."""
    import tempfile

    from alembic import command

    if not message.strip():
        raise SchemaError("a revision needs a message saying what it changes")
    number = f"{int(head()) + 1:04d}"
    with tempfile.TemporaryDirectory(prefix="ehr-sandbox-revision-") as scratch:
        engine = create_engine(f"sqlite:///{Path(scratch) / 'head.db'}")
        try:
            with engine.begin() as conn:
                config = _config(conn)
                command.upgrade(config, "head")
                written = command.revision(
                    config, message, autogenerate=True, rev_id=number, version_path=str(VERSION_LOCATIONS[0])
                )
        finally:
            engine.dispose()
    assert written is not None and not isinstance(written, list)
    return Path(written.path)


def _config(conn: Connection | None = None) -> Config:
    """Alembic's configuration, in code; with ``conn`` for commands that run env.py on it."""
    from alembic.config import Config

    config = Config()
    # ConfigParser interpolates '%': escape it in paths.
    config.set_main_option("script_location", str(SCRIPT_LOCATION).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    locations = os.pathsep.join(str(location) for location in VERSION_LOCATIONS)
    config.set_main_option("version_locations", locations.replace("%", "%%"))
    if conn is not None:
        config.attributes["connection"] = conn
    return config


def _ours(name: str | None, type_: str, _parents: dict[str, str | None]) -> bool:
    return type_ != "table" or name in metadata.tables


def _describe(diff: Any) -> str:
    """One difference from Alembic's comparison, in words: "add" means schema.py has it and the database does
    not; "remove", the other way round."""
    if isinstance(diff, list):  # changes to one column come as a list
        return "; ".join(_describe(change) for change in diff)
    kind, *rest = diff
    where = {"add": "missing from the database", "remove": "in the database, not in schema.py"}
    action, _, thing = kind.partition("_")
    if action in where:
        obj = rest[-1]
        if thing == "column":
            return f"{where[action]}: column {rest[1]}.{obj.name}"
        table = getattr(obj, "table", None)
        name = obj.name if table is None or obj is table else f"{obj.name or 'unnamed'} on {table.name}"
        return f"{where[action]}: {thing} {name}"
    if action == "modify":
        _schema, table, column, _existing, in_database, in_schema = rest
        return f"column {table}.{column} differs in {thing}: the database has {in_database}, schema.py {in_schema}"
    return str(diff)
