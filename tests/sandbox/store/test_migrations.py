"""Schema migrations: the revisions make exactly ``schema.py``'s schema, databases made before migrations are
adopted, later revisions apply to databases holding data, and processes starting together take turns."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Column, String, Table, event, inspect, select, text

from sandbox.fhir.search_params import registry
from sandbox.hl7v2 import TRANSLATOR
from sandbox.store import migrations, sandboxes
from sandbox.store.database import Database, _lock_key
from sandbox.store.repository import Actor, Repository
from sandbox.store.schema import layers, metadata, outbox, outbox_cursors, users
from tests.conftest import BACKENDS, PG_URL, _pg_schema_url

Fresh = Callable[[], AbstractContextManager[Database]]


@pytest.fixture(params=BACKENDS)
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Fresh:
    """Makes empty databases: SQLite files, or PostgreSQL schemas of their own (these tests change the schema, so
    they cannot share the suite's)."""

    @contextmanager
    def make() -> Iterator[Database]:
        if request.param == "sqlite":
            db = Database(f"sqlite:///{tmp_path / f'{uuid.uuid4().hex}.db'}")
            try:
                yield db
            finally:
                db.dispose()
            return
        if not PG_URL:
            pytest.skip("EHR_SANDBOX_TEST_DATABASE_URL is not set")
        schema = f"mig_{uuid.uuid4().hex[:12]}"
        admin = Database(PG_URL)
        with admin.engine.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        db = Database(_pg_schema_url(schema))
        try:
            yield db
        finally:
            db.dispose()
            with admin.engine.begin() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            admin.dispose()

    return make


def _made_before_migrations(db: Database) -> None:
    """A database as every start made it before migrations (``metadata.create_all``): the baseline revision's
    tables and no ``alembic_version``.  The baseline is that schema (the next test holds it to ``create_all``
    for as long as schema.py has not moved on from it)."""
    from alembic import command

    with db.write() as conn:
        command.upgrade(migrations._config(conn), migrations.BASELINE)
        conn.execute(text("DROP TABLE alembic_version"))


def _revision(conn: Any) -> list[str]:
    return list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())


def _reflected(db: Database) -> dict[str, Any]:
    """Everything the database says about our tables: columns (type, nullability, default: PostgreSQL's SERIAL
    shows there), primary keys, indexes and unique constraints."""
    with db.read() as conn:
        found = inspect(conn)
        return {
            "tables": sorted(set(found.get_table_names()) - {"alembic_version"}),
            **{
                name: {
                    "columns": [
                        (c["name"], str(c["type"]), c["nullable"], c.get("default")) for c in found.get_columns(name)
                    ],
                    "primary_key": found.get_pk_constraint(name)["constrained_columns"],
                    "indexes": sorted(
                        (i["name"], tuple(i["column_names"]), i["unique"]) for i in found.get_indexes(name)
                    ),
                    "unique": sorted(
                        (u["name"] or "", tuple(u["column_names"])) for u in found.get_unique_constraints(name)
                    ),
                }
                for name in sorted(set(metadata.tables) & set(found.get_table_names()))
            },
        }


# ---- the revisions themselves ------------------------------------------------------------------------------------


def test_revisions_are_numbered_files_in_one_line_and_the_highest_is_the_head() -> None:
    script = ScriptDirectory.from_config(migrations._config())
    files = sorted(p.name for p in migrations.VERSION_LOCATIONS[0].glob("*.py") if p.name != "__init__.py")
    assert files and files[0] == "0001_baseline.py"
    previous = None
    for name in files:
        assert migrations._REVISION_FILE.fullmatch(name), f"{name}: revision files are named NNNN_what_it_does.py"
        revision = script.get_revision(name[:4])
        assert revision is not None and Path(revision.path).name == name
        assert revision.down_revision == previous, f"{name} must follow {previous}"
        previous = revision.revision
    assert script.get_heads() == [migrations.head()] == [previous]


def test_a_fresh_database_upgraded_to_head_has_exactly_the_schema_of_schema_py(fresh: Fresh) -> None:
    with fresh() as migrated, fresh() as created:
        assert migrated.create_schema() == ()
        with migrated.read() as conn:
            assert migrations.differences(conn) == []
            assert _revision(conn) == [migrations.head()]
        # Stricter than Alembic's comparison, which skips defaults (SERIAL) and unnamed details: what the old
        # `create_all` makes, reflected, is what the migrations make, reflected.
        with created.write() as conn:
            metadata.create_all(conn)
        assert _reflected(migrated) == _reflected(created)


