"""Sandboxes and baselines: create, reset, snapshot, delete, list, export.

A sandbox is a row in ``layers`` (kind ``sandbox``) whose overlay layer holds
its own writes, over an optional baseline layer (kind ``baseline``) that never
changes once a sandbox stands on it.  So:

- create is one row, whatever the size of the baseline;
- reset deletes the sandbox layer's rows from every table keyed by layer, and
  the baseline shows through again: nothing is copied;
- snapshot is the one operation that copies: it materializes the resources a
  sandbox sees (with their versions and index rows) into a new baseline, since
  a baseline must not depend on a sandbox that may later change or vanish.

Every function works in the caller's transaction (a ``Connection`` from
``Database.write()``), so a cohort can create its sandboxes all-or-nothing.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Table, delete, false, func, insert, literal, select, true, update

from sandbox.fhir.search_sql import visible
from sandbox.fhir.validation import dump_json, parse_json
from sandbox.fhir.values import instant_now
from sandbox.store.admin_errors import Conflict, Invalid, NotFound
from sandbox.store.layers import DEFAULT_SANDBOX, View, resolve_view
from sandbox.store.schema import (
    INDEX_TABLES,
    cds_registrations,
    cohort_members,
    cohorts,
    hl7v2_destinations,
    layers,
    metadata,
    outbox,
    resource_versions,
    resources,
    smart_codes,
    smart_launches,
    smart_tokens,
)

# The outbox is a log for consumers, not sandbox data: events already queued still get delivered after a reset.
KEPT_ON_RESET = frozenset({outbox.name})

# Keyed by the sandbox's id rather than its layer, so a reset keeps them: an app launched against the sandbox
# keeps its tokens (and its codes and launches) and sees the baseline's data; the vendor's HL7 v2 destinations
# and CDS service registrations are configuration, not data.  They are the sandbox's all the same, and go with
# it: left behind, they would be honoured by a new sandbox given the same id (its orders sent to the old
# vendor's interface, its charts calling the old vendor's services).  Task attempts and feedback stay: they
# are the cohort's record, and a sandbox leaves its cohort before it can be deleted.
DROPPED_WITH_SANDBOX = (smart_launches, smart_codes, smart_tokens, hl7v2_destinations, cds_registrations)

_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


@dataclass(frozen=True)
class LayerInfo:
    id: str
    kind: str  # "sandbox" or "baseline"
    name: str
    baseline_id: str | None
    created_at: str
    last_activity: str | None
    # Rows in the layer itself: a sandbox's changes (tombstones too), a baseline's resources.  None when not
    # counted: counting a baseline grows with its size, which create and reset must not.
    own_resources: int | None
    baseline_resources: int | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "created_at": _instant(self.created_at),
            "last_activity": _instant(self.last_activity) if self.last_activity else None,
        }
        if self.kind == "sandbox":
            data["baseline"] = self.baseline_id
            if self.own_resources is not None:
                data["changed_resources"] = self.own_resources
            if self.baseline_resources is not None:
                data["baseline_resources"] = self.baseline_resources
        elif self.own_resources is not None:
            data["resources"] = self.own_resources
        return data


def layer_tables() -> list[Table]:
    """Every table keyed by layer, in an order safe for deletes (children first)."""
    return [t for t in reversed(metadata.sorted_tables) if "layer_id" in t.c]


# ---- create -------------------------------------------------------------------------------------


def new_layer_id(name: str) -> str:
    """A readable, unguessable id: the name's slug and 48 random bits (``ward-4-trainees-3f9a1c0b2d4e``)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].rstrip("-")
    return f"{slug or 'layer'}-{secrets.token_hex(6)}"


def _check_new_id(conn: Connection, layer_id: str) -> None:
    if not _ID.match(layer_id):
        raise Invalid(f"'{layer_id}' is not a valid id: use 1-64 of A-Z a-z 0-9 - .")
    if conn.execute(select(layers.c.id).where(layers.c.id == layer_id)).first() is not None:
        raise Conflict(f"The id '{layer_id}' is already taken by a sandbox or baseline")


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise Invalid("A name is required: a non-empty string of at most 200 characters")
    return name.strip()


