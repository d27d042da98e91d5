"""Where every table goes on a Citus cluster: the sharding plan, beside the schema it is for.

A sandbox's data is sharded by its layer id (``layer_id``, or ``sandbox_id`` where the rows outlive a reset):
every distributed table is co-located with ``resources``, so one sandbox's resources, versions, index rows and
logs share one shard and a statement that names the layer runs on one worker.  Small global tables that
distributed rows are read with are reference tables (a copy on every node).  Tables whose rows are claimed,
swept or stamped across all sandboxes stay on the coordinator as Citus local tables: Citus runs ``SELECT ... FOR
UPDATE`` on single-shard queries only, and those statements lock rows of many layers at once.

``citus_sql()`` renders the statements to run on the coordinator after ``ehr-sandbox db upgrade`` (``ehr-sandbox
db citus-sql``); ``tests/sandbox/store/test_sharding.py`` holds the plan to the schema and to Citus's rules, and
docs/scaling.md says how to run it.  None of it has run on Citus: Citus is not available where this was built.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from sqlalchemy import MetaData, PrimaryKeyConstraint, Table, UniqueConstraint

from sandbox.store import migrations, schema

# Not in ``schema.metadata``: Alembic makes it.  Placed all the same, so every table of a database has a role.
ALEMBIC_VERSION = "alembic_version"

# The co-location group's first table: the others are created with ``colocate_with`` naming it.
ANCHOR = schema.resources.name


class Role(Enum):
    DISTRIBUTED = "distributed"
    REFERENCE = "reference"
    LOCAL = "local"


@dataclass(frozen=True)
class Placement:
    role: Role
    why: str
    column: str | None = None  # the distribution column, for a distributed table


def _distributed(column: str, why: str) -> Placement:
    return Placement(Role.DISTRIBUTED, why, column)


def _reference(why: str) -> Placement:
    return Placement(Role.REFERENCE, why)


def _local(why: str) -> Placement:
    return Placement(Role.LOCAL, why)


_INDEX_ROWS = "a layer's search index rows, read with its resources: `id IN (SELECT resource_id ...)` per parameter"

PLAN: dict[str, Placement] = {
    # ---- distributed: a sandbox's data, by its layer --------------------------------------------------------
    "resources": _distributed("layer_id", "the current version of a layer's resources: the bulk of the data"),
    "resource_versions": _distributed("layer_id", "every version of a layer's resources, read by id and history"),
    **{table.name: _distributed("layer_id", _INDEX_ROWS) for table in schema.INDEX_TABLES.values()},
    "hl7v2_control_ids": _distributed("layer_id", "MSH-10s a sandbox already applied, checked per inbound message"),
    "cds_calls": _distributed("layer_id", "a sandbox's CDS Hooks exchanges, read by the sandbox's vendor"),
    "cds_decisions": _distributed("layer_id", "what a sandbox's users did with cards, read per sandbox"),
    "fhir_requests": _distributed("layer_id", "a sandbox's FHIR request log, written and capped per sandbox"),
    "bulk_export_files": _distributed("layer_id", "an export's output files, read per job of one sandbox"),
    "bulk_export_parts": _distributed("layer_id", "an export's NDJSON content: large, streamed per job"),
    # Keyed by the sandbox id, which is its overlay layer's id: the same hash, the same shard.
    "hl7v2_destinations": _distributed("sandbox_id", "a sandbox's HL7 v2 interfaces, read per outbound event"),
    "cds_registrations": _distributed("sandbox_id", "a sandbox's CDS services, read per hook call"),
    # ---- reference: small, global, read with everything -----------------------------------------------------
    "users": _reference("people: looked up by every signed-in request and joined by rosters"),
    "api_tokens": _reference("a hash per API token, looked up by every API request; written rarely"),
    "cohorts": _reference("a few rows per class, joined with rosters and attempts"),
    "cohort_members": _reference("the roster: which sandbox each trainee works in; joined with layers and users"),
    "cohort_packs": _reference("which task packs a cohort works through: a few rows per cohort"),
    "smart_clients": _reference("registered apps, looked up by every SMART authorization and token request"),
    "smart_client_owners": _reference("which vendor owns which app: one row per app"),
    "smart_keys": _reference("the server's signing key: one row"),
    "cds_signing_keys": _reference("the key that signs our CDS Hooks calls: one row"),
    # ---- local: on the coordinator, claimed, swept or stamped across sandboxes ------------------------------
    "layers": _local(
        "every FHIR write locks its layer's row (FOR KEY SHARE) and a reset holds it FOR UPDATE: as a "
        "reference table each write would change a row on every node; nothing joins it with a distributed table"
    ),
    "outbox": _local(
        "keyed by a global sequence, not a layer; workers claim events of every sandbox in seq order with FOR "
        "UPDATE SKIP LOCKED, which Citus runs on single-shard queries only"
    ),
    "outbox_cursors": _local("each outbox consumer's position, locked FOR UPDATE SKIP LOCKED beside the outbox"),
    "hl7v2_messages": _local(
        "the log is per sandbox, but outbound rows are the delivery queue: workers claim due messages of every "
        "sandbox FOR UPDATE SKIP LOCKED (single-shard only on Citus); distributing it needs a claim that finds due "
        "rows without a lock, then locks each by (layer_id, id)"
    ),
    "subscription_notifications": _local(
        "the rest-hook delivery queue: claimed across sandboxes FOR UPDATE SKIP LOCKED, as HL7 v2 messages are"
    ),
    "bulk_export_jobs": _local(
        "the export job queue: a worker claims the oldest due job of any sandbox FOR UPDATE SKIP LOCKED; a few "
        "rows per export (the output, bulk_export_files and bulk_export_parts, is distributed)"
    ),
    "smart_launches": _local("minutes-long rows, swept across sandboxes FOR UPDATE SKIP LOCKED once past expiry"),
    "smart_codes": _local("one-use codes, swept across sandboxes FOR UPDATE SKIP LOCKED once past expiry"),
    "smart_tokens": _local("tokens, swept across sandboxes FOR UPDATE SKIP LOCKED once past expiry"),
    "smart_assertions": _local("used client-assertion jti's: keyed by client, no sandbox; swept past expiry"),
    "web_sessions": _local(
        "sign-in sessions: no sandbox; touched as users browse and swept past expiry, so not worth a write on "
        "every node as a reference table"
    ),
    "task_attempts": _local(
        "overdue attempts of every sandbox are closed FOR UPDATE SKIP LOCKED, and a cohort's progress matrix reads "
        "the attempts of all its sandboxes at once"
    ),
    "task_feedback": _local("one row per attempt, read beside the attempts and by task pack across sandboxes"),
    ALEMBIC_VERSION: _local("the schema revision: only migrations, run on the coordinator, read and write it"),
}


class PlanError(ValueError):
    """The plan and the schema disagree: a developer must place a table (see docs/scaling.md)."""


def unplaced(meta: MetaData = schema.metadata, plan: dict[str, Placement] = PLAN) -> list[str]:
    """Tables of the schema the plan says nothing about."""
    return sorted(name for name in meta.tables if name not in plan)


def unknown(meta: MetaData = schema.metadata, plan: dict[str, Placement] = PLAN) -> list[str]:
    """Tables the plan places that the schema does not have."""
    return sorted(name for name in plan if name not in meta.tables and name != ALEMBIC_VERSION)


def problems(meta: MetaData = schema.metadata, plan: dict[str, Placement] = PLAN) -> list[str]:
    """Where the schema breaks the plan or Citus's rules, one line each; empty when the plan can be run.

    ``meta`` may be ``schema.metadata`` or a database reflected after its migrations (``MetaData.reflect``).
    """
    found = [
        f"{name}: no role in sandbox/store/sharding.py; decide whether it is distributed by its layer or sandbox id "
        "(a sandbox's data), a reference table (small, global, read with everything) or local to the coordinator "
        "(claimed, swept or stamped across sandboxes), and say why"
        for name in unplaced(meta, plan)
    ]
    found += [f"{name}: placed in sandbox/store/sharding.py but not in the schema" for name in unknown(meta, plan)]
    anchor = plan.get(ANCHOR)
    anchor_table = meta.tables.get(ANCHOR)
    if anchor is None or anchor.role is not Role.DISTRIBUTED or anchor_table is None:
        return [*found, f"{ANCHOR}: the co-location group's anchor must be a distributed table of the schema"]
    assert anchor.column is not None
    anchor_type = anchor_table.c[anchor.column].type
    for table in meta.sorted_tables:
        placement = plan.get(table.name)
        if placement is None:
            continue
        if placement.role is Role.DISTRIBUTED:
            found += _distribution_problems(table, placement, anchor_type)
        found += _foreign_key_problems(table, placement, plan)
    return found


def _distribution_problems(table: Table, placement: Placement, anchor_type: object) -> list[str]:
    """Citus's rules for a hash-distributed table co-located with the anchor, and ours: every index leads with
    the distribution column, so a statement that names one layer reads one shard's index and nothing else."""
    column = placement.column
    if column is None or column not in table.c:
        return [f"{table.name}: distributed by {column!r}, which it has no column of"]
    found = []
    if str(table.c[column].type) != str(anchor_type):
        found.append(
            f"{table.name}.{column} is {table.c[column].type}, not {anchor_type} like {ANCHOR}'s: "
            "co-located tables must hash the same type"
        )
    key = [c.name for c in table.primary_key.columns]
    if key and key[0] != column:
        found.append(f"{table.name}: its primary key ({', '.join(key)}) must lead with {column}")
    uniques = [
        (c.name or "unique constraint", [col.name for col in c.columns])
        for c in table.constraints
        if isinstance(c, UniqueConstraint) and not isinstance(c, PrimaryKeyConstraint)
    ]
    uniques += [(i.name or "unique index", [col.name for col in i.columns]) for i in table.indexes if i.unique]
    for name, columns in uniques:
        if column not in columns:
            found.append(f"{table.name}: {name} ({', '.join(columns)}) must include {column} (Citus's rule)")
    for index in table.indexes:
        columns = [col.name for col in index.columns]
        if not columns or columns[0] != column:
            found.append(
                f"{table.name}: index {index.name} ({', '.join(columns)}) does not lead with {column}: a query of "
                "one sandbox would scan its shard's whole index, and one across sandboxes belongs on the coordinator"
            )
    return found


