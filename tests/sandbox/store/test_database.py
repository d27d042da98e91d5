"""Database housekeeping the loaders rely on."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from sandbox.demo import create_demo
from sandbox.store.database import WRITER_CACHE_MIB, Database, driver_rows


def test_analyze_after_a_load_gives_the_planner_statistics(db: Database):
    with db.write() as conn:
        conn.execute(text("INSERT INTO layers (id, kind, name, created_at) VALUES ('b', 'baseline', 'B', 'now')"))
    db.analyze()  # runs outside any transaction on both backends
    assert _analyzed(db, "layers")


def test_the_demo_cases_are_analyzed_once_loaded(app: Any, tmp_path: Path):
    """``serve`` loads the demo's cases into an empty store: without statistics the planner picks slow plans."""
    create_demo(app.state.db, app.state.fhir, tmp_path)
    assert _analyzed(app.state.db, "resources")


def _analyzed(db: Database, table: str) -> bool:
    """Whether the planner has statistics of ``table``."""
    with db.read() as conn:
        if db.is_sqlite:
            return bool(conn.execute(text("SELECT count(*) FROM sqlite_stat1 WHERE tbl = :t"), {"t": table}).scalar())
        return bool(
            conn.execute(
                text(
                    "SELECT last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL FROM pg_stat_user_tables "
                    "WHERE relname = :t AND schemaname = current_schema()"
                ),
                {"t": table},
            ).scalar()
        )


def test_every_sqlite_connection_is_set_up_for_a_server(tmp_path):
    """WAL with NORMAL sync, and a checkpoint every 10,000 pages: at SQLite's 1,000 a FHIR write (many index pages)
    paid a checkpoint every few commits."""
    db = Database(f"sqlite:///{tmp_path / 'settings.db'}")
    try:
        with db.read() as conn:
            names = ("journal_mode", "synchronous", "wal_autocheckpoint")
            pragma = {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar() for name in names}
        assert pragma == {"journal_mode": "wal", "synchronous": 1, "wal_autocheckpoint": 10000}
    finally:
        db.dispose()


def test_a_driver_level_read_joins_its_snapshot(db: Database):
    """``driver_rows`` skips SQLAlchemy's execution machinery (the read by id), not the transaction: in a snapshot
    read it begins one first, so what later statements see is what it saw."""
    with db.read() as conn:
        before = driver_rows(conn, "SELECT count(*) FROM layers", ())[0][0]
        assert conn.in_transaction()
        with db.write() as other:
            other.execute(text("INSERT INTO layers (id, kind, name, created_at) VALUES ('b', 'baseline', 'B', 'now')"))
        if db.is_sqlite:  # PostgreSQL reads committed rows statement by statement anyway
            assert conn.execute(text("SELECT count(*) FROM layers")).scalar() == before
    with db.read(snapshot=False) as conn:  # a single statement is its own snapshot: nothing to begin
        assert driver_rows(conn, "SELECT count(*) FROM layers", ())[0][0] == before + 1
        assert not conn.in_transaction() or not db.is_sqlite


def test_driver_level_errors_arrive_as_sqlalchemys(db: Database):
    with db.read(snapshot=False) as conn, pytest.raises(DBAPIError) as raised:
        driver_rows(conn, "SELECT * FROM no_such_table", ())
    assert "no_such_table" in str(raised.value) and not raised.value.connection_invalidated


@pytest.mark.postgres
def test_a_lost_connection_is_dropped_with_the_pool(pg_database: Database):
    """PostgreSQL restarted under a server: the read that finds its connection gone fails, and the next reads
    get new connections rather than the pool's other dead ones."""
    db = Database(pg_database.url)  # a pool of this test's own
    try:
        with db.read(snapshot=False) as first, db.read(snapshot=False) as second:
            pids = [driver_rows(conn, "SELECT pg_backend_pid()", ())[0][0] for conn in (first, second)]
            with pg_database.write() as other:
                for pid in pids:
                    other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(DBAPIError) as raised:
                driver_rows(first, "SELECT 1", ())
        assert raised.value.connection_invalidated
        with db.read(snapshot=False) as first, db.read(snapshot=False) as second:
            assert [driver_rows(conn, "SELECT 1", ()) for conn in (first, second)] == [[(1,)], [(1,)]]
    finally:
        db.dispose()