def test_an_up_to_date_database_costs_one_read(fresh: Fresh) -> None:
    with fresh() as db:
        db.create_schema()
        statements: list[str] = []
        event.listen(db.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
        assert db.create_schema() == (migrations.head(),)
        assert statements == ["SELECT version_num FROM alembic_version"]


def test_a_dropped_schema_is_made_again_at_the_next_start(fresh: Fresh) -> None:
    with fresh() as db:
        db.create_schema()
        db.drop_schema()
        with db.read() as conn:
            assert inspect(conn).get_table_names() == []
        assert db.create_schema() == ()
        with db.read() as conn:
            assert migrations.differences(conn) == []


def test_a_start_on_an_up_to_date_database_does_not_import_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'current.db'}"
    db = Database(url)
    db.create_schema()
    db.dispose()
    code = "import sys; from sandbox.store.database import Database; Database(sys.argv[1]).create_schema(); "
    code += "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')))"
    done = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# ---- databases made before migrations ----------------------------------------------------------------------------


def _write_patient(db: Database, rid: str, family: str) -> None:
    repo = Repository(registry())
    with db.write() as conn:
        if not db.layer_exists(conn, "b"):
            sandboxes.create_baseline(conn, "B", baseline_id="b")
        view = sandboxes.baseline_view_for_loading(conn, "b")
        body = {"resourceType": "Patient", "name": [{"family": family}]}
        repo.write(conn, view, body, Actor("loader", "loader"), rtype="Patient", rid=rid, method="PUT")


def _patients(db: Database) -> list[str]:
    with db.read() as conn:
        rows = conn.execute(text("SELECT id FROM resources WHERE layer_id = 'b' ORDER BY id")).scalars()
        return list(rows)


def test_a_database_made_before_migrations_is_stamped_and_keeps_working(fresh: Fresh) -> None:
    with fresh() as db:
        _made_before_migrations(db)
        _write_patient(db, "p1", "Before")
        assert db.create_schema() == ()
        with db.read() as conn:
            assert _revision(conn) == [migrations.head()]
            assert migrations.differences(conn) == []
        _write_patient(db, "p2", "After")
        assert _patients(db) == ["p1", "p2"]
        assert db.create_schema() == (migrations.head(),)


def test_revision_0004_puts_the_value_before_the_parameter_in_the_token_and_quantity_indexes(fresh: Fresh) -> None:
    """A store of the release before (0003), holding indexed resources and, on SQLite, planner statistics: the
    upgrade rebuilds both indexes with the new columns, the statistics of the new ones with them, and the rows
    are found through them as before."""
    from alembic import command

    from sandbox.fhir.interactions import Interactions

    with fresh() as db:
        with db.write() as conn:
            command.upgrade(migrations._config(conn), "0003")
        reg = registry()
        fhir = Interactions(Repository(reg), reg)
        quantity = {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}
        body = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "valueQuantity": quantity,
        }
        with db.write() as conn:
            sandboxes.create_baseline(conn, "B", baseline_id="b")
            view = sandboxes.baseline_view_for_loading(conn, "b")
            fhir.repo.write(conn, view, body, Actor("loader", "loader"), rtype="Observation", rid="o1", method="PUT")
        if db.is_sqlite:
            db.analyze()
        assert db.create_schema() == ("0003",)
        indexes = {name: columns for name, columns, _ in _reflected(db)["sp_token"]["indexes"]}
        indexes.update({name: columns for name, columns, _ in _reflected(db)["sp_quantity"]["indexes"]})
        assert indexes["ix_sp_token_value"] == ("layer_id", "resource_type", "code", "resource_id", "system", "param")
        assert indexes["ix_sp_quantity_value"] == ("layer_id", "resource_type", "code", "low", "resource_id", "param")
        with db.read() as conn:
            if db.is_sqlite:
                analyzed = set(conn.execute(text("SELECT idx FROM sqlite_stat1")).scalars())
                assert {"ix_sp_token_value", "ix_sp_quantity_value"} <= analyzed
            for query in (
                [("code", "http://loinc.org|8867-4")],
                [("code", "8867-4")],
                [("value-quantity", "gt70|http://unitsofmeasure.org|/min")],
            ):
                assert [m.id for m in fhir.search(conn, view, "Observation", query).matches] == ["o1"], query
            missed = fhir.search(conn, view, "Observation", [("value-quantity", "gt80|http://unitsofmeasure.org|/min")])
            assert missed.matches == []