# Which roles a foreign key may point between on Citus: a distributed table to a reference table or to a table
# of its own co-location group (there is one group), a reference table to a reference table, a local table to a
# reference or local table.  Anything else Citus refuses.
_FOREIGN_KEYS_ALLOWED = {
    (Role.DISTRIBUTED, Role.REFERENCE),
    (Role.DISTRIBUTED, Role.DISTRIBUTED),
    (Role.REFERENCE, Role.REFERENCE),
    (Role.LOCAL, Role.REFERENCE),
    (Role.LOCAL, Role.LOCAL),
}


def _foreign_key_problems(table: Table, placement: Placement, plan: dict[str, Placement]) -> list[str]:
    found = []
    for fk in table.foreign_key_constraints:
        target = plan.get(fk.referred_table.name)
        if target is None:
            continue  # reported as unplaced
        where = f"{table.name} -> {fk.referred_table.name}"
        if (placement.role, target.role) not in _FOREIGN_KEYS_ALLOWED:
            found.append(f"{where}: a foreign key from a {placement.role.value} table to a {target.role.value} one")
            continue
        if placement.role is Role.DISTRIBUTED and target.role is Role.DISTRIBUTED:
            pairs = {(e.parent.name, e.column.name) for e in fk.elements}
            if (placement.column, target.column) not in pairs:
                found.append(f"{where}: a foreign key between distributed tables must pair their distribution columns")
    return found