def create_sandbox(
    conn: Connection, name: str, baseline_id: str | None = None, *, sandbox_id: str | None = None
) -> LayerInfo:
    name = _check_name(name)
    if baseline_id is not None:
        get_layer(conn, baseline_id, "baseline")
    sandbox_id = sandbox_id or new_layer_id(name)
    _check_new_id(conn, sandbox_id)
    now = instant_now()[1]
    conn.execute(
        insert(layers).values(
            id=sandbox_id, kind="sandbox", name=name, baseline_id=baseline_id, created_at=now, last_activity=None
        )
    )
    return LayerInfo(sandbox_id, "sandbox", name, baseline_id, now, None, 0)


def create_baseline(conn: Connection, name: str, *, baseline_id: str | None = None) -> LayerInfo:
    """An empty baseline, to be filled by a loader through ``baseline_view_for_loading``."""
    name = _check_name(name)
    baseline_id = baseline_id or new_layer_id(name)
    _check_new_id(conn, baseline_id)
    now = instant_now()[1]
    conn.execute(
        insert(layers).values(
            id=baseline_id, kind="baseline", name=name, baseline_id=None, created_at=now, last_activity=None
        )
    )
    return LayerInfo(baseline_id, "baseline", name, None, now, None, 0)


def baseline_view_for_loading(conn: Connection, baseline_id: str) -> View:
    """A View that writes straight into a baseline layer.  For loaders only.

    Refused once a sandbox or cohort stands on the baseline: sandboxes rely on
    it not changing under them (their versions continue its numbering).
    """
    get_layer(conn, baseline_id, "baseline")
    users = _baseline_users(conn, baseline_id)
    if users:
        raise Conflict(f"Baseline '{baseline_id}' is in use by {users}; load into a new baseline instead")
    return View(baseline_id, (baseline_id,))


# ---- reset, delete ----------------------------------------------------------------------------------


def reset_sandbox(conn: Connection, sandbox_id: str) -> LayerInfo:
    """Back to the baseline: the sandbox's own rows go, in every table keyed by layer.  Nothing is copied."""
    info = get_layer(conn, sandbox_id, "sandbox")
    _lock(conn, sandbox_id)
    for table in layer_tables():
        if table.name not in KEPT_ON_RESET:
            conn.execute(delete(table).where(table.c.layer_id == sandbox_id))
    now = instant_now()[1]
    conn.execute(update(layers).where(layers.c.id == sandbox_id).values(last_activity=now))
    return LayerInfo(info.id, "sandbox", info.name, info.baseline_id, info.created_at, now, 0)


def _lock(conn: Connection, layer_id: str) -> None:
    """Hold the layer's row until commit.  Every write ends by holding that row FOR KEY SHARE
    (``repository._HOLD_LAYER``), so on PostgreSQL writes in flight wait for a reset or snapshot to commit
    instead of interleaving with its statements, and it for them (SQLite's BEGIN IMMEDIATE already serializes
    writers)."""
    conn.execute(select(layers.c.id).where(layers.c.id == layer_id).with_for_update())


def delete_sandbox(conn: Connection, sandbox_id: str) -> None:
    get_layer(conn, sandbox_id, "sandbox")
    if sandbox_id == DEFAULT_SANDBOX:
        raise Conflict("The default sandbox (/fhir) cannot be deleted; reset it instead")
    used_by = (
        conn.execute(
            select(cohort_members.c.cohort_id).where(cohort_members.c.sandbox_id == sandbox_id).limit(1)
        ).first()
        or conn.execute(select(cohorts.c.id).where(cohorts.c.shared_sandbox_id == sandbox_id)).first()
    )
    if used_by is not None:
        raise Conflict(f"Sandbox '{sandbox_id}' belongs to cohort '{used_by[0]}'; remove it from the cohort first")
    _lock(conn, sandbox_id)
    for table in DROPPED_WITH_SANDBOX:
        conn.execute(delete(table).where(table.c.sandbox_id == sandbox_id))
    _drop_layer(conn, sandbox_id)


def delete_baseline(conn: Connection, baseline_id: str) -> None:
    get_layer(conn, baseline_id, "baseline")
    users = _baseline_users(conn, baseline_id)
    if users:
        raise Conflict(f"Baseline '{baseline_id}' is in use by {users}; delete those first")
    _drop_layer(conn, baseline_id)


def _drop_layer(conn: Connection, layer_id: str) -> None:
    for table in layer_tables():
        conn.execute(delete(table).where(table.c.layer_id == layer_id))
    conn.execute(delete(layers).where(layers.c.id == layer_id))