def test_a_read_on_the_event_loop_sees_what_was_committed(db: Database):
    """``loop_rows`` (the read by id's unit of work): no thread, a statement of its own, committed rows."""
    with db.write() as conn:
        conn.execute(text("INSERT INTO layers (id, kind, name, created_at) VALUES ('b', 'baseline', 'B', 'now')"))
    sql = "SELECT name FROM layers WHERE id = ?" if db.is_sqlite else "SELECT name FROM layers WHERE id = %s"
    assert asyncio.run(db.loop_rows(sql, ("b",))) == [("B",)]
    assert asyncio.run(db.loop_rows(sql, ("nope",))) == []
    with pytest.raises(DBAPIError) as raised:
        asyncio.run(db.loop_rows("SELECT * FROM no_such_table", ()))
    assert "no_such_table" in str(raised.value) and not raised.value.connection_invalidated
    assert asyncio.run(db.loop_rows(sql, ("b",))) == [("B",)]  # the failed statement left nothing behind


@pytest.mark.postgres
def test_postgresql_reads_on_the_event_loop_keep_their_connections_per_loop(pg_database: Database):
    """asyncpg's connections cannot change event loops: each loop opens its own, keeps them for its next reads,
    and no more at once than the limit; dispose ends them all on the server, whichever loop opened them (those
    loops are closed by then, so the connections cannot close their sockets themselves)."""
    db = Database(pg_database.url)
    reads = db._loop_reads
    assert reads is not None
    reads.size = 3
    pid_sql = "SELECT pg_backend_pid(), pg_sleep(0.05)"

    async def burst() -> set[int]:
        rows = await asyncio.gather(*(db.loop_rows(pid_sql, ()) for _ in range(8)))
        again = await db.loop_rows(pid_sql, ())
        return {r[0][0] for r in rows} | {again[0][0]}

    try:
        first = asyncio.run(burst())
        assert len(first) == 3  # eight reads, three connections, reused by the read after them
        second = asyncio.run(burst())  # another loop: connections of its own
        assert len(second) == 3 and not first & second
        opened = list(reads._opened)
        assert len(opened) == 6
        pids = [conn.get_server_pid() for conn in opened]
    finally:
        db.dispose()
    # pg_terminate_backend signals a backend and returns; it leaves pg_stat_activity when it has exited (on a busy
    # machine, a moment later).
    alive = _backends_alive(pg_database, pids)
    for _ in range(100):
        if not alive:
            break
        time.sleep(0.1)
        alive = _backends_alive(pg_database, pids)
    assert alive == []


def _backends_alive(db: Database, pids: list[int]) -> list[Any]:
    with db.read() as conn:
        return conn.execute(text("SELECT pid FROM pg_stat_activity WHERE pid = ANY(:pids)"), {"pids": pids}).all()


@pytest.mark.postgres
def test_slow_searches_on_the_event_loop_leave_the_reads_by_id_their_connections(pg_database: Database):
    """Searches take their loop connections from a limit of their own: with every one of those busy on a long
    statement, a read by id still runs at once, and the next search waits its turn."""
    db = Database(pg_database.url)
    assert db._loop_searches is not None
    db._loop_searches.size = 2

    async def run() -> None:
        slow = [asyncio.ensure_future(db.loop_rows("SELECT pg_sleep(1)", (), search=True)) for _ in range(2)]
        await asyncio.sleep(0.2)
        assert await asyncio.wait_for(db.loop_rows("SELECT 1", ()), 0.5) == [(1,)]
        waiting = asyncio.ensure_future(db.loop_rows("SELECT 2", (), search=True))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # both search connections are still busy
        assert await waiting == [(2,)]
        await asyncio.gather(*slow)

    try:
        asyncio.run(run())
    finally:
        db.dispose()


@pytest.mark.postgres
def test_a_lost_event_loop_connection_is_dropped_and_the_next_read_reconnects(pg_database: Database):
    db = Database(pg_database.url)

    async def run() -> None:
        pid = (await db.loop_rows("SELECT pg_backend_pid()", ()))[0][0]
        with pg_database.write() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(DBAPIError) as raised:
            await db.loop_rows("SELECT 1", ())
        assert raised.value.connection_invalidated
        assert await db.loop_rows("SELECT 1", ()) == [(1,)]

    try:
        asyncio.run(run())
    finally:
        db.dispose()


@pytest.mark.postgres
def test_a_cancelled_event_loop_read_does_not_give_its_connection_to_the_next(pg_database: Database):
    """A client that goes away cancels its read mid-statement; that connection's state is unknown, so it is
    closed rather than handed to the next read."""
    db = Database(pg_database.url)

    async def run() -> None:
        slow = asyncio.ensure_future(db.loop_rows("SELECT pg_backend_pid(), pg_sleep(5)", ()))
        await asyncio.sleep(0.2)
        assert db._loop_reads is not None
        busy = list(db._loop_reads._opened)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert len(busy) == 1 and busy[0].is_closed() and db._loop_reads._opened == []
        assert await db.loop_rows("SELECT 1", ()) == [(1,)]

    try:
        asyncio.run(asyncio.wait_for(run(), 4))  # not waiting out the cancelled statement's five seconds
    finally:
        db.dispose()