def tables(role: Role, plan: dict[str, Placement] = PLAN) -> list[str]:
    """The tables of one role, in the order Citus is to be told about them (for distributed: the anchor first)."""
    names = sorted(name for name, placement in plan.items() if placement.role is role)
    if role is Role.DISTRIBUTED:
        names.sort(key=lambda name: name != ANCHOR)
    return names


def _quoted(name: str) -> str:
    return "'" + name.replace("'", "''") + "'"


def _unless_placed(call: str, table: str) -> str:
    """``call`` only if the table is not a Citus table yet, so the script may run again after an upgrade adds
    tables (pg_dist_partition lists distributed, reference and Citus local tables alike)."""
    return (
        f"SELECT {call} WHERE NOT EXISTS "
        f"(SELECT 1 FROM pg_dist_partition WHERE logicalrelid = {_quoted(table)}::regclass);"
    )


def citus_sql(meta: MetaData = schema.metadata, plan: dict[str, Placement] | None = None) -> str:
    """The statements that give every table its role on a Citus coordinator, in an order Citus accepts:
    reference tables, then the anchor of the co-location group, then the tables co-located with it, then the
    coordinator's local tables.  ``plan`` defaults to ``PLAN``.  Raises ``PlanError`` listing ``problems()``."""
    plan = PLAN if plan is None else plan
    found = problems(meta, plan)
    if found:
        raise PlanError("the sharding plan does not fit the schema: " + "; ".join(found))
    lines = [
        f"-- ehr-sandbox: Citus table roles for schema revision {migrations.head()} (sandbox/store/sharding.py).",
        "-- Run on the coordinator after `ehr-sandbox db upgrade`, once the coordinator is in the metadata",
        "-- (SELECT citus_set_coordinator_host(...)); tables that are Citus tables already are skipped.",
        "",
        "-- Reference tables: a copy on every node.",
    ]
    lines += [_unless_placed(f"create_reference_table({_quoted(t)})", t) for t in tables(Role.REFERENCE, plan)]
    lines += ["", f"-- Distributed tables: one co-location group, anchored on {ANCHOR}."]
    for table in tables(Role.DISTRIBUTED, plan):
        column = plan[table].column
        assert column is not None
        colocate = "" if table == ANCHOR else f", colocate_with => {_quoted(ANCHOR)}"
        lines.append(_unless_placed(f"create_distributed_table({_quoted(table)}, {_quoted(column)}{colocate})", table))
    lines += ["", "-- Local tables: on the coordinator, in the metadata so they share transactions with the rest."]
    lines += [_unless_placed(f"citus_add_local_table_to_metadata({_quoted(t)})", t) for t in tables(Role.LOCAL, plan)]
    return "\n".join(lines) + "\n"
