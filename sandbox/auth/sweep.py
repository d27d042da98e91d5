"""The sweep: expired SMART rows deleted in bounded batches, so that their tables do not grow forever.

Past its ``expires_at``, a row goes:

- a launch, an unused authorization code, a client assertion's ``jti`` (a replay fails on ``exp`` by then);
- an access or refresh token, revoked or not: a token the server does not know is answered as an expired one is
  (introspection ``{"active": false}``, the FHIR API 401 ``invalid_token``, the token endpoint ``invalid_grant``);
- a used authorization code, once no active token of its grant remains: a second use of a code revokes what the
  first produced (RFC 6749 4.1.2), so the code stays while there is something left to revoke.

Tokens still valid (refresh tokens live for weeks) are never touched.  Each batch is a short transaction of its
own and a run stops after ``max_batches`` per table, so a backlog is worked off over several runs without holding
SQLite's one write lock, or the loop the sweep runs in, for long.  Several workers may sweep at once: on PostgreSQL
a batch takes its rows ``FOR UPDATE SKIP LOCKED``, so sweepers share the rows out and never wait on each other,
nor on a request that holds a row (that row waits for a later run).

The background loop of ``serve`` and ``worker`` runs ``SmartSweep`` (``sandbox/worker.py``: ``housekeeping``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, delete, false, literal, or_, select, tuple_

from sandbox.auth.tokens import stamp, utc_now
from sandbox.metrics import SWEPT_ROWS
from sandbox.store.database import Database
from sandbox.store.schema import smart_assertions, smart_codes, smart_launches, smart_tokens

BATCH = 500
MAX_BATCHES = 10  # per table and run: at most 5,000 rows of each, then the next run goes on


@dataclass(frozen=True)
class _Target:
    table: Table
    key: tuple[str, ...]  # the primary key: a batch names its rows by it
    expired: Callable[[Any, str], ColumnElement[bool]]  # (an alias of the table, the cutoff) -> the rows that go


def _past(row: Any, cutoff: str) -> ColumnElement[bool]:
    return row.c.expires_at < cutoff


def _code_done(row: Any, cutoff: str) -> ColumnElement[bool]:
    t = smart_tokens
    grant_alive = (
        select(t.c.token_hash)
        .where(t.c.sandbox_id == row.c.sandbox_id, t.c.grant_id == row.c.code_hash)
        .where(t.c.revoked == false(), t.c.expires_at > cutoff)
        .exists()
    )
    return and_(row.c.expires_at < cutoff, or_(row.c.used == false(), ~grant_alive))


TARGETS = (
    _Target(smart_launches, ("sandbox_id", "launch_hash"), _past),
    _Target(smart_tokens, ("sandbox_id", "token_hash"), _past),
    _Target(smart_codes, ("sandbox_id", "code_hash"), _code_done),
    _Target(smart_assertions, ("client_id", "jti"), _past),
)


def sweep_expired(db: Database, now: datetime, *, batch: int = BATCH, max_batches: int = MAX_BATCHES) -> dict[str, int]:
    """Delete the rows that expired before ``now`` (timezone-aware); how many went, by table."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (a naive time would be read as the server's local time)")
    if batch < 1 or max_batches < 1:
        raise ValueError(f"batch and max_batches must be 1 or more, not {batch} and {max_batches}")
    cutoff = stamp(now)
    swept: dict[str, int] = {}
    for target in TARGETS:
        swept[target.table.name] = count = _sweep(db, target, cutoff, batch, max_batches)
        if count:
            SWEPT_ROWS.labels(target.table.name).inc(count)
    return swept


def _sweep(db: Database, target: _Target, cutoff: str, batch: int, max_batches: int) -> int:
    row = target.table.alias("expired")
    condition = target.expired(row, cutoff)
    with db.read(snapshot=False) as conn:  # an idle sweep is one read: it takes no write lock
        if conn.execute(select(literal(1)).select_from(row).where(condition).limit(1)).first() is None:
            return 0
    chosen = select(*(row.c[k] for k in target.key)).where(condition).limit(batch).with_for_update(skip_locked=True)
    key = tuple_(*(target.table.c[k] for k in target.key))
    total = 0
    for _ in range(max_batches):
        # The batch's keys first, then the DELETE of those.  As one ``DELETE ... WHERE key IN (SELECT ... LIMIT n
        # FOR UPDATE SKIP LOCKED)``, whether the LIMIT held was up to PostgreSQL's plan: once a batch of 2 deleted
        # 7 rows (a test that failed once in CI runs; the plan was not caught).
        with db.write() as conn:
            keys = [tuple(found) for found in conn.execute(chosen)]
            count = conn.execute(delete(target.table).where(key.in_(keys))).rowcount if keys else 0
        total += count
        if count < batch:
            break
    return total


class SmartSweep:
    """``sweep_expired`` as a chore of a background loop: the loop calls it on every poll, and it sweeps at most
    once per ``every``.  Returns what it swept, or None when it was not yet time."""

    def __init__(
        self,
        db: Database,
        *,
        every: timedelta = timedelta(minutes=1),
        clock: Callable[[], datetime] = utc_now,
        batch: int = BATCH,
        max_batches: int = MAX_BATCHES,
    ) -> None:
        if every <= timedelta(0):
            raise ValueError(f"every must be a positive time, not {every}")
        self.db = db
        self.every = every
        self.clock = clock
        self.batch = batch
        self.max_batches = max_batches
        self._last: datetime | None = None

    def __call__(self) -> dict[str, int] | None:
        now = self.clock()
        # A clock set back (now before the last run) sweeps at once rather than waiting out the difference.
        if self._last is not None and self._last <= now < self._last + self.every:
            return None
        self._last = now  # before sweeping: a sweep that fails is tried again a period later, not on every poll
        return sweep_expired(self.db, now, batch=self.batch, max_batches=self.max_batches)