def test_sqlite_writers_of_one_process_wait_their_turn_without_holding_a_connection(tmp_path):
    """A second writer queues in the process and goes in once the first commits, rather than polling SQLite's
    lock from a connection of its own (which sleeps up to 100 ms between looks)."""
    db = Database(f"sqlite:///{tmp_path / 'queue.db'}")
    db.create_schema()
    second_wrote = threading.Event()

    def second() -> None:
        with db.write() as conn:
            conn.execute(text("INSERT INTO layers (id, kind, name, created_at) VALUES ('b', 'baseline', 'B', 'now')"))
        second_wrote.set()

    try:
        with db.write() as conn:
            conn.execute(text("INSERT INTO layers (id, kind, name, created_at) VALUES ('a', 'baseline', 'A', 'now')"))
            writer = threading.Thread(target=second)
            writer.start()
            writer.join(0.3)  # time enough to reach the queue
            assert not second_wrote.is_set()
            assert db.engine.pool.checkedout() == 1  # only the first writer's connection
        writer.join(10)
        assert second_wrote.is_set()
        with db.read() as conn:
            assert conn.execute(text("SELECT count(*) FROM layers WHERE id IN ('a', 'b')")).scalar_one() == 2
    finally:
        db.dispose()


def _sqlite_connection(conn: Any) -> Any:
    return conn.connection.driver_connection


def test_sqlite_writes_go_through_one_connection_kept_with_a_large_page_cache(tmp_path):
    """SQLite drops a connection's page cache when another connection has committed since its last transaction:
    one connection for every write keeps the index pages a write changes cached from one write to the next."""
    db = Database(f"sqlite:///{tmp_path / 'writer.db'}")
    db.create_schema()
    try:
        with db.write() as first:
            writer = _sqlite_connection(first)
            assert first.exec_driver_sql("PRAGMA cache_size").scalar() == -WRITER_CACHE_MIB * 1024
        with db.write() as second:
            assert _sqlite_connection(second) is writer
        with db.read() as conn:  # reads keep the pool's connections and their small caches
            assert _sqlite_connection(conn) is not writer
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -2048
    finally:
        db.dispose()


def test_a_failed_sqlite_write_rolls_back_and_the_kept_connection_writes_on(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'writer.db'}")
    db.create_schema()
    insert = "INSERT INTO layers (id, kind, name, created_at) VALUES (:id, 'baseline', 'L', 'now')"
    try:
        with pytest.raises(DBAPIError), db.write() as conn:
            conn.execute(text(insert), {"id": "a"})
            conn.execute(text(insert), {"id": "a"})  # the same key again
        with db.write() as conn:
            conn.execute(text(insert), {"id": "b"})
        with db.read() as conn:
            assert conn.execute(text("SELECT id FROM layers WHERE id IN ('a', 'b')")).scalars().all() == ["b"]
    finally:
        db.dispose()


def test_a_write_nested_in_another_still_fails_on_the_database_lock(tmp_path):
    """The kept connection is the outer write's: the inner one gets a pooled connection, which SQLite's lock
    holds off (its busy timeout is set short here), as it did before writes had a connection of their own."""
    db = Database(f"sqlite:///{tmp_path / 'writer.db'}")
    db.create_schema()
    try:
        with db.write() as outer:
            with db.engine.connect() as probe:  # a pooled connection, as the nested write will get
                probe.connection.driver_connection.execute("PRAGMA busy_timeout=50")
            with pytest.raises(DBAPIError, match="locked"), db.write() as inner:
                assert _sqlite_connection(inner) is not _sqlite_connection(outer)
        with db.write() as after:  # the kept connection is free again
            assert _sqlite_connection(after) is _sqlite_connection(outer)
    finally:
        db.dispose()


def test_disposing_closes_the_kept_writer_and_the_next_write_opens_another(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'writer.db'}")
    db.create_schema()
    try:
        with db.write() as conn:
            before = conn
        db.dispose()
        assert before.closed
        with db.write() as conn:
            assert not conn.closed and conn is not before
            conn.execute(text("INSERT INTO layers (id, kind, name, created_at) VALUES ('c', 'baseline', 'C', 'now')"))
        with db.read() as conn:
            assert conn.execute(text("SELECT count(*) FROM layers WHERE id = 'c'")).scalar_one() == 1
    finally:
        db.dispose()