def _baseline_users(conn: Connection, baseline_id: str) -> str:
    sandboxes = conn.execute(
        select(layers.c.id).where(layers.c.baseline_id == baseline_id, layers.c.kind == "sandbox").limit(3)
    ).scalars()
    found = [f"sandbox '{s}'" for s in sandboxes]
    found += [
        f"cohort '{c}'" for c in conn.execute(select(cohorts.c.id).where(cohorts.c.baseline_id == baseline_id).limit(3))
    ]
    return ", ".join(found)


# ---- snapshot -------------------------------------------------------------------------------------------


def snapshot_sandbox(conn: Connection, sandbox_id: str, name: str, *, baseline_id: str | None = None) -> LayerInfo:
    """A new baseline holding a flat copy of what the sandbox sees: current versions, their history, index rows.

    Deleted resources are left out; a resource's history keeps its version
    numbers and attribution, so a sandbox made from the snapshot continues them.
    """
    get_layer(conn, sandbox_id, "sandbox")
    _lock(conn, sandbox_id)
    view = resolve_view(conn, sandbox_id)
    info = create_baseline(conn, name, baseline_id=baseline_id)
    new = literal(info.id)
    # Layer by layer, so that each row is kept or not by primary-key lookups of its own resource:
    # one correlated "visible" test per index row was 20 times slower.
    for layer in view.layers:
        r = resources
        columns = [c.name for c in r.columns if c.name != "layer_id"]
        conn.execute(
            insert(r).from_select(
                ["layer_id", *columns],
                select(new, *(r.c[c] for c in columns)).where(
                    r.c.layer_id == layer, r.c.deleted == false(), _not_shadowed(view, layer, r.c.resource_type, r.c.id)
                ),
            )
        )
        # History of the copied resources (version numbers never collide across layers: a sandbox's
        # versions of a baseline resource continue after the baseline's).
        v = resource_versions
        columns = [c.name for c in v.columns if c.name != "layer_id"]
        conn.execute(
            insert(v).from_select(
                ["layer_id", *columns],
                select(new, *(v.c[c] for c in columns)).where(
                    v.c.layer_id == layer, _in_layer(info.id, v.c.resource_type, v.c.id)
                ),
            )
        )
        for table in INDEX_TABLES.values():
            columns = [c.name for c in table.columns if c.name != "layer_id"]
            conn.execute(
                insert(table).from_select(
                    ["layer_id", *columns],
                    select(new, *(table.c[c] for c in columns)).where(
                        table.c.layer_id == layer,
                        _in_layer(layer, table.c.resource_type, table.c.resource_id, live=True),
                        _not_shadowed(view, layer, table.c.resource_type, table.c.resource_id),
                    ),
                )
            )
    return get_layer(conn, info.id, "baseline", sizes=True)


def _in_layer(layer: str, rtype: Any, rid: Any, *, live: bool = False) -> Any:
    own = resources.alias("own")
    where = [own.c.layer_id == layer, own.c.resource_type == rtype, own.c.id == rid]
    if live:
        where.append(own.c.deleted == false())
    return select(own.c.id).where(*where).exists()


def _not_shadowed(view: View, layer: str, rtype: Any, rid: Any) -> Any:
    """Rows of a lower layer count only for resources that no layer above it has a row for."""
    above = view.layers[: view.layers.index(layer)]
    if not above:
        return true()
    top = resources.alias("top")
    return ~select(top.c.id).where(top.c.layer_id.in_(above), top.c.resource_type == rtype, top.c.id == rid).exists()


# ---- list, look up -----------------------------------------------------------------------------------------


def get_layer(conn: Connection, layer_id: str, kind: str, *, sizes: bool = False) -> LayerInfo:
    """The layer, or NotFound; ``sizes`` counts its rows (and its baseline's), which costs a scan of them."""
    row = conn.execute(_WITH_ACTIVITY.where(layers.c.id == layer_id)).first()
    if row is None or row.kind != kind:
        raise NotFound(f"There is no {kind} '{layer_id}'")
    if not sizes:
        return LayerInfo(row.id, row.kind, row.name, row.baseline_id, row.created_at, _last_activity(row), None)
    return _info(row, {layer_id: _count(conn, layer_id), row.baseline_id: _count(conn, row.baseline_id)})