@pytest.mark.parametrize(
    ("marked_done", "cursor_at"),
    [([1, 2, 3, 4, 5], 5), ([1, 2, 4], 2), ([], 0)],
    ids=["all-translated", "some-translated", "none-translated"],
)
def test_revision_0005_starts_the_translator_s_cursor_where_its_marks_left_off(
    fresh: Fresh, marked_done: list[int], cursor_at: int
) -> None:
    """Before 0005 the HL7 v2 translator marked each event done; after it, the translator follows a cursor, which
    starts just before the oldest event not marked (nothing translated twice, nothing skipped), and the index of
    events not done goes."""
    from alembic import command

    with fresh() as db:
        with db.write() as conn:
            command.upgrade(migrations._config(conn), "0004")
            event = {"layer_id": "default", "resource_type": "Patient", "version_id": 1, "action": "create"}
            event |= {"actor": "a", "route": "fhir", "created_at": "2026-01-01T00:00:00.000000"}
            conn.execute(outbox.insert(), [{**event, "resource_id": f"p{n}"} for n in range(5)])
            conn.execute(
                outbox.update().where(outbox.c.seq.in_(marked_done)).values(done_at="2026-01-01T00:00:01.000000")
            )
        assert db.create_schema() == ("0004",)
        with db.read() as conn:
            cursor = conn.execute(select(outbox_cursors.c.last_seq).where(outbox_cursors.c.consumer == TRANSLATOR))
            assert cursor.scalar_one() == cursor_at
        assert "ix_outbox_pending" not in {name for name, _, _ in _reflected(db)["outbox"]["indexes"]}


def test_revision_0006_indexes_the_stored_resources_patient_and_code_together(
    fresh: Fresh, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store of the release before (0005), whose write path made no combined rows: the upgrade makes exactly the
    rows this release's write path makes for the same resources, in their own layers, and searches find them."""
    from alembic import command

    from sandbox.fhir.interactions import Interactions
    from sandbox.store import indexer
    from sandbox.store.layers import View
    from sandbox.store.schema import sp_combo

    def obs(rid: str, subject: str, *codes: tuple[str | None, str]) -> dict[str, Any]:
        coding = [{"code": code} | ({"system": system} if system else {}) for system, code in codes]
        return {"resourceType": "Observation", "id": rid, "status": "final", "code": {"coding": coding}} | {
            "subject": {"reference": subject}
        }

    loinc = "http://loinc.org"
    resources = [
        obs("o1", "Patient/p1", (loinc, "8867-4"), ("http://snomed.info/sct", "364075005")),
        obs("o2", "Patient/p2", (None, "hr")),
        obs("o3", "Group/g1", (loinc, "8867-4")),
        {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}, "code": {"text": "x"}},
    ]
    reg = registry()
    fhir = Interactions(Repository(reg), reg)
    with fresh() as db:
        with db.write() as conn:
            command.upgrade(migrations._config(conn), "0005")
        monkeypatch.setattr(indexer, "COMBOS", {})  # the release before had none
        with db.write() as conn:
            sandboxes.create_baseline(conn, "B", baseline_id="b")
            sandboxes.create_sandbox(conn, "S", "b", sandbox_id="s")
            for layer in ("b", "s"):
                view = View(layer, (layer,))
                for resource in resources:
                    rtype, rid = resource["resourceType"], resource["id"]
                    fhir.repo.write(conn, view, resource, Actor("loader", "loader"), rtype=rtype, rid=rid, method="PUT")
        monkeypatch.undo()
        assert db.create_schema() == ("0005",)
        with db.read() as conn:
            found = sorted(tuple(row) for row in conn.execute(select(sp_combo)))
        made = sorted(
            (layer, r["resourceType"], r["id"], *row[-2:], *row[:-2])
            for layer in ("b", "s")
            for r in resources
            for row in indexer.index_tuples(reg, r).get("combo", [])
        )
        assert found == made
        assert len(made) == 6  # o1's two codes and o2's one, in each layer; o3 names no patient, c1 no code
        with db.read() as conn:
            view = View("s", ("s", "b"))
            assert [
                m.id for m in fhir.search(conn, view, "Observation", [("patient", "p1"), ("code", "8867-4")]).matches
            ] == ["o1"]
            assert [
                m.id for m in fhir.search(conn, view, "Observation", [("patient", "p2"), ("code", "|hr")]).matches
            ] == ["o2"]


