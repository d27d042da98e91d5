"""Following the outbox by cursor (``sandbox.store.outbox``): the queries a consumer polls with stay cheap however
long the server has run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert, update

from sandbox.store import outbox
from sandbox.store.database import Database
from sandbox.store.schema import outbox as outbox_rows

_EVENT = {"layer_id": "default", "resource_type": "Observation", "version_id": 1, "action": "create"}
_EVENT.update({"actor": "trainee", "route": "fhir", "created_at": "2026-01-01T00:00:00.000000"})


def _outbox_after_a_load(tmp_path: Path, events: int) -> Database:
    """A SQLite store loaded, its statistics taken while every event was still to be handled."""
    db = Database(f"sqlite:///{tmp_path / 'outbox.db'}")
    db.create_schema()
    with db.write() as conn:
        conn.execute(insert(outbox_rows), [{**_EVENT, "resource_id": f"o{n}"} for n in range(events)])
    db.analyze()
    return db


def _plans_of_outbox_reads(db: Database, work: Any) -> list[str]:
    """SQLite's query plan of every SELECT on the outbox that ``work(conn)`` runs, in a write transaction."""
    statements: list[tuple[str, Any]] = []

    def grab(_conn, _cursor, statement, parameters, _context, _many) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT") and re.search(r"FROM outbox\s", statement + " "):
            statements.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", grab)
    try:
        with db.write() as conn:
            work(conn)
    finally:
        event.remove(db.engine, "before_cursor_execute", grab)
    with db.read() as conn:
        return [
            "\n".join(r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params).all())
            for sql, params in statements
        ]


def test_a_poll_for_news_reads_the_outbox_from_the_cursor_by_primary_key(tmp_path: Path) -> None:
    """Unordered, SQLite once answered "anything past the cursor?" from an index of other columns, one seek per
    distinct value, so idle polls grew slower by the hour; ordered by seq, it walks the primary key from the
    cursor."""
    db = _outbox_after_a_load(tmp_path, events=30000)
    with db.write() as conn:
        outbox.start_at_end(conn, "reader")
        assert outbox.has_news(conn, "a-consumer-that-never-ran")  # no cursor yet: any event at all is news

    plans = _plans_of_outbox_reads(db, lambda conn: outbox.has_news(conn, "reader"))
    assert len(plans) == 1
    assert "INTEGER PRIMARY KEY" in plans[0], plans
    with db.write() as conn:
        assert not outbox.has_news(conn, "reader")
        conn.execute(insert(outbox_rows).values(**_EVENT, resource_id="new"))
        assert outbox.has_news(conn, "reader")
    db.dispose()


def test_claiming_reads_the_events_past_the_cursor_by_primary_key(tmp_path: Path) -> None:
    db = _outbox_after_a_load(tmp_path, events=30000)
    with db.write() as conn:
        outbox.start_at_end(conn, "reader")
        conn.execute(
            update(outbox.outbox_cursors).where(outbox.outbox_cursors.c.consumer == "reader").values(last_seq=29995)
        )
    claimed: list[Any] = []
    plans = _plans_of_outbox_reads(db, lambda conn: claimed.extend(outbox.claim(conn, "reader", batch=10)))
    assert [e.seq for e in claimed] == [29996, 29997, 29998, 29999, 30000]
    assert {e.resource_type for e in claimed} == {"Observation"}
    assert len(plans) == 1
    assert "INTEGER PRIMARY KEY" in plans[0], plans
    db.dispose()


def test_each_consumer_s_lag_is_the_events_past_its_cursor(tmp_path: Path) -> None:
    db = _outbox_after_a_load(tmp_path, events=10)
    with db.write() as conn:
        outbox.start_at_end(conn, "caught-up")
        conn.execute(insert(outbox_rows), [{**_EVENT, "resource_id": f"new{n}"} for n in range(3)])
        lags = outbox.lags(conn, ["never-ran"])
    # The translator's cursor was made by the migration at the start of an empty outbox: every event is its work.
    assert lags == {"hl7v2-translate": 13, "caught-up": 3, "never-ran": 13}
    db.dispose()


def test_a_consumer_s_batch_and_its_cursor_commit_together(tmp_path: Path) -> None:
    db = _outbox_after_a_load(tmp_path, events=5)
    with db.write() as conn:
        outbox.start_at_end(conn, "reader")
    assert outbox.consume(db, "reader", lambda conn, events: len(events), batch=10) == (0, None)  # nothing new
    with db.write() as conn:
        conn.execute(insert(outbox_rows), [{**_EVENT, "resource_id": f"new{n}"} for n in range(3)])

    def fails(conn: Any, events: list[Any]) -> None:
        raise RuntimeError("the consumer's work failed")

    with pytest.raises(RuntimeError):
        outbox.consume(db, "reader", fails, batch=10)
    seen: list[str] = []

    def note(conn: Any, events: list[Any]) -> None:
        seen.extend(e.resource_id for e in events)

    # The failed batch moved nothing: the same events come again, two at a time.
    assert outbox.consume(db, "reader", note, batch=2) == (2, None)
    assert outbox.consume(db, "reader", note, batch=2) == (1, None)
    assert seen == ["new0", "new1", "new2"]
    with db.read() as conn:
        assert outbox.lags(conn)["reader"] == 0
    db.dispose()


def test_a_consumer_with_few_wanted_events_passes_over_the_others_in_larger_batches(tmp_path: Path) -> None:
    """A batch holds up to ``batch`` wanted events, among up to ``SCAN_FACTOR`` times as many: a consumer with
    nothing to do for most events takes a write transaction per many of them, not per ``batch``."""
    db = _outbox_after_a_load(tmp_path, events=1)
    with db.write() as conn:
        outbox.start_at_end(conn, "picky")  # past the load's event
        kinds = ["Observation"] * 25 + ["ServiceRequest"] + ["Observation"] * 3 + ["ServiceRequest"] * 3
        conn.execute(
            insert(outbox_rows),
            [{**_EVENT, "resource_type": kind, "resource_id": f"e{n}"} for n, kind in enumerate(kinds)],
        )
    batches: list[list[str]] = []

    def note(conn: Any, events: list[Any]) -> None:
        batches.append([e.resource_id for e in events])

    def wanted(event: Any) -> bool:
        return event.resource_type == "ServiceRequest"

    # At most 2 wanted events a batch, among at most 2 * SCAN_FACTOR = 20 events.
    assert outbox.SCAN_FACTOR == 10
    assert outbox.consume(db, "picky", note, batch=2, wanted=wanted) == (20, None)  # none wanted among them
    assert outbox.consume(db, "picky", note, batch=2, wanted=wanted) == (10, None)  # cut at e29, the second wanted
    assert outbox.consume(db, "picky", note, batch=2, wanted=wanted) == (2, None)  # e30, e31: both wanted
    assert outbox.consume(db, "picky", note, batch=2, wanted=wanted) == (0, None)
    assert batches == [[], ["e25", "e29"], ["e30", "e31"]]  # the handler gets the wanted events
    with db.read() as conn:
        assert outbox.lags(conn)["picky"] == 0
    db.dispose()
