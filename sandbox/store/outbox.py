"""Following the outbox by position: each consumer keeps its own cursor (the last ``seq`` it has handled).

Every consumer (the HL7 v2 translator, task re-checks, subscriptions) reads the
same rows through a cursor of its own, so each sees every event, and no event
row is written again after its insert.  ``claim`` runs in the caller's write
transaction and holds the cursor row until commit (PostgreSQL ``FOR UPDATE
SKIP LOCKED``; SQLite writers are already serialized), so the consumer's work
and the cursor's advance commit together and two workers of one consumer never
take the same events: while one worker holds the cursor, another gets nothing
and goes on to other work instead of queueing behind it.

On PostgreSQL a sequence hands out ``seq`` at insert, and transactions commit
in any order: ``seq`` 11 can be visible while 10 is still in flight.  A
cursor that jumped to 11 would never see 10, so ``claim`` stops before a gap
until the gap has lasted ``gap_timeout`` (then the missing row is taken to be
a rolled-back write, which never becomes visible).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from sandbox.fhir.values import instant_now
from sandbox.store.database import Database
from sandbox.store.schema import outbox, outbox_cursors

T = TypeVar("T")

_FMT = "%Y-%m-%dT%H:%M:%S.%f"


def backlog(handled: int, batch: int) -> bool:
    """Whether a consumer's loop should go again at once: its last batch came back full, so more events wait.

    Otherwise it waits its poll interval, so that the events of a burst of writes (a transaction Bundle every
    few milliseconds) are taken a batch at a time: each batch is a write transaction, which on SQLite every
    request's write queues behind, and the consumers taking a few events each as they came made dozens of them
    a second under load.
    """
    return handled >= batch


def batch_for(db: Database, batch: int) -> int:
    """A consumer's batch on ``db``, given its size on SQLite.  There each batch is a write transaction holding
    the one write lock that every request's write waits for, so batches stay small; on PostgreSQL a batch holds
    only the consumer's own cursor, and five times the events share each batch's fixed cost (the read that finds
    news, the cursor's lock and advance, the commit): under transaction Bundle ingest, 3-5% less CPU in the
    server and in PostgreSQL (translator and subscription batches of 500 against 100 and 200, alternated)."""
    return batch if db.is_sqlite else batch * 5


# The columns of an event that consumers read (not the translator's done_at and claimed_by).
EVENT_COLUMNS = (
    outbox.c.seq,
    outbox.c.layer_id,
    outbox.c.resource_type,
    outbox.c.resource_id,
    outbox.c.version_id,
    outbox.c.action,
    outbox.c.actor,
    outbox.c.route,
    outbox.c.created_at,
)
_NEXT_EVENTS = (
    select(*EVENT_COLUMNS).where(outbox.c.seq > bindparam("last")).order_by(outbox.c.seq).limit(bindparam("batch"))
)
# Ordered by seq so that SQLite walks the primary key from ``last``.  Unordered, it once chose a covering index
# of other columns and skipped through it: an idle poll grew slower the longer the server ran (the outbox is
# never pruned).
_ANY_AFTER = select(outbox.c.seq).where(outbox.c.seq > bindparam("last")).order_by(outbox.c.seq).limit(1)
_ANY = select(outbox.c.seq).limit(1)
_NEWEST = select(outbox.c.seq).order_by(outbox.c.seq.desc()).limit(1)
_OLDEST = select(outbox.c.seq).order_by(outbox.c.seq).limit(1)
_CURSORS = select(outbox_cursors.c.consumer, outbox_cursors.c.last_seq)


def consume(
    db: Database,
    consumer: str,
    handle: Callable[[Connection, list[Any]], T],
    *,
    batch: int,
    wanted: Callable[[Any], bool] | None = None,
) -> tuple[int, T | None]:
    """One batch of a consumer's work: the events past its cursor (at most ``batch``) given to ``handle`` and the
    cursor moved past them, in one write transaction.  Returns how many events were taken and what ``handle``
    returned (None when nothing was new).  An idle poll is a read, so it does not take SQLite's write lock.

    ``wanted``: for a consumer with work for few events, which ones (from the event's columns alone).  A batch
    then holds at most ``batch`` wanted events among up to ``SCAN_FACTOR`` times as many, and ``handle`` gets the
    wanted ones; the cursor moves past them all.  Each batch is a write transaction, which on SQLite every
    request's write waits behind (the translator under transaction Bundles of Encounters and Observations, none
    of which it sends: 16 batches a second -> 2)."""
    with db.read(snapshot=False) as conn:
        if not has_news(conn, consumer):
            return 0, None
    with db.write() as conn:
        if wanted is None:
            events = handed = claim(conn, consumer, batch=batch)
        else:
            events, handed = _up_to_wanted(claim(conn, consumer, batch=batch * SCAN_FACTOR), wanted, batch)
        handled = handle(conn, handed)
        advance(conn, consumer, events)
        return len(events), handled


# How many events a batch of a consumer with ``wanted`` events may pass over, as a multiple of its batch.
SCAN_FACTOR = 10


def _up_to_wanted(events: list[Any], wanted: Callable[[Any], bool], batch: int) -> tuple[list[Any], list[Any]]:
    """``events`` up to and including the ``batch``-th one that is ``wanted``, and the wanted ones among them."""
    found: list[Any] = []
    for n, event in enumerate(events):
        if wanted(event):
            found.append(event)
            if len(found) == batch:
                return events[: n + 1], found
    return events, found


def claim(conn: Connection, consumer: str, *, batch: int = 500, gap_timeout: float = 5.0) -> list[Any]:
    """The next events after the consumer's cursor (outbox rows, oldest first), up to the first unsettled gap."""
    last = _lock_cursor(conn, consumer)
    if last is None:
        return []  # another worker has the cursor: its batch is these events
    rows = conn.execute(_NEXT_EVENTS, {"last": last, "batch": batch}).all()
    if not rows or rows[-1].seq - last == len(rows):
        return rows  # numbered on from the cursor without a gap (seq is unique): nothing to wait for
    settled_before = (datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=gap_timeout)).strftime(_FMT)
    taken: list[Any] = []
    expected = last + 1
    for row in rows:
        if row.seq != expected and row.created_at > settled_before:
            break  # an earlier seq may still commit: wait for it (or for the gap to settle)
        taken.append(row)
        expected = row.seq + 1
    return taken