def test_a_database_from_an_older_release_gains_the_tables_and_indexes_it_lacks(fresh: Fresh) -> None:
    """Releases before migrations added tables (and a start created them): a database made by an older one lacks
    some, and is adopted the way a start used to treat it."""
    with fresh() as db:
        _made_before_migrations(db)
        with db.read() as conn:
            added_since = migrations.differences(conn)  # what the revisions after the baseline add
        with db.write() as conn:
            conn.execute(text("DROP TABLE smart_client_owners"))
            conn.execute(text("DROP INDEX ix_versions_updated"))
        with db.read() as conn:
            assert sorted(migrations.differences(conn)) == sorted(
                [
                    "missing from the database: index ix_versions_updated on resource_versions",
                    "missing from the database: index ix_smart_client_owners_user_id on smart_client_owners",
                    "missing from the database: table smart_client_owners",
                    *added_since,
                ]
            )
        db.create_schema()
        with db.read() as conn:
            assert migrations.differences(conn) == []
            assert _revision(conn) == [migrations.head()]


def test_a_database_made_before_migrations_that_differs_is_refused_and_left_as_it_was(fresh: Fresh) -> None:
    with fresh() as db:
        _made_before_migrations(db)
        with db.write() as conn:
            conn.execute(text("ALTER TABLE layers DROP COLUMN last_activity"))
            conn.execute(text("DROP TABLE smart_client_owners"))
            conn.execute(text("DROP TABLE cohort_packs"))
            conn.execute(
                text(
                    "CREATE TABLE cohort_packs (cohort_id VARCHAR(64) NOT NULL, pack_id VARCHAR(64) NOT NULL, "
                    "assigned_at VARCHAR(10), PRIMARY KEY (cohort_id, pack_id))"
                )
            )
        before = _reflected(db)
        with pytest.raises(migrations.SchemaError) as refused:
            db.create_schema()
        message = str(refused.value)
        assert message.startswith("the tables were made before migrations and do not match this version's schema")
        assert "missing from the database: column layers.last_activity" in message
        assert "column cohort_packs.assigned_at differs in type: the database has VARCHAR(10)" in message
        assert "column cohort_packs.assigned_at differs in nullable: the database has True, schema.py False" in message
        assert _reflected(db) == before  # not even the missing table was created, and nothing was stamped
        with db.read() as conn:
            assert "alembic_version" not in inspect(conn).get_table_names()


def test_a_database_upgraded_by_a_newer_version_is_refused(fresh: Fresh) -> None:
    with fresh() as db:
        db.create_schema()
        with db.write() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        with pytest.raises(migrations.SchemaError, match="revision 9999, which this ehr-sandbox does not know"):
            db.create_schema()


# ---- later revisions ---------------------------------------------------------------------------------------------

ADD_LOCALE = """
import sqlalchemy as sa
from alembic import op

revision = "{number}"
down_revision = "{previous}"


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("locale", sa.String(16), nullable=False, server_default="en"))
    {then}
"""


@pytest.fixture
def later_revisions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str], None]:
    """Adds a test-only revision after the real head, in a directory of its own: nothing is shipped."""
    extra = tmp_path / "later-versions"
    extra.mkdir()
    monkeypatch.setattr(migrations, "VERSION_LOCATIONS", [*migrations.VERSION_LOCATIONS, extra])
    shipped_head = migrations.head()

    def add(slug: str, then: str = "") -> None:
        number = f"{int(shipped_head) + 1:04d}"
        source = ADD_LOCALE.format(number=number, previous=shipped_head, then=then)
        (extra / f"{number}_{slug}.py").write_text(source)

    return add


def _add_user(db: Database) -> None:
    with db.write() as conn:
        conn.execute(users.insert().values(id="u1", name="Ann", email="ann@x.invalid", role="trainee", created_at="t"))


def _user_row(conn: Any) -> dict[str, Any]:
    return dict(conn.execute(text("SELECT * FROM users")).mappings().one())


def test_a_later_revision_adds_a_column_to_a_database_holding_data(
    fresh: Fresh, later_revisions: Callable[..., None]
) -> None:
    with fresh() as db:
        shipped = migrations.head()
        db.create_schema()
        _add_user(db)
        _write_patient(db, "p1", "Kept")
        later_revisions("add_users_locale")
        assert db.create_schema() == (shipped,)
        with db.read() as conn:
            assert _revision(conn) == [migrations.head()] != [shipped]
            row = _user_row(conn)
            assert (row["id"], row["email"], row["locale"]) == ("u1", "ann@x.invalid", "en")
        assert _patients(db) == ["p1"]
        assert db.create_schema() == (migrations.head(),)


