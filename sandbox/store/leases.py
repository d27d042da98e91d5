"""Work queued in a table and taken by whichever worker is free: outbound HL7 v2 messages, Subscription
notifications.

A row is due when its status is ``pending``, its ``next_attempt_at`` has come and no worker holds a lease on it
(or the lease ran out: the worker died mid-attempt).  A worker leases due rows one by one (a row another worker
leased in between is skipped, and on PostgreSQL the candidates are read ``FOR UPDATE SKIP LOCKED``), so each
attempt is made by one worker however many run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Connection, Table, and_, bindparam, or_, select, update

from sandbox.store.database import Database

T = TypeVar("T")


class LeaseQueue:
    """The due rows of ``table`` (its columns ``layer_id``, ``id``, ``status``, ``next_attempt_at``,
    ``lease_until``, ``claimed_by``), narrowed by ``where``, taken in ``order_by`` order.

    The statements are built once: a worker polls a few times a second, and each new build cost SQLAlchemy a
    cache key (about a quarter of a millisecond a poll)."""

    def __init__(
        self, table: Table, *, where: Sequence[ColumnElement[bool]] = (), order_by: Sequence[Any] = ()
    ) -> None:
        c = table.c
        now = bindparam("now")
        due = and_(
            *where,
            c.status == "pending",
            c.next_attempt_at <= now,
            or_(c.lease_until.is_(None), c.lease_until < now),
        )
        self._any_due = select(c.id).where(due).limit(1)
        pick = select(c.layer_id, c.id).where(due).order_by(*order_by).limit(bindparam("batch"))
        self._pick = pick
        self._pick_locked = pick.with_for_update(skip_locked=True)
        # Leased only if still due: another worker may have taken it since it was picked (SQLite has no SKIP LOCKED).
        self._lease = (
            update(table)
            .where(c.layer_id == bindparam("row_layer"), c.id == bindparam("row_id"), due)
            .values(claimed_by=bindparam("worker"), lease_until=bindparam("until"))
        )

    def claim(
        self,
        db: Database,
        worker_id: str,
        *,
        now: str,
        until: str,
        batch: int,
        load: Callable[[Connection, str, str], T],
    ) -> list[T]:
        """Lease up to ``batch`` rows due at ``now`` to ``worker_id`` until ``until``; each leased row as ``load``
        reads it (given the connection, its layer and its id) in the same transaction."""
        with db.read(snapshot=False) as conn:  # idle polls must not take SQLite's write lock
            if conn.execute(self._any_due, {"now": now}).first() is None:
                return []
        with db.write() as conn:
            picked = conn.execute(self._pick if db.is_sqlite else self._pick_locked, {"now": now, "batch": batch})
            claimed = []
            for layer_id, row_id in picked.all():
                leased = conn.execute(
                    self._lease,
                    {"now": now, "row_layer": layer_id, "row_id": row_id, "worker": worker_id, "until": until},
                )
                if leased.rowcount == 1:
                    claimed.append(load(conn, layer_id, row_id))
            return claimed