def advance(conn: Connection, consumer: str, events: list[Any]) -> None:
    """Move the cursor past ``events`` (in the same transaction as the work done for them; oldest first, as
    ``claim`` gives them)."""
    if events:
        conn.execute(_ADVANCE, {"b_consumer": consumer, "last": events[-1].seq, "now": instant_now()[1]})


def lags(conn: Connection, consumers: Iterable[str] = ()) -> dict[str, int]:
    """How far each consumer's cursor is behind the newest event, in events (a rolled-back write's number counts
    until the cursor passes it): every consumer with a cursor, and each of ``consumers``, one that has none yet
    being behind by every event kept (where its first ``claim`` starts it)."""
    newest = conn.execute(_NEWEST).scalar() or 0
    found = {consumer: max(newest - last, 0) for consumer, last in conn.execute(_CURSORS)}
    missing = [consumer for consumer in consumers if consumer not in found]
    if missing:
        oldest = conn.execute(_OLDEST).scalar()
        found.update({consumer: newest - oldest + 1 if oldest is not None else 0 for consumer in missing})
    return found


def has_news(conn: Connection, consumer: str) -> bool:
    """Whether anything lies past the cursor: a read, so that an idle poll does not take SQLite's write lock."""
    last = position(conn, consumer)
    if last is None:
        return conn.execute(_ANY).first() is not None
    return conn.execute(_ANY_AFTER, {"last": last}).first() is not None


def position(conn: Connection, consumer: str) -> int | None:
    return conn.execute(_POSITION, {"consumer": consumer}).scalar()


# Built once: a consumer asks these a few times a poll, and SQLAlchemy keys its compiled cache on each new build.
_POSITION = select(outbox_cursors.c.last_seq).where(outbox_cursors.c.consumer == bindparam("consumer"))
_POSITION_LOCKED = _POSITION.with_for_update(skip_locked=True)
_ADVANCE = (
    update(outbox_cursors)
    .where(outbox_cursors.c.consumer == bindparam("b_consumer"))
    .values(last_seq=bindparam("last"), updated_at=bindparam("now"))
)


def start_at_end(conn: Connection, consumer: str) -> None:
    """Skip everything already in the outbox (a new consumer need not replay history, e.g. bulk loads)."""
    if _lock_cursor(conn, consumer) is None:
        return  # another worker is consuming, so the cursor has a position already
    newest = conn.execute(_NEWEST).scalar() or 0
    conn.execute(
        update(outbox_cursors)
        .where(outbox_cursors.c.consumer == consumer, outbox_cursors.c.last_seq < newest)
        .values(last_seq=newest, updated_at=instant_now()[1])
    )


def _lock_cursor(conn: Connection, consumer: str) -> int | None:
    """The cursor's position, its row locked until commit; ``None`` if another worker holds it."""
    query = _POSITION if conn.dialect.name == "sqlite" else _POSITION_LOCKED
    last = conn.execute(query, {"consumer": consumer}).scalar()
    if last is not None:
        return last
    if position(conn, consumer) is not None:
        return None  # the row exists, so SKIP LOCKED passed over it: another worker holds it
    # A new consumer starts just before the oldest event kept, not at 0: numbers below it are not a gap to wait on.
    oldest = conn.execute(_OLDEST).scalar()
    start = oldest - 1 if oldest else 0
    try:
        with conn.begin_nested():
            conn.execute(insert(outbox_cursors).values(consumer=consumer, last_seq=start, updated_at=instant_now()[1]))
    except IntegrityError:
        pass  # another worker created it first; take it if it is free
    return conn.execute(query, {"consumer": consumer}).scalar()
