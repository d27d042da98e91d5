"""The sharding plan (``sandbox/store/sharding.py``) against the schema, the migrated database, Citus's rules and
the SQL a sandbox's requests run.  Citus itself is not available here: these check what can be checked without it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    event,
    text,
)

from sandbox.cli import main
from sandbox.store import sandboxes, sharding
from sandbox.store.database import Database
from sandbox.store.repository import Actor
from sandbox.store.schema import metadata
from sandbox.store.sharding import ANCHOR, PLAN, Placement, Role
from tests.conftest import PG_URL, _pg_schema_url

DISTRIBUTED = {name: p.column for name, p in PLAN.items() if p.role is Role.DISTRIBUTED}


# ---- the plan against the schema ---------------------------------------------------------------------------


def test_every_table_of_the_schema_has_exactly_one_role_and_the_plan_nothing_else() -> None:
    missing = sharding.unplaced()
    assert not missing, (
        f"{missing}: add each to PLAN in sandbox/store/sharding.py as distributed (by its layer_id or sandbox_id, "
        "if its rows are one sandbox's data and every statement names the sandbox), reference (small and global) "
        "or local (claimed, swept or stamped across sandboxes), with the reason; then update docs/scaling.md"
    )
    assert sharding.unknown() == []
    assert sharding.problems() == []
    roles = [sharding.tables(role) for role in Role]
    assert sorted(name for names in roles for name in names) == sorted([*metadata.tables, sharding.ALEMBIC_VERSION])


def test_distributed_tables_lead_every_key_and_index_with_the_distribution_column() -> None:
    """What ``problems()`` enforces, spelt out on today's schema, so a change to the checker cannot hide a table."""
    for name, column in DISTRIBUTED.items():
        table = metadata.tables[name]
        assert column is not None
        assert str(table.c[column].type) == str(metadata.tables[ANCHOR].c["layer_id"].type), name
        key = [c.name for c in table.primary_key.columns]
        assert not key or key[0] == column, name
        assert all(i.columns.keys()[0] == column for i in table.indexes), name
        assert all(column in c.columns for c in table.constraints if isinstance(c, UniqueConstraint)), name
    keyless = {name for name in DISTRIBUTED if not metadata.tables[name].primary_key.columns}
    # The search index tables have no key: rows are added and deleted per resource, never updated one by one.
    kinds = ("string", "token", "reference", "date", "number", "quantity", "uri", "combo")
    assert keyless == {f"sp_{kind}" for kind in kinds}


def test_the_indexes_that_do_not_lead_with_the_layer_are_on_coordinator_tables() -> None:
    """Of the tables keyed by sandbox or layer, those with an index for a scan across sandboxes (queues due, rows
    expired, attempts by cohort) stay local: that scan is why."""
    keyed = [t for t in metadata.tables.values() if t.primary_key.columns.keys()[:1] in (["layer_id"], ["sandbox_id"])]
    not_leading = {
        table.name
        for table in keyed
        for index in table.indexes
        if index.columns.keys()[0] != table.primary_key.columns.keys()[0]
    }
    assert not_leading, "no index left that scans across sandboxes: reconsider the local tables"
    assert {PLAN[name].role for name in not_leading} == {Role.LOCAL}


def _toy(**extra: Any) -> tuple[MetaData, dict[str, Placement]]:
    """A small schema and plan for the checker's failure paths."""
    meta = MetaData()
    Table(
        "resources", meta, Column("layer_id", String(64), primary_key=True), Column("id", String(64), primary_key=True)
    )
    plan = {"resources": Placement(Role.DISTRIBUTED, "anchor", "layer_id"), **extra}
    return meta, plan