def test_a_later_revision_that_fails_leaves_the_database_as_it_was(
    fresh: Fresh, later_revisions: Callable[..., None]
) -> None:
    with fresh() as db:
        shipped = migrations.head()
        db.create_schema()
        _add_user(db)
        later_revisions("add_users_locale_then_fail", then='raise RuntimeError("half-way")')
        with pytest.raises(RuntimeError, match="half-way"):
            db.create_schema()
        with db.read() as conn:
            assert _revision(conn) == [shipped]
            assert "locale" not in _user_row(conn)  # the column added before the failure was rolled back


def test_a_revision_written_by_db_revision_makes_the_database_match_schema_py_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The developers' loop: change schema.py, `ehr-sandbox db revision`, and the revision it writes takes an
    existing database to the new schema (here a table added to the metadata for the test, then taken out)."""
    versions = tmp_path / "versions"
    shutil.copytree(migrations.VERSION_LOCATIONS[0], versions, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(migrations, "VERSION_LOCATIONS", [versions])
    db = Database(f"sqlite:///{tmp_path / 'existing.db'}")
    db.create_schema()
    notes = Table("test_only_notes", metadata, Column("id", String(64), primary_key=True))
    try:
        with db.read() as conn:
            assert migrations.differences(conn) == ["missing from the database: table test_only_notes"]
        before = migrations.head()
        written = migrations.new_revision("add test-only notes")
        assert written.parent == versions and written.name.startswith(f"{int(before) + 1:04d}_")
        assert "op.create_table('test_only_notes'" in written.read_text().replace('"', "'")
        db.create_schema()
        with db.read() as conn:
            assert migrations.differences(conn) == []
    finally:
        metadata.remove(notes)
        db.dispose()


# ---- processes starting together ---------------------------------------------------------------------------------


@pytest.mark.postgres
def test_processes_starting_together_on_an_empty_postgresql_database_take_turns(tmp_path: Path) -> None:
    """Three `ehr-sandbox db upgrade` processes (the same step every server takes at start) meet at the schema lock
    on an empty schema: all succeed, one of them made the schema.  The test holds the lock until all three wait
    on it, so they do start together."""
    if not PG_URL:
        pytest.skip("EHR_SANDBOX_TEST_DATABASE_URL is not set")
    from bench.processes import fresh_schema

    name = f"ehr-mig-{uuid.uuid4().hex[:8]}"
    with fresh_schema(PG_URL) as url:
        holder = Database(PG_URL)
        key = {"key": _lock_key("create_schema")}
        env = {k: v for k, v in os.environ.items() if not k.startswith("EHR_SANDBOX_")}
        env["EHR_SANDBOX_DATABASE_URL"] = f"{url}&application_name={name}"
        try:
            with holder.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as lock:
                lock.execute(text("SELECT pg_advisory_lock(:key)"), key)
                try:
                    processes = [
                        subprocess.Popen(
                            [sys.executable, "-m", "sandbox.cli", "db", "upgrade"],
                            env=env,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT,
                            text=True,
                        )
                        for _ in range(3)
                    ]
                    waiting = text(
                        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                        "WHERE l.locktype = 'advisory' AND NOT l.granted AND a.application_name = :name"
                    )
                    deadline = time.monotonic() + 60
                    while lock.execute(waiting, {"name": name}).scalar() < 3:
                        assert time.monotonic() < deadline, [p.poll() for p in processes]
                        assert all(p.poll() is None for p in processes), [p.communicate() for p in processes]
                        time.sleep(0.05)
                finally:
                    lock.execute(text("SELECT pg_advisory_unlock(:key)"), key)
            outputs = [p.communicate(timeout=60)[0] for p in processes]
            assert [p.returncode for p in processes] == [0, 0, 0], outputs
            made = [o for o in outputs if "upgraded the database schema from revision none" in o]
            assert len(made) == 1 and sum("is up to date" in o for o in outputs) == 2, outputs
            db = Database(url)
            with db.read() as conn:
                assert _revision(conn) == [migrations.head()]
                assert migrations.differences(conn) == []
                assert conn.execute(select(layers.c.id)).all() == []
            db.dispose()
        finally:
            holder.dispose()