def list_layers(conn: Connection, kind: str) -> list[LayerInfo]:
    """Every sandbox (or baseline) with its size and last activity, oldest first."""
    counts: dict[str | None, int] = {
        row.layer_id: row.n
        for row in conn.execute(select(resources.c.layer_id, func.count().label("n")).group_by(resources.c.layer_id))
    }
    rows = conn.execute(_WITH_ACTIVITY.where(layers.c.kind == kind).order_by(layers.c.created_at, layers.c.id))
    return [_info(row, counts) for row in rows]


# A layer's last activity: its latest resource version, or its last reset's stamp if later (a reset removes the
# versions).  Derived rather than stamped by every write: a stamp is an UPDATE of the
# layer's row, whose lock made a sandbox's write transactions commit one at a time on PostgreSQL.  One seek
# per layer, backwards on ``ix_versions_updated``.
_WITH_ACTIVITY = select(
    layers,
    select(func.max(resource_versions.c.last_updated))
    .where(resource_versions.c.layer_id == layers.c.id)
    .scalar_subquery()
    .label("last_write"),
)


def _last_activity(row: Any) -> str | None:
    return max((t for t in (row.last_activity, row.last_write) if t is not None), default=None)


def _info(row: Any, counts: dict[str | None, int]) -> LayerInfo:
    return LayerInfo(
        row.id,
        row.kind,
        row.name,
        row.baseline_id,
        row.created_at,
        _last_activity(row),
        counts.get(row.id, 0),
        counts.get(row.baseline_id, 0) if row.baseline_id else 0,
    )


def _count(conn: Connection, layer_id: str | None) -> int:
    if layer_id is None:
        return 0
    return conn.execute(
        select(func.count()).select_from(resources).where(resources.c.layer_id == layer_id)
    ).scalar_one()


def _instant(index_form: str) -> str:
    return index_form[:23] + "Z"


# ---- export -------------------------------------------------------------------------------------------------


def layer_view(conn: Connection, layer_id: str) -> View:
    """What exporting a layer reads: a sandbox as its users see it, a baseline as it is."""
    row = conn.execute(select(layers.c.kind).where(layers.c.id == layer_id)).first()
    if row is None:
        raise NotFound(f"There is no sandbox or baseline '{layer_id}'")
    return resolve_view(conn, layer_id) if row.kind == "sandbox" else View(layer_id, (layer_id,))


def visible_contents(
    conn: Connection,
    view: View,
    *,
    types: tuple[str, ...] | None = None,
    since: str | None = None,
    until: str | None = None,
    condition: ColumnElement[bool] | None = None,
) -> Iterator[tuple[str, str, bytes]]:
    """(type, id, stored JSON) of every resource the view sees, by type then id.

    ``types`` keeps those types; ``since``/``until`` (index form) keep resources last changed after ``since``
    and at or before ``until`` (what a bulk export's ``_since`` and transaction time ask for); ``condition``
    (on ``resources``) narrows further, as a bulk export's ``_typeFilter`` searches do.
    """
    r = resources
    where = [visible(view, types, r)]
    if condition is not None:
        where.append(condition)
    if since is not None:
        where.append(r.c.last_updated > since)
    if until is not None:
        where.append(r.c.last_updated <= until)
    query = (
        select(r.c.resource_type, r.c.id, r.c.content)
        .where(*where)
        .order_by(r.c.resource_type, r.c.id)
        .execution_options(yield_per=500)
    )
    for row in conn.execute(query):
        yield row.resource_type, row.id, row.content


def export_ndjson(conn: Connection, view: View) -> Iterator[bytes]:
    """One resource per line, as stored."""
    for _rtype, _rid, content in visible_contents(conn, view):
        yield ndjson_line(content)


def ndjson_line(content: bytes) -> bytes:
    """A stored resource as one NDJSON line."""
    # Stored bodies are compact JSON already; re-dump only if one ever holds a raw newline.
    return (content if b"\n" not in content else dump_json(parse_json(content))) + b"\n"


def export_bundle(conn: Connection, view: View, base: str) -> dict[str, Any]:
    """A transaction Bundle that recreates the resources under the same ids (PUT), so references hold."""
    entries = [
        {
            "fullUrl": f"{base}/{rtype}/{rid}",
            "resource": parse_json(content),
            "request": {"method": "PUT", "url": f"{rtype}/{rid}"},
        }
        for rtype, rid, content in visible_contents(conn, view)
    ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}