@pytest.mark.parametrize(
    ("make", "placement", "expected"),
    [
        (
            lambda m: Table("loose", m, Column("layer_id", String(64))),
            None,
            "loose: no role in sandbox/store/sharding.py; decide whether",
        ),
        (
            lambda m: Table("t", m, Column("id", String(64), primary_key=True), Column("layer_id", String(64))),
            Placement(Role.DISTRIBUTED, "", "layer_id"),
            "t: its primary key (id) must lead with layer_id",
        ),
        (
            lambda m: Table("t", m, Column("layer_id", String(64)), Column("email", String(64), unique=True)),
            Placement(Role.DISTRIBUTED, "", "layer_id"),
            "t: unique constraint (email) must include layer_id (Citus's rule)",
        ),
        (
            lambda m: Table(
                "t", m, Column("layer_id", String(64)), Column("due", String(32)), Index("ix_t_due", "due")
            ),
            Placement(Role.DISTRIBUTED, "", "layer_id"),
            "t: index ix_t_due (due) does not lead with layer_id",
        ),
        (
            lambda m: Table("t", m, Column("layer_id", String(200))),
            Placement(Role.DISTRIBUTED, "", "layer_id"),
            "t.layer_id is VARCHAR(200), not VARCHAR(64) like resources's",
        ),
        (
            lambda m: Table("t", m, Column("sandbox_id", String(64))),
            Placement(Role.DISTRIBUTED, "", "layer_id"),
            "t: distributed by 'layer_id', which it has no column of",
        ),
        (
            lambda m: Table(
                "t", m, Column("layer_id", String(64)), Column("rid", String(64), ForeignKey("resources.id"))
            ),
            Placement(Role.DISTRIBUTED, "", "layer_id"),
            "t -> resources: a foreign key between distributed tables must pair their distribution columns",
        ),
        (
            lambda m: Table("t", m, Column("rid", String(64), ForeignKey("resources.id"))),
            Placement(Role.REFERENCE, ""),
            "t -> resources: a foreign key from a reference table to a distributed one",
        ),
        (
            lambda m: Table("t", m, Column("rid", String(64), ForeignKey("resources.id"))),
            Placement(Role.LOCAL, ""),
            "t -> resources: a foreign key from a local table to a distributed one",
        ),
    ],
)
def test_the_checker_names_what_breaks_the_plan(
    make: Callable[[MetaData], Table], placement: Placement | None, expected: str
) -> None:
    meta, plan = _toy(**({"t": placement} if placement else {}))
    make(meta)
    found = sharding.problems(meta, plan)
    assert any(line.startswith(expected) for line in found), found
    with pytest.raises(sharding.PlanError, match="does not fit the schema"):
        sharding.citus_sql(meta, plan)


def test_a_foreign_key_within_the_colocation_group_on_the_distribution_column_is_fine() -> None:
    meta, plan = _toy(t=Placement(Role.DISTRIBUTED, "", "layer_id"))
    Table(
        "t",
        meta,
        Column("layer_id", String(64), primary_key=True),
        Column("rid", String(64)),
        ForeignKeyConstraint(["layer_id", "rid"], ["resources.layer_id", "resources.id"]),
    )
    assert sharding.problems(meta, plan) == []


def test_the_migrated_database_matches_the_plan(db: Database) -> None:
    """The live catalog after the migrations (SQLite, and PostgreSQL when configured): every table has a role and
    keeps the rules, alembic_version included."""
    reflected = MetaData()
    with db.read() as conn:
        reflected.reflect(conn)
    assert sharding.ALEMBIC_VERSION in reflected.tables
    assert sharding.problems(reflected) == []
    for name, column in DISTRIBUTED.items():
        key = [c.name for c in reflected.tables[name].primary_key.columns]
        assert key == [c.name for c in metadata.tables[name].primary_key.columns], name
        assert all(i.columns.keys()[0] == column for i in reflected.tables[name].indexes), name


# ---- ehr-sandbox db citus-sql -----------------------------------------------------------------------------


def _calls(sql: str, function: str) -> list[str]:
    return re.findall(rf"{function}\('(\w+)'", sql)


def test_citus_sql_places_each_table_once_reference_tables_first_then_the_anchor(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["db", "citus-sql"]) == 0
    sql = capsys.readouterr().out
    assert sql == sharding.citus_sql()
    distributed = _calls(sql, "create_distributed_table")
    reference = _calls(sql, "create_reference_table")
    local = _calls(sql, "citus_add_local_table_to_metadata")
    assert sorted(distributed) == sorted(DISTRIBUTED)
    assert len(distributed) == len(set(distributed))
    assert sorted(reference) == sharding.tables(Role.REFERENCE) and len(reference) == len(set(reference))
    assert sorted(local) == sharding.tables(Role.LOCAL) and len(local) == len(set(local))
    statements = [line for line in sql.splitlines() if line.startswith("SELECT ")]
    assert len(statements) == len(PLAN)
    first_distributed = next(i for i, s in enumerate(statements) if "create_distributed_table" in s)
    assert all("create_reference_table" in s for s in statements[:first_distributed])
    assert f"create_distributed_table('{ANCHOR}', 'layer_id')" in statements[first_distributed]
    for name, column in DISTRIBUTED.items():
        if name != ANCHOR:
            assert f"create_distributed_table('{name}', '{column}', colocate_with => '{ANCHOR}')" in sql
    # Each statement skips a table Citus already knows, so the script runs again after an upgrade adds tables.
    assert all("WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition" in s for s in statements)


