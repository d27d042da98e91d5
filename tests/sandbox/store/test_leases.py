"""A ``LeaseQueue`` hands each due row to one worker at a time, in order, until its lease runs out."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, insert, select, update

from sandbox.store.leases import LeaseQueue

_meta = MetaData()
jobs = Table(
    "test_lease_jobs",
    _meta,
    Column("layer_id", String, primary_key=True),
    Column("id", String, primary_key=True),
    Column("kind", String, nullable=False),
    Column("status", String, nullable=False),
    Column("next_attempt_at", String, nullable=False),
    Column("lease_until", String),
    Column("claimed_by", String),
    Column("rank", Integer, nullable=False),
)
NOW = "2026-01-01T12:00:00.000000"
LATER = "2026-01-01T12:01:00.000000"
queue = LeaseQueue(jobs, where=[jobs.c.kind == "outbound"], order_by=[jobs.c.next_attempt_at, jobs.c.rank])


@pytest.fixture
def table(db) -> Iterator[None]:
    _meta.create_all(db.engine)
    with db.write() as conn:
        conn.execute(
            insert(jobs),
            [
                _job("late", next_attempt_at="2026-01-01T11:59:00.000000", rank=2),
                _job("early", next_attempt_at="2026-01-01T11:00:00.000000", rank=9),
                _job("tie", next_attempt_at="2026-01-01T11:59:00.000000", rank=1),
                _job("future", next_attempt_at="2026-01-01T12:00:00.000001"),  # not due yet
                _job("sent", status="sent"),  # done: never due again
                _job("inbound", kind="inbound"),  # not this queue's
                _job("leased", lease_until="2026-01-01T12:00:30.000000", claimed_by="w0"),  # another worker's
            ],
        )
    yield
    _meta.drop_all(db.engine)


def _job(row_id: str, **values: object) -> dict[str, object]:
    row: dict[str, object] = {"layer_id": "s1", "id": row_id, "kind": "outbound", "status": "pending", "rank": 0}
    row |= {"next_attempt_at": "2026-01-01T00:00:00.000000", "lease_until": None, "claimed_by": None}
    return {**row, **values}  # every row names every column: an insert of many takes its columns from the first


def _claim(db, worker: str, *, batch: int = 10, now: str = NOW) -> list[str]:
    def load(conn: Connection, layer_id: str, row_id: str) -> str:
        lease = conn.execute(select(jobs.c.claimed_by).where(jobs.c.layer_id == layer_id, jobs.c.id == row_id))
        assert lease.scalar_one() == worker  # read in the transaction that leased it
        return row_id

    return queue.claim(db, worker, now=now, until=LATER, batch=batch, load=load)


def test_due_rows_are_leased_oldest_first_and_in_batches(db, table):
    assert _claim(db, "w1", batch=2) == ["early", "tie"]
    assert _claim(db, "w1", batch=2) == ["late"]
    assert _claim(db, "w1") == []  # the rest are not due, not pending, another queue's, or leased


def test_a_leased_row_waits_for_its_lease_to_run_out(db, table):
    assert _claim(db, "w1") == ["early", "tie", "late"]
    assert _claim(db, "w2") == []
    # w1 died; once the leases have run out, w2 takes the rows (and w0's, whose lease ran out too).
    assert _claim(db, "w2", now="2026-01-01T12:05:00.000000") == ["leased", "early", "tie", "late", "future"]


def test_a_row_taken_between_the_pick_and_the_lease_is_skipped(db, table):
    """SQLite has no ``SKIP LOCKED``: the lease is taken only if the row is still due when it is written."""

    def taken_meanwhile(conn: Connection, layer_id: str, row_id: str) -> str:
        conn.execute(update(jobs).where(jobs.c.id == "late").values(status="sent"))
        return row_id

    claimed = queue.claim(db, "w1", now=NOW, until=LATER, batch=10, load=taken_meanwhile)
    assert claimed == ["early", "tie"]
    with db.read() as conn:
        assert conn.execute(select(jobs.c.claimed_by).where(jobs.c.id == "late")).scalar_one() is None
