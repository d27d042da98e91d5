"""The one write path, and reads by id and by history.

Every change to a resource, whatever route it came by (FHIR API, web UI, HL7 v2,
loader, CDS Hooks), goes through ``Repository.write``: in the caller's database
transaction it stores the new version with its actor and route, replaces the
resource's index rows, and appends an outbox event.  Reads return the stored
JSON bytes; nothing is re-serialized on the way out.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Dialect, Select, Table, and_, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from sandbox.fhir.outcome import FhirError
from sandbox.fhir.search_params import Registry
from sandbox.fhir.validation import dump_json, parse_json
from sandbox.fhir.values import instant_now
from sandbox.store.database import (
    Database,
    driver_execute,
    driver_execute_numbered,
    driver_execute_sql,
    driver_executemany,
    driver_fetch,
    driver_placeholders,
    driver_rows,
)
from sandbox.store.indexer import STORED_COLUMNS, index_tuples
from sandbox.store.layers import View
from sandbox.store.schema import INDEX_TABLES, layers, outbox, resource_versions, resources


@dataclass(frozen=True)
class Actor:
    """Who wrote, and through which route: ``user:alice`` via ``web-ui``, ``client:app`` via ``fhir-api``."""

    id: str = "anonymous"
    route: str = "fhir-api"


@dataclass(frozen=True)
class Stored:
    resource_type: str
    id: str
    version_id: int
    last_updated: str  # index form: YYYY-MM-DDTHH:MM:SS.ffffff (UTC)
    deleted: bool
    content: bytes | None
    layer_id: str = ""
    method: str | None = None
    actor: str | None = None
    route: str | None = None

    @property
    def etag(self) -> str:
        return f'W/"{self.version_id}"'

    @property
    def instant(self) -> str:
        """``last_updated`` as a FHIR instant, as it appears in meta.lastUpdated."""
        return self.last_updated[:23] + "Z"


def new_id() -> str:
    """A new server-assigned id: a UUID whose leading bits are the time (RFC 9562's version 7).

    Every table and index keyed by (layer, type, id) takes new resources at the end of the type's range,
    so a Bundle's creates dirty a page or two of each rather than one page per resource: with random
    (version 4) ids, a 10-resource transaction wrote about 370 pages to the SQLite WAL, and each page
    not in cache was a read first.  The 74 random bits keep ids unguessable and unique across processes.
    """
    millis = time.time_ns() // 1_000_000
    random = int.from_bytes(_random_bytes(10), "big")  # 80 bits, of which the layout keeps 74
    value = (millis << 80) | (0x7 << 76) | ((random >> 62) & 0xFFF) << 64 | (0b10 << 62) | (random & _RAND_B)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_RAND_B = (1 << 62) - 1


class _RandomPool:
    """``os.urandom`` bytes read a page at a time and handed out in slices.

    Each ``os.urandom`` call is a system call made with the GIL released, and the thread then queues for the
    GIL behind whichever thread took it meanwhile (up to the 5 ms switch interval).  On SQLite, where one
    thread writes every transaction Bundle, 15% of a profile of the server under Bundle ingest sat in
    ``new_id`` in that thread; drawn from a pool, ingest went from about 172 to 190 Bundles a second
    (alternated runs).  The bytes are the kernel's either way.  A forked child starts with an empty pool
    (the parent's leftover bytes, handed out again, would be ids handed out twice) and a lock of its own.
    """

    PAGE = 4096

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._at = 0

    def take(self, n: int) -> bytes:
        with self._lock:
            if self._at + n > len(self._buffer):
                self._buffer, self._at = os.urandom(max(self.PAGE, n)), 0
            start, self._at = self._at, self._at + n
            return self._buffer[start : self._at]


_random_bytes = _RandomPool().take


@dataclass(frozen=True)
class PreparedCreates:
    """Version 1 of several new resources, worked out to the rows ``Repository.store_creates`` inserts.

    Nothing in it needs the database, so it can be worked out in another process (the loader's workers)
    and handed over: it pickles.  ``index_rows`` holds, per index table kind, the column names and the
    rows, each row starting with the layer, type and id.
    """

    layer_id: str
    instant: str  # meta.lastUpdated of every resource in it
    last_updated: str  # the same moment in index form
    keys: tuple[tuple[str, str], ...]  # (type, id), in the order given
    contents: tuple[bytes, ...]  # the stored JSON of each
    index_rows: dict[str, tuple[tuple[str, ...], list[tuple]]]

    def stored(self, actor: Actor, method: str) -> list[Stored]:
        """What storing these returns, one ``Stored`` per resource."""
        return [
            Stored(rtype, rid, 1, self.last_updated, False, content, self.layer_id, method, actor.id, actor.route)
            for (rtype, rid), content in zip(self.keys, self.contents, strict=True)
        ]


def prepare_creates(
    registry: Registry, layer_id: str, items: list[tuple[str, str, dict[str, Any]]], now: tuple[str, str]
) -> PreparedCreates:
    """The rows that store version 1 of each ``(type, id, resource)`` (validated) in ``layer_id``, written at
    ``now`` (``instant_now()``): the stored JSON with its server-set id and meta, and the index rows.

    A pure function of its arguments, so it gives the same rows in whatever process it runs.
    """
    instant, last_updated = now
    keys: list[tuple[str, str]] = []
    contents: list[bytes] = []
    # Per index table: its columns and rows.
    index_rows: dict[str, tuple[tuple[str, ...], list[tuple]]] = {}
    for rtype, rid, resource in items:
        body, content = _stamped(resource, rtype, rid, 1, instant)
        keys.append((rtype, rid))
        contents.append(content)
        key = (layer_id, rtype, rid)
        for kind, rows in index_tuples(registry, body).items():
            batch = index_rows.get(kind)
            if batch is None:
                batch = index_rows[kind] = (STORED_COLUMNS[kind], [])
            batch[1].extend([key + row for row in rows])
    return PreparedCreates(layer_id, instant, last_updated, tuple(keys), tuple(contents), index_rows)


_CURRENT_COLUMNS = (
    resources.c.layer_id,
    resources.c.resource_type,
    resources.c.id,
    resources.c.version_id,
    resources.c.last_updated,
    resources.c.deleted,
    resources.c.content,
)


def _current_statement(depth: int) -> Select:
    """The read-by-id statement for a view of ``depth`` layers."""
    layer_params = [bindparam(f"layer{n}") for n in range(depth)]
    return select(*_CURRENT_COLUMNS).where(
        resources.c.layer_id.in_(layer_params) if depth > 1 else resources.c.layer_id == layer_params[0],
        resources.c.resource_type == bindparam("rtype"),
        resources.c.id == bindparam("rid"),
    )


_CURRENT_MANY_SQL: dict[tuple[str, int, int], tuple[str, tuple[str, ...] | None]] = {}


def _current_many_sql(conn: Connection, depth: int, count: int) -> tuple[str, tuple[str, ...] | None]:
    """The SQL reading up to ``count`` ids of one type in a view of ``depth`` layers, compiled once per size,
    and its parameter order if positional (``count`` is a power of two: callers pad their ids).

    A loader looks up every PUT of a Bundle this way: an expanding IN, compiled again for every call,
    cost more than running it.
    """
    key = (conn.dialect.name, depth, count)
    found = _CURRENT_MANY_SQL.get(key)
    if found is None:
        statement = select(*_CURRENT_COLUMNS).where(
            resources.c.layer_id.in_([bindparam(f"layer{n}") for n in range(depth)]),
            resources.c.resource_type == bindparam("rtype"),
            resources.c.id.in_([bindparam(f"id{n}") for n in range(count)]),
        )
        compiled = statement.compile(dialect=conn.dialect)
        found = (str(compiled), tuple(compiled.positiontup or ()) if compiled.positional else None)
        _CURRENT_MANY_SQL[key] = found
    return found


_CURRENT_SQL: dict[tuple[str, int], tuple[str, tuple[str, ...] | None]] = {}


def _current_sql(dialect: Dialect, depth: int) -> tuple[str, tuple[str, ...] | None]:
    """The read-by-id SQL in the driver's own dialect, compiled once, and its parameter order if positional.

    Reads by id are the hottest query: building and compiling the statement
    each time cost several times what running it does, and even a cached
    compiled statement spent more in SQLAlchemy's execution machinery than in
    the database.
    """
    key = (dialect.name, depth)
    found = _CURRENT_SQL.get(key)
    if found is None:
        compiled = _current_statement(depth).compile(dialect=dialect)
        found = (str(compiled), tuple(compiled.positiontup or ()) if compiled.positional else None)
        _CURRENT_SQL[key] = found
    return found


def _current_query(dialect: Dialect, view: View, rtype: str, rid: str) -> tuple[str, Sequence[Any] | dict[str, Any]]:
    sql, order = _current_sql(dialect, len(view.layers))
    params: dict[str, str] = {f"layer{n}": layer for n, layer in enumerate(view.layers)}
    params["rtype"], params["rid"] = rtype, rid
    return sql, tuple(params[name] for name in order) if order else params


def _current_found(view: View, rows: list[tuple[Any, ...]]) -> Stored | None:
    if not rows:
        return None
    # Columns as _CURRENT_COLUMNS: layer_id first.  The view's nearest layer wins.
    row = rows[0] if len(rows) == 1 else min(rows, key=lambda r: view.layers.index(r[0]))
    return Stored(row[1], row[2], row[3], row[4], bool(row[5]), row[6], row[0])


class IndexRowsHeld(Exception):
    """Something would read or rewrite index rows while a loader holds some back (``HeldIndexRows``)."""


class HeldIndexRows:
    """New resources' index rows held back by a bulk load, to go in later all together, sorted by resource.

    Inserted bundle by bundle, in no order, they cost most of a load's database time: every row went to
    a random place in its table's resource-first index.  The rows of thousands of resources, sorted, went
    in for half the time (SQLite, a thousand patients).  While rows are held, searches in the transaction
    would miss them and a rewrite would leave stale ones, so ``Repository.write`` and searches refuse with
    ``IndexRowsHeld`` until they are in; the loader then inserts them and runs the unit again.

    Rows are held for one unit of work at a time (``begin``), and kept or dropped with it (``end``), as its
    savepoint is released or rolled back.  Installed on the connection (``HELD_INDEX_ROWS`` in ``conn.info``).
    """

    def __init__(self) -> None:
        self._kept: dict[str, tuple[tuple[str, ...], list[tuple]]] = {}
        self._unit: dict[str, tuple[tuple[str, ...], list[tuple]]] | None = None

    @property
    def holding(self) -> bool:
        """Whether a unit is open whose new resources' rows are to be held."""
        return self._unit is not None

    def begin(self) -> None:
        self._unit = {}

    def hold(self, index_rows: dict[str, tuple[tuple[str, ...], list[tuple]]]) -> None:
        assert self._unit is not None
        _merge(self._unit, index_rows)

    def end(self, *, keep: bool) -> None:
        if keep and self._unit:
            _merge(self._kept, self._unit)
        self._unit = None

    def check(self) -> None:
        """Raise ``IndexRowsHeld`` if any rows are held."""
        if self._kept or self._unit:
            raise IndexRowsHeld

    def insert(self, conn: Connection) -> None:
        """Insert the kept rows (sorted by layer, type and resource id) and hold nothing more."""
        for kind, (columns, rows) in self._kept.items():
            # Stable sorts by id, then type, then layer: sorted by (layer, type, id), equal keys as held.  Three
            # sorts on str keys (which CPython compares on a fast path) took a third of the time of one sort on
            # (layer, type, id) tuples.
            for position in (2, 1, 0):
                rows.sort(key=itemgetter(position))
            _insert_many(conn, INDEX_TABLES[kind], columns, rows)
        self._kept = {}


def _merge(
    into: dict[str, tuple[tuple[str, ...], list[tuple]]], index_rows: dict[str, tuple[tuple[str, ...], list[tuple]]]
) -> None:
    """Add rows to those of the same kind, in the column order those have."""
    for kind, (columns, rows) in index_rows.items():
        kept_columns, kept = into.setdefault(kind, (columns, []))
        if kept_columns == columns:
            kept.extend(rows)
        else:
            order = [columns.index(name) for name in kept_columns]
            kept.extend([tuple(row[n] for n in order) for row in rows])


HELD_INDEX_ROWS = "held_index_rows"


def check_index_rows(conn: Connection) -> None:
    """Before reading or rewriting index rows in ``conn``'s transaction: none may be held back."""
    held = conn.info.get(HELD_INDEX_ROWS)
    if held is not None:
        held.check()


class Repository:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    # ---- reads -------------------------------------------------------------------------------

    def current(self, conn: Connection, view: View, rtype: str, rid: str) -> Stored | None:
        """The visible version (possibly a deletion tombstone) or None if it never existed here."""
        return _current_found(view, driver_rows(conn, *_current_query(conn.dialect, view, rtype, rid)))

    async def current_on_loop(self, db: Database, view: View, rtype: str, rid: str) -> Stored | None:
        """``current`` in a unit of work of its own, awaited on the event loop (``Database.loop_rows``)."""
        return _current_found(view, await db.loop_rows(*_current_query(db.engine.dialect, view, rtype, rid)))

    def current_many(
        self, conn: Connection, view: View, keys: list[tuple[str, str]], *, include_deleted: bool = False
    ) -> dict[tuple[str, str], Stored]:
        """Visible, non-deleted versions of several resources at once (for _include and $everything).

        ``include_deleted`` keeps deletion tombstones, so that a missing key means the
        resource never existed in this view (what ``create_many`` needs to know).
        """
        found: dict[tuple[str, str], Stored] = {}
        by_type: dict[str, list[str]] = {}
        for rtype, rid in keys:
            by_type.setdefault(rtype, []).append(rid)
        for rtype, ids in by_type.items():
            for chunk in _chunks(sorted(set(ids)), 512):
                # Padded with its last id to a power of two (an id twice in IN is the same as once), so that few
                # statements are ever compiled.
                size = 1 << (len(chunk) - 1).bit_length()
                sql, order = _current_many_sql(conn, len(view.layers), size)
                params = {f"layer{n}": layer for n, layer in enumerate(view.layers)}
                params.update({f"id{n}": chunk[min(n, len(chunk) - 1)] for n in range(size)})
                params["rtype"] = rtype
                rows = conn.exec_driver_sql(sql, tuple(params[name] for name in order) if order else params).all()
                for row in sorted(rows, key=lambda r: -view.layers.index(r.layer_id)):
                    found[(rtype, row.id)] = _stored(row)
        return {k: v for k, v in found.items() if include_deleted or not v.deleted}

    def version(self, conn: Connection, view: View, rtype: str, rid: str, version_id: int) -> Stored | None:
        rows = conn.execute(
            select(resource_versions).where(
                resource_versions.c.layer_id.in_(view.layers),
                resource_versions.c.resource_type == rtype,
                resource_versions.c.id == rid,
                resource_versions.c.version_id == version_id,
            )
        ).all()
        if not rows:
            return None
        return _version(min(rows, key=lambda r: view.layers.index(r.layer_id)))

    def history(
        self,
        conn: Connection,
        view: View,
        *,
        rtype: str | None = None,
        rid: str | None = None,
        since: str | None = None,
        at: tuple[str, str] | None = None,
        until: str | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> tuple[list[Stored], int]:
        """Versions newest first, and how many there are in all.

        ``since``: versions written at or after it.  ``at``: versions that were
        current at some point in the closed range ``(low, high)``, i.e. written
        by ``high`` and not superseded by ``low`` (the spec's ``_at``).
        ``until``: versions written at or before it, which pins the pages of one
        history listing while others keep writing.  Across the baseline boundary
        a sandbox's history is the baseline's versions followed by its own: the
        sandbox's versions continue the baseline's numbering, so the next
        version of any version is ``version_id + 1`` in one of the view's layers.
        """
        v = resource_versions
        conditions = [v.c.layer_id.in_(view.layers)]
        if rtype:
            conditions.append(v.c.resource_type == rtype)
        if rid:
            conditions.append(v.c.id == rid)
        if since:
            conditions.append(v.c.last_updated >= since)
        if until:
            conditions.append(v.c.last_updated <= until)
        if at:
            low, high = at
            later = resource_versions.alias("later")
            superseded = (
                select(later.c.id)
                .where(
                    later.c.layer_id.in_(view.layers),
                    later.c.resource_type == v.c.resource_type,
                    later.c.id == v.c.id,
                    later.c.version_id == v.c.version_id + 1,
                    later.c.last_updated <= low,
                )
                .exists()
            )
            conditions.extend([v.c.last_updated <= high, ~superseded])
        where = and_(*conditions)
        total = conn.execute(select(func.count()).select_from(v).where(where)).scalar_one()
        if limit <= 0:
            return [], total
        rows = conn.execute(
            select(v)
            .where(where)
            .order_by(v.c.last_updated.desc(), v.c.resource_type, v.c.id, v.c.version_id.desc())
            .limit(limit)
            .offset(offset)
        ).all()
        return [_version(r) for r in rows], total

    # ---- the write path ----------------------------------------------------------------------

    def write(
        self,
        conn: Connection,
        view: View,
        resource: dict[str, Any] | None,
        actor: Actor,
        *,
        rtype: str,
        rid: str,
        method: str,
        expected_version: int | None = None,
        previous: Stored | None = None,
        new: bool = False,
    ) -> Stored:
        """Store a new version of ``rtype/rid`` (``resource=None`` deletes it) in ``view``'s own layer.

        ``resource`` is already validated.  ``previous`` is the caller's view of the
        current version (read in this transaction); ``expected_version`` is an
        If-Match version that must still be current.  ``new``: ``rid`` was just made
        by ``new_id``, so there is no current version to look up (were there one, the
        insert would fail as a conflict).  A concurrent writer that got there first
        makes this raise 409, and the caller's transaction rolls back.
        """
        check_index_rows(conn)
        if previous is None and not new:
            previous = self.current(conn, view, rtype, rid)
        current_version = previous.version_id if previous else 0
        if expected_version is not None and expected_version != current_version:
            raise FhirError.of(
                412,
                "conflict",
                f"{rtype}/{rid} is at version {current_version}, not the version {expected_version} in If-Match",
            )
        version_id = current_version + 1
        instant, last_updated = instant_now()
        if previous is not None and last_updated <= previous.last_updated:
            last_updated = previous.last_updated  # clocks can step back; keep history ordered
        content: bytes | None = None
        if resource is not None:
            resource, content = _stamped(resource, rtype, rid, version_id, instant)
        deleted = resource is None
        overlay = view.overlay
        values = {
            "version_id": version_id,
            "last_updated": last_updated,
            "deleted": deleted,
            "content": content,
        }
        key = {"layer_id": overlay, "resource_type": rtype, "id": rid}
        replacing = previous is not None and previous.layer_id == overlay
        action = "delete" if deleted else ("create" if previous is None or previous.deleted else "update")
        try:
            if replacing:
                where = {"b_layer_id": overlay, "b_resource_type": rtype, "b_id": rid, "b_version_id": current_version}
                if driver_execute(conn, _UPDATE_CURRENT, {**values, **where}) != 1:
                    raise _conflict(rtype, rid)
            row = (overlay, rtype, rid, version_id, last_updated, deleted, content)
            event = (overlay, rtype, rid, version_id, action, actor.id, actor.route, last_updated)
            if conn.dialect.name == "postgresql":
                self._write_as_one(conn, row, method, actor, resource, event, replacing=replacing)
            else:
                if not replacing:
                    driver_execute(conn, _INSERT_CURRENT, {**key, **values})
                version = {**key, **values, "method": method, "actor": actor.id, "route": actor.route}
                driver_execute(conn, _INSERT_VERSION, version)
                self._reindex(conn, overlay, rtype, rid, resource, replacing=replacing)
                driver_execute(conn, _INSERT_OUTBOX, dict(zip(_OUTBOX_COLUMNS, event, strict=True)))
        except IntegrityError:
            raise _conflict(rtype, rid) from None
        if overlay not in conn.info.get(HELD_LAYERS, ()):
            _hold_layer(conn, overlay)
        return Stored(rtype, rid, version_id, last_updated, deleted, content, overlay, method, actor.id, actor.route)

    def _write_as_one(
        self,
        conn: Connection,
        row: tuple[Any, ...],
        method: str,
        actor: Actor,
        resource: dict | None,
        event: tuple[Any, ...],
        *,
        replacing: bool,
    ) -> None:
        """PostgreSQL: the version's rows after the current row's update (``_pg_write_sql``): the current row
        unless ``replacing``, the version, the old index rows' removal if ``replacing``, the new ones, the
        outbox ``event``."""
        layer_rtype_rid = row[:3]
        index = index_tuples(self.registry, resource) if resource is not None else {}
        sql, recurring = _pg_write_sql(conn, insert_current=not replacing, replacing=replacing, index=index)
        params: list[Any] = [] if replacing else list(row)
        params += [*row, method, actor.id, actor.route]
        if replacing:
            params += layer_rtype_rid * len(INDEX_TABLES)
        for rows in index.values():
            params += [value for r in rows for value in (*layer_rtype_rid, *r)]
        params += event
        driver_execute_numbered(conn, sql, params, prepare=recurring)

    def _reindex(
        self, conn: Connection, layer_id: str, rtype: str, rid: str, resource: dict | None, *, replacing: bool
    ) -> None:
        if replacing:
            key = {"layer_id": layer_id, "resource_type": rtype, "resource_id": rid}
            for statement in _DELETE_INDEX_ROWS:
                driver_execute(conn, statement, key)
        if resource is None:
            return
        prefix = (layer_id, rtype, rid)
        for kind, rows in index_tuples(self.registry, resource).items():
            if conn.dialect.name == "postgresql":
                # One statement of many rows: psycopg runs an executemany in a pipeline of its own, whose
                # setup and sync cost more than the few rows a resource has.
                params = [value for row in rows for value in prefix + row]
                driver_execute_sql(conn, _index_insert_sql(conn, kind, len(rows)), params)
            else:
                driver_executemany(conn, _index_insert_sql(conn, kind, 1), [prefix + row for row in rows])

    def rewrite_index_rows(self, conn: Connection, layer_id: str, stored: list[tuple[str, str, bytes]]) -> None:
        """Replace the index rows of stored resources of one layer (type, id, current content) with those their
        content gives now (``sandbox.store.reindex``).  Nothing else changes: no version, no outbox event."""
        by_type: dict[str, list[str]] = {}
        for rtype, rid, _ in stored:
            by_type.setdefault(rtype, []).append(rid)
        for rtype, rids in by_type.items():
            for chunk in _chunks(rids, 500):
                for table in INDEX_TABLES.values():
                    where = (
                        table.c.layer_id == layer_id,
                        table.c.resource_type == rtype,
                        table.c.resource_id.in_(chunk),
                    )
                    conn.execute(delete(table).where(*where))
        rows: dict[str, list[tuple]] = {}
        for rtype, rid, content in stored:
            for kind, found in index_tuples(self.registry, parse_json(content)).items():
                rows.setdefault(kind, []).extend((layer_id, rtype, rid, *row) for row in found)
        for kind, found in rows.items():
            _insert_many(conn, INDEX_TABLES[kind], STORED_COLUMNS[kind], found)

    def create_many(
        self,
        conn: Connection,
        view: View,
        items: list[tuple[str, str, dict[str, Any]]],
        actor: Actor,
        *,
        method: str = "POST",
    ) -> list[Stored]:
        """Store version 1 of several new resources (``(type, id, resource)``, already validated).

        The same rows as ``write`` would store for each, one statement per table
        rather than eight or so per resource: a transaction Bundle of creates spent
        most of its time issuing statements.  Only for ids that exist in no layer
        of the view, not even as a tombstone (server-assigned UUIDs, or ids the
        caller looked up in this transaction), so there is no previous version.
        ``method`` is what the version records: POST, or PUT for update-as-create.
        """
        prepared = prepare_creates(self.registry, view.overlay, items, instant_now())
        return self.store_creates(conn, view, prepared, actor, method=method)

    def store_creates(
        self, conn: Connection, view: View, prepared: PreparedCreates, actor: Actor, *, method: str
    ) -> list[Stored]:
        """The second half of ``create_many``: store what ``prepare_creates`` worked out, as it is.

        The loader prepares in worker processes and stores here, in the one process that holds the
        database transaction.
        """
        if prepared.layer_id != view.overlay:
            raise ValueError(f"rows prepared for layer '{prepared.layer_id}' cannot go into '{view.overlay}'")
        if not prepared.keys:
            return []
        overlay, last_updated = prepared.layer_id, prepared.last_updated
        current_rows = [
            (overlay, rtype, rid, 1, last_updated, False, content)
            for (rtype, rid), content in zip(prepared.keys, prepared.contents, strict=True)
        ]
        version_rows = [(*row, method, actor.id, actor.route) for row in current_rows]
        dbapi_integrity_error = conn.dialect.loaded_dbapi.IntegrityError
        try:
            _insert_many(conn, resources, _CURRENT_NAMES, current_rows)
            _insert_many(conn, resource_versions, _VERSION_NAMES, version_rows)
        except (IntegrityError, dbapi_integrity_error):
            raise FhirError.of(
                409, "conflict", "A resource with one of the new ids already exists; try again"
            ) from None
        held = conn.info.get(HELD_INDEX_ROWS)
        if held is not None and held.holding:
            held.hold(prepared.index_rows)
        else:
            for kind, (columns, rows) in prepared.index_rows.items():
                _insert_many(conn, INDEX_TABLES[kind], columns, rows)
        outbox_rows = [
            (overlay, rtype, rid, 1, "create", actor.id, actor.route, last_updated) for rtype, rid in prepared.keys
        ]
        _insert_many(conn, outbox, _OUTBOX_COLUMNS, outbox_rows)
        if overlay not in conn.info.get(HELD_LAYERS, ()):
            _hold_layer(conn, overlay)
        return prepared.stored(actor, method)

    def new_id(self) -> str:
        return new_id()


# The single-resource write path's statements, built once.  Built per call with .values(...), SQLAlchemy
# coerced every value and computed a cache key over them on each write: a third of the CPU of storing one
# resource (a conditional update from an HL7 message, a chart form's save).
_INSERT_CURRENT = insert(resources)
_INSERT_VERSION = insert(resource_versions)
_INSERT_OUTBOX = insert(outbox)
_UPDATE_CURRENT = (
    update(resources)
    .where(
        resources.c.layer_id == bindparam("b_layer_id"),
        resources.c.resource_type == bindparam("b_resource_type"),
        resources.c.id == bindparam("b_id"),
        resources.c.version_id == bindparam("b_version_id"),
    )
    .values(
        version_id=bindparam("version_id"),
        last_updated=bindparam("last_updated"),
        deleted=bindparam("deleted"),
        content=bindparam("content"),
    )
)
_DELETE_INDEX_ROWS = tuple(
    delete(table).where(
        table.c.layer_id == bindparam("layer_id"),
        table.c.resource_type == bindparam("resource_type"),
        table.c.resource_id == bindparam("resource_id"),
    )
    for table in INDEX_TABLES.values()
)
# FOR KEY SHARE: the weakest row lock, which writes of one sandbox take together, and which only a reset's or
# delete's FOR UPDATE (``sandboxes._lock``) waits for and makes wait.  Writes stamped the row (an UPDATE of
# last_activity) until that held it exclusively: a sandbox's write transactions on PostgreSQL then committed
# one behind the other, the second busiest statement under Bundle ingest.  SQLite renders no lock clause (its
# write transactions take turns anyway); the read still finds a deleted sandbox.
_HOLD_LAYER = select(layers.c.id).where(layers.c.id == bindparam("overlay")).with_for_update(read=True, key_share=True)

# The same for a view's overlay, matching only while the sandbox still has the view's baseline (one statement
# per baseline depth: a NULL baseline is IS NULL, not = NULL).
_HOLD_VIEW = {
    False: _HOLD_LAYER.where(layers.c.kind == "sandbox", layers.c.baseline_id.is_(None)),
    True: _HOLD_LAYER.where(layers.c.kind == "sandbox", layers.c.baseline_id == bindparam("baseline")),
}

_CURRENT_NAMES = ("layer_id", "resource_type", "id", "version_id", "last_updated", "deleted", "content")
_VERSION_NAMES = (*_CURRENT_NAMES, "method", "actor", "route")
_OUTBOX_COLUMNS = ("layer_id", "resource_type", "resource_id", "version_id", "action", "actor", "route", "created_at")


_INDEX_INSERT_SQL: dict[tuple[str, str, int], str] = {}


def _index_insert_sql(conn: Connection, kind: str, count: int) -> str:
    """The INSERT of ``count`` rows of an index table kind, in the driver's style, built once per dialect and
    size.  Through SQLAlchemy, its per-row parameter handling cost more than SQLite's insert (``_insert_many``)."""
    key = (conn.dialect.name, kind, count)
    sql = _INDEX_INSERT_SQL.get(key)
    if sql is None:
        columns = STORED_COLUMNS[kind]
        row = f"({driver_placeholders(conn, len(columns))})"
        target = _insert_target(conn.dialect, INDEX_TABLES[kind], columns)
        sql = f"INSERT INTO {target} VALUES {', '.join([row] * count)}"
        if count <= 64:  # resources with more rows than that are rare: not every size is worth keeping
            _INDEX_INSERT_SQL[key] = sql
    return sql


_PG_WRITE_SQL: dict[tuple[bool, bool, tuple[tuple[str, int], ...]], str] = {}


def _pg_write_sql(
    conn: Connection, *, insert_current: bool, replacing: bool, index: dict[str, list[tuple]]
) -> tuple[str, bool]:
    """PostgreSQL: a version's rows as ONE statement, data-modifying WITH clauses ahead of the outbox insert: the
    current row (unless it is being updated), the version, the old index rows' removal (``replacing``), the new
    index rows and the outbox event, their parameters numbered in that order (index rows kind by kind).

    One at a time, these were six or more round trips a resource, each costing the server process more CPU
    than the row it wrote (an HL7 v2 ADT^A04 wrote 20 statements).  The clauses see one snapshot, so the
    removal cannot see, or remove, the rows inserted beside it; index tables have no unique keys to clash.
    Built once per shape (which kinds, how many rows of each), with PostgreSQL's own ``$n`` markers
    (``driver_execute_numbered``).  Also returned: whether the shape was written before and kept, so worth
    preparing on the server; a one-off shape (a resource of many index rows) is not, and would only push the
    recurring ones out of psycopg's cache of prepared statements.
    """
    shape = tuple((kind, len(rows)) for kind, rows in index.items())
    key = (insert_current, replacing, shape)
    sql = _PG_WRITE_SQL.get(key)
    if sql is not None:
        return sql, True
    quote = conn.dialect.identifier_preparer.quote
    numbers = itertools.count(1)

    def markers(count: int) -> str:
        return ", ".join(f"${next(numbers)}" for _ in range(count))

    def insert_sql(table: Table, columns: tuple[str, ...], count: int) -> str:
        names = ", ".join(quote(c) for c in columns)
        rows = ", ".join(f"({markers(len(columns))})" for _ in range(count))
        return f"INSERT INTO {quote(table.name)} ({names}) VALUES {rows}"

    clauses = []
    if insert_current:
        clauses.append(insert_sql(resources, _CURRENT_NAMES, 1))
    clauses.append(insert_sql(resource_versions, _VERSION_NAMES, 1))
    if replacing:
        for table in INDEX_TABLES.values():
            name, (layer, rtype, rid) = quote(table.name), (markers(1) for _ in range(3))
            clauses.append(
                f"DELETE FROM {name} WHERE {name}.layer_id = {layer} AND {name}.resource_type = {rtype} "
                f"AND {name}.resource_id = {rid}"
            )
    for kind, count in shape:
        clauses.append(insert_sql(INDEX_TABLES[kind], STORED_COLUMNS[kind], count))
    clauses.append(insert_sql(outbox, _OUTBOX_COLUMNS, 1))
    sql = "WITH " + ", ".join(f"w{n} AS ({clause})" for n, clause in enumerate(clauses[:-1])) + " " + clauses[-1]
    if all(count <= 64 for _, count in shape) and len(_PG_WRITE_SQL) < 4096:  # not every odd shape is kept
        _PG_WRITE_SQL[key] = sql
    return sql, False


def _insert_many(conn: Connection, table: Table, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """Many rows into a table, in one go.

    A Bundle's index rows (twenty or so per resource) went through SQLAlchemy's per-row parameter
    handling, a third of the cost of storing them; these values are already what the columns hold
    (str, int, float, bool, bytes, None), so there is nothing for it to convert.  PostgreSQL takes them
    by COPY, SQLite as one prepared statement executed for every row, at the driver: through
    ``exec_driver_sql`` SQLAlchemy's execution context cost nearly as much as SQLite's inserts (a
    10-entry Bundle makes nine such calls).  A row that violates a unique key raises SQLAlchemy's
    IntegrityError (the driver's, by COPY) and leaves the transaction to the caller's rollback.
    """
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        with cursor, cursor.copy(f"COPY {_insert_target(conn.dialect, table, columns)} FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    else:
        target, markers = _insert_target(conn.dialect, table, columns), driver_placeholders(conn, len(columns))
        driver_executemany(conn, f"INSERT INTO {target} VALUES ({markers})", rows)


@functools.lru_cache(maxsize=128)
def _insert_target(dialect: Dialect, table: Table, columns: tuple[str, ...]) -> str:
    """``table (column, ...)``, quoted for the dialect."""
    quote = dialect.identifier_preparer.quote
    return f"{quote(table.name)} ({', '.join(quote(c) for c in columns)})"


def _stamped(resource: dict[str, Any], rtype: str, rid: str, version_id: int, instant: str) -> tuple[dict, bytes]:
    """The resource as stored: server-set id and meta.versionId/lastUpdated, then the client's elements as sent."""
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version_id)
    meta["lastUpdated"] = instant
    body = {"resourceType": rtype, "id": rid, "meta": meta}
    body.update((k, val) for k, val in resource.items() if k not in ("resourceType", "id", "meta"))
    return body, dump_json(body)


def _conflict(rtype: str, rid: str) -> FhirError:
    return FhirError.of(409, "conflict", f"{rtype}/{rid} was changed by another request at the same time; try again")


def _stored(row: Any) -> Stored:
    return Stored(
        row.resource_type, row.id, row.version_id, row.last_updated, bool(row.deleted), row.content, row.layer_id
    )


def _version(row: Any) -> Stored:
    return Stored(
        row.resource_type,
        row.id,
        row.version_id,
        row.last_updated,
        bool(row.deleted),
        row.content,
        row.layer_id,
        row.method,
        row.actor,
        row.route,
    )


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def hold_layer(conn: Connection, layer_id: str) -> bool:
    """Hold a layer (sandbox or baseline) until commit, as a write does (``_HOLD_LAYER``); False if it is gone."""
    return bool(driver_fetch(conn, _HOLD_LAYER, {"overlay": layer_id}))


def _hold_layer(conn: Connection, overlay: str) -> None:
    """Hold the layer until commit (``_HOLD_LAYER``); a layer deleted since the caller resolved its View (by
    another server process, whose cache invalidation never reaches this one) fails the write instead of
    leaving orphan rows."""
    if not hold_layer(conn, overlay):
        raise FhirError.of(404, "not-found", f"There is no sandbox '{overlay}' (it was deleted)")


# conn.info key: the overlays ``hold_view`` held in the connection's open transaction, which the writes in it
# need not hold again.  Whoever sets it removes it before the transaction ends.
HELD_LAYERS = "held_layers"


def hold_view(conn: Connection, view: View) -> bool:
    """Hold ``view``'s overlay once for a whole transaction, before its writes; False (nothing held) if the
    sandbox is gone, or was deleted and created again on another baseline, so that ``view`` no longer
    describes it.

    For a caller that writes many resources in one transaction with a View it cached: the hold gives the same
    guarantee as every write's own (a delete or reset committed before fails it; on PostgreSQL one in flight
    waits for this transaction, and this one for it), and checks the cached View against the row in the same
    statement.  Hold outside any savepoint that may roll back, then add the overlay to
    ``conn.info[HELD_LAYERS]``.
    """
    baseline = view.layers[1] if view.layered else None
    params = {"overlay": view.overlay}
    if baseline is not None:
        params["baseline"] = baseline
    return bool(driver_fetch(conn, _HOLD_VIEW[baseline is not None], params))