def test_citus_sql_refuses_a_plan_that_misses_a_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = {name: p for name, p in PLAN.items() if name != "cds_calls"}
    monkeypatch.setattr(sharding, "PLAN", plan)
    assert main(["db", "citus-sql"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("ehr-sandbox: the sharding plan does not fit the schema: cds_calls: no role")
    assert err.count("\n") == 1


# ---- the SQL a sandbox runs ---------------------------------------------------------------------------------

_REFERENCE = re.compile(r"\b(?:FROM|JOIN|UPDATE|INTO)\s+(\w+)(?:\s+AS\s+(\w+))?|,\s*(\w+)(?:\s+AS\s+(\w+))?", re.I)
_PLACEHOLDER = re.compile(r"%\(\w+\)s(?:::\w+(?:\[\])?)?")  # psycopg's, with SQLAlchemy's casts: as SQLite's ?
_INSERT = re.compile(r"\bINSERT INTO (\w+)\s*\(([^)]*)\)", re.I)


def layer_filters(sql: str) -> list[tuple[str, int | None]]:
    """For each distributed table a statement reads or writes: (table, how many layers it names), None when it
    names none.  A filter is the distribution column compared with ``=`` or ``IN (...)``, or joined to another
    table's (a co-located join).  A heuristic over SQLAlchemy's SQL, not a parser: good for these statements."""
    sql = _PLACEHOLDER.sub("?", sql)
    found = []
    for table, names in _INSERT.findall(sql):  # the statement's own, or those of its WITH clauses
        columns = [c.strip().strip('"') for c in names.split(",")]
        if table in DISTRIBUTED:
            found.append((table, 1 if DISTRIBUTED[table] in columns else None))
    if re.match(r"\s*INSERT\b", sql, re.I):
        return found
    for match in _REFERENCE.finditer(sql):
        table = match.group(1) or match.group(3)
        after = sql[match.end() :].lstrip()
        if table not in DISTRIBUTED or after.startswith((".", "=", "(")):
            continue  # a column, an assignment or a function: not a table
        name = match.group(2) or match.group(4) or table
        column = rf"\b{name}\.{DISTRIBUTED[table]}\b"
        listed = re.search(column + r"\s+IN\s*\(([^()]*)\)", sql)
        if listed:
            found.append((table, listed.group(1).count(",") + 1))
        elif re.search(column + r"\s*=|=\s*" + column, sql):
            found.append((table, 1))
        else:
            found.append((table, None))
    return found


def test_the_filter_finder_sees_a_missing_or_two_layer_filter() -> None:
    assert layer_filters("SELECT resources.id FROM resources WHERE resources.resource_type = ?") == [
        ("resources", None)
    ]
    assert layer_filters("SELECT own.id FROM resources AS own WHERE own.layer_id IN (?, ?)") == [("resources", 2)]
    assert layer_filters("DELETE FROM sp_token WHERE sp_token.layer_id = %(layer_id_1)s::VARCHAR") == [("sp_token", 1)]
    assert layer_filters("SELECT t.id FROM sp_uri AS t WHERE t.layer_id IN (%(l0)s, %(l1)s)") == [("sp_uri", 2)]
    assert layer_filters("INSERT INTO cds_calls (id, kind) VALUES (?, ?)") == [("cds_calls", None)]
    assert layer_filters("INSERT INTO hl7v2_messages (layer_id, resources) VALUES (?, ?)") == []
    assert layer_filters("UPDATE layers SET last_activity=? WHERE layers.id = ?") == []
    # PostgreSQL's one statement for a write: every clause is seen, each with its own filter or none.
    assert layer_filters(
        "WITH w0 AS (INSERT INTO resources (layer_id, id) VALUES ($1, $2)), "
        "w1 AS (DELETE FROM sp_token WHERE sp_token.layer_id = $3 AND sp_token.resource_id = $4) "
        "INSERT INTO resource_versions (id) VALUES ($5)"
    ) == [("resources", 1), ("resource_versions", None), ("sp_token", 1)]


@contextmanager
def captured(db: Database) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def _patient(rid: str, family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": rid, "name": [{"family": family}], "gender": "female"}


def _observation(rid: str, subject: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": subject},
        "effectiveDateTime": "2026-01-02T03:04:05Z",
        "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
    }


def _work(client: Any, base: str, headers: dict[str, str]) -> None:
    """A trainee's minute: a write, reads, searches (with a chain and an include), a history, an update."""
    assert client.put(f"{base}/Patient/own", json=_patient("own", "Ownwright"), headers=headers).is_success
    assert client.put(f"{base}/Observation/o1", json=_observation("o1", "Patient/p0"), headers=headers).is_success
    for path in (
        "Patient/p0",
        "Patient/own",
        "Observation/o1/_history/1",
        "Patient?name=Chalm",
        "Patient?gender=female&_count=5",
        "Observation?subject=Patient/p0&code=http://loinc.org|8867-4",
        "Observation?patient.name=Chalmers&_include=Observation:subject",
        "Observation?date=ge2026-01-01&value-quantity=gt70",
        "Patient/own/_history",
    ):
        response = client.get(f"{base}/{path}", headers=headers)
        assert response.status_code == 200, (path, response.text)
    assert client.put(f"{base}/Patient/p0", json=_patient("p0", "Changed"), headers=headers).is_success
    assert client.delete(f"{base}/Observation/o1", headers=headers).status_code == 204


@pytest.fixture
def sandbox_pair(app: Any, client: Any, admin_headers: dict[str, str]) -> tuple[str, str]:
    """A sandbox on a baseline holding a patient and an observation, and the default sandbox (no baseline)."""
    fhir, db = app.state.fhir, app.state.db
    with db.write() as conn:
        baseline = sandboxes.create_baseline(conn, "Ward").id
        view = sandboxes.baseline_view_for_loading(conn, baseline)
        for body in (_patient("p0", "Chalmers"), _observation("obs-base", "Patient/p0")):
            fhir.update(conn, view, body["resourceType"], body["id"], body, Actor("loader", "loader"))
    made = client.post("/admin/sandboxes", json={"name": "A", "baseline": baseline}, headers=admin_headers)
    assert client.put("/fhir/Patient/p0", json=_patient("p0", "Chalmers"), headers=admin_headers).is_success
    return f"/sandboxes/{made.json()['id']}/fhir", "/fhir"


def test_a_sandbox_without_a_baseline_runs_single_shard_statements_only(
    app: Any, client: Any, admin_headers: dict[str, str], sandbox_pair: tuple[str, str]
) -> None:
    with captured(app.state.db) as statements:
        _work(client, sandbox_pair[1], admin_headers)
    touching = [(s, layer_filters(s)) for s in statements if layer_filters(s)]
    assert len(touching) > 20  # reads, searches and writes all touched distributed tables
    unrouted = [s for s, found in touching if any(n != 1 for _, n in found)]
    assert unrouted == []


def test_a_layered_sandbox_names_its_layers_in_every_statement_and_at_most_two(
    app: Any, client: Any, admin_headers: dict[str, str], sandbox_pair: tuple[str, str]
) -> None:
    """Overlay and baseline are two layers, so two shards unless co-located: the exception docs/scaling.md owns."""
    with captured(app.state.db) as statements:
        _work(client, sandbox_pair[0], admin_headers)
    touching = [(s, layer_filters(s)) for s in statements if layer_filters(s)]
    assert len(touching) > 20
    assert [s for s, found in touching if any(n is None for _, n in found)] == []
    counts = {n for _, found in touching for _, n in found}
    assert counts == {1, 2}  # the reads that see through to the baseline name both layers


_LOCKING = re.compile(r"\bFOR\s+(?:NO\s+KEY\s+)?(?:UPDATE|SHARE|KEY\s+SHARE)\b", re.I)


def test_the_background_work_locks_no_distributed_row_across_sandboxes(
    app: Any, client: Any, admin_headers: dict[str, str], sandbox_pair: tuple[str, str]
) -> None:
    """The workers' passes after a sandbox's writes: outbox to HL7 v2 messages and subscription notifications, the
    delivery claims, the export claim, the sweeps.  Citus runs ``FOR UPDATE`` on one shard only, so no locking
    statement may touch a distributed table (the locks fall on the coordinator's tables); every statement that
    reads a distributed table names its layers.  SQLite takes no row locks, so the lock half bites on PostgreSQL."""
    from sandbox.auth.sweep import sweep_expired
    from sandbox.bulk import jobs
    from sandbox.hl7v2 import delivery, destinations
    from sandbox.subscriptions import delivery as subscriptions

    db, fhir = app.state.db, app.state.fhir
    sandbox_id = sandbox_pair[0].split("/")[2]
    with db.write() as conn:
        destinations.put(conn, sandbox_id, "lab", {"host": "127.0.0.1", "port": 9, "message_types": ["ADT^A08"]})
    _work(client, sandbox_pair[0], admin_headers)
    with captured(db) as statements:
        assert delivery.translate(db, fhir) > 0
        assert len(delivery.claim(db, "w1")) == 1  # the update of p0: ADT^A08
        subscriptions.queue_events(db, fhir)
        subscriptions.claim(db, "w1")
        jobs.claim(db, "w1")
        jobs.purge_expired(db)
        sweep_expired(db, datetime.now(UTC))
    touching = [(s, layer_filters(s)) for s in statements if layer_filters(s)]
    assert {table for _, found in touching for table, _ in found} >= {"hl7v2_destinations", "resource_versions"}
    assert [s for s, found in touching if any(n is None or n > 2 for _, n in found)] == []
    locking = [s for s in statements if _LOCKING.search(s)]
    assert [s for s in locking if layer_filters(s)] == []
    if not db.is_sqlite:
        assert len(locking) >= 3  # the outbox, its cursor, the sweeps: the lock half did run


# ---- the script on PostgreSQL, with a stand-in for Citus ------------------------------------------------------

# Records each call in a table named like Citus's catalog, and refuses what Citus refuses that a stand-in can
# tell: a second role for a table, a distribution column the table lacks, co-location with a table not yet
# distributed.  It is not Citus: it shows the script runs on the migrated schema as written, in a workable order.
STAND_IN = """
CREATE TABLE pg_dist_partition (logicalrelid regclass PRIMARY KEY, kind text NOT NULL, dist_column text,
                                colocated_with text, seq serial);
CREATE FUNCTION create_reference_table(t regclass) RETURNS void LANGUAGE sql
  AS $$ INSERT INTO pg_dist_partition (logicalrelid, kind) VALUES (t, 'reference') $$;
CREATE FUNCTION citus_add_local_table_to_metadata(t regclass) RETURNS void LANGUAGE sql
  AS $$ INSERT INTO pg_dist_partition (logicalrelid, kind) VALUES (t, 'local') $$;
CREATE FUNCTION create_distributed_table(t regclass, col text, colocate_with text DEFAULT 'default')
  RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = t AND attname = col AND NOT attisdropped) THEN
    RAISE EXCEPTION 'column "%" of relation "%" does not exist', col, t;
  END IF;
  IF colocate_with <> 'default' AND NOT EXISTS (
      SELECT 1 FROM pg_dist_partition WHERE logicalrelid = colocate_with::regclass AND kind = 'distributed') THEN
    RAISE EXCEPTION 'cannot colocate % with %: it is not distributed', t, colocate_with;
  END IF;
  INSERT INTO pg_dist_partition (logicalrelid, kind, dist_column, colocated_with)
    VALUES (t, 'distributed', col, colocate_with);
END $$;
"""


def _run(db: Database, sql: str) -> None:
    """Several statements as one script, as psql would send them (no placeholders: PL/pgSQL's % is literal)."""
    raw = db.engine.raw_connection()
    try:
        raw.cursor().execute(sql)
        raw.commit()
    finally:
        raw.close()


@pytest.mark.postgres
def test_the_script_runs_on_the_migrated_schema_once_and_again_after_an_upgrade() -> None:
    if not PG_URL:
        pytest.skip("EHR_SANDBOX_TEST_DATABASE_URL is not set")
    schema = f"citus_{uuid.uuid4().hex[:12]}"
    admin = Database(PG_URL)
    with admin.engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    db = Database(_pg_schema_url(schema))
    try:
        db.create_schema()
        _run(db, STAND_IN)
        script = sharding.citus_sql()
        _run(db, script)
        with db.read() as conn:
            placed = conn.execute(
                text("SELECT logicalrelid::text, kind, dist_column, colocated_with FROM pg_dist_partition ORDER BY seq")
            ).all()
        assert {row[0]: row[1] for row in placed} == {name: p.role.value for name, p in PLAN.items()}
        assert {row[0]: row[2] for row in placed if row[1] == "distributed"} == DISTRIBUTED
        assert {row[3] for row in placed if row[1] == "distributed"} == {"default", ANCHOR}
        kinds = [row[1] for row in placed]
        assert kinds == sorted(kinds, key=["reference", "distributed", "local"].index)
        _run(db, script)  # everything placed already: nothing happens, nothing fails
        with db.read() as conn:
            assert conn.execute(text("SELECT count(*) FROM pg_dist_partition")).scalar() == len(PLAN)
    finally:
        db.dispose()
        with admin.engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
