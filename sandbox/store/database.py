"""Engine creation for SQLite (embedded default) and PostgreSQL (production)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Dialect, Engine, Executable, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import QueuePool

from sandbox.store import migrations
from sandbox.store.checkpoints import WalCheckpoints
from sandbox.store.loop_reads import LoopReads
from sandbox.store.schema import layers, metadata

BULK_CACHE_MIB = 256
# The page cache of the SQLite connection kept for writes (``Database._write_connection``).
WRITER_CACHE_MIB = 32
# psycopg prepares a statement run this many times on one connection: never, in practice (see the engine's setup).
PREPARE_NEVER_BY_COUNT = 2**31 - 1


class Database:
    """One engine and the two kinds of unit of work the store uses: read and write.

    On SQLite, write transactions start with ``BEGIN IMMEDIATE`` so that two
    writers queue on the database lock instead of failing half-way with
    "database is locked" when a reader upgrades.
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        parsed = make_url(url)
        self.url = url
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        # Whether a read transaction shows all its statements one snapshot.  SQLite's does.  PostgreSQL at
        # READ COMMITTED (its default, and this store's) takes a snapshot per statement inside a transaction
        # too, so there a multi-statement read gains nothing from read()'s BEGIN and ROLLBACK round trips
        # (a quarter of a search's time) unless it needs a transaction for itself (a server-side cursor).
        self.read_snapshots = self.is_sqlite
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                url,
                echo=echo,
                poolclass=QueuePool,
                # Connections past pool_size are closed on return and reopened (with their pragmas) on the next
                # burst: keep enough for a busy server's concurrent requests.  Each holds at most its page cache.
                pool_size=16,
                max_overflow=16,
                # The connection used last goes out next: its page cache is the one still valid (SQLite drops a
                # connection's cache when another connection has written since).  FIFO handed each write a
                # connection whose cache the previous writes had invalidated (HL7 v2 bench, one sender: 2.4 ->
                # 2.1 ms of server CPU a message, three alternating runs each).
                pool_use_lifo=True,
                connect_args={"check_same_thread": False, "timeout": 30},
            )
            event.listen(self.engine, "connect", _sqlite_on_connect)
            event.listen(self.engine, "begin", _sqlite_on_begin)
        else:
            if parsed.drivername == "postgresql":
                parsed = parsed.set(drivername="postgresql+psycopg")
            # A generic plan for search SQL was ten times slower than a custom one: no statement is prepared on the
            # server for having been run often (a threshold never reached; None would turn ``prepare=True`` off
            # too).  The write path's statements ask for it (``driver_execute``, ``driver_execute_numbered``).
            self.engine = create_engine(
                parsed,
                echo=echo,
                pool_size=20,  # a new PostgreSQL connection costs milliseconds: no churn below 20 concurrent requests
                max_overflow=20,
                # No ping before each checkout: it was a round trip on every request (a quarter of a read by id).
                # If PostgreSQL restarts, the first statement on a dead connection fails, SQLAlchemy sees the
                # disconnect and drops the whole pool, so one request gets a 500 and the next ones reconnect.
                pool_pre_ping=False,
                connect_args={"prepare_threshold": PREPARE_NEVER_BY_COUNT},
            )

        # SQLite lets one writer in at a time, and one that finds the database locked sleeps in steps of up to
        # 100 ms before it looks again, so the database sat idle between one request's commit and the next
        # writer's wake-up.  This process's writers queue here instead and go in the moment it is free; the
        # busy timeout still covers other processes.  Re-entrant, so a write opened inside another in the same
        # thread fails on the database's lock as before rather than waiting here for ever.
        self._writer: AbstractContextManager[object] = threading.RLock() if self.is_sqlite else nullcontext()
        # SQLite: the connection every write goes through (``_write_connection``), and whether a write holds it.
        self._kept_writer: Connection | None = None
        self._kept_writer_busy = False
        # SQLite file: the thread that checkpoints its WAL after writes (the kept writer's connection makes none).
        self._checkpoints = (
            WalCheckpoints(self.engine)
            if self.is_sqlite and parsed.database and parsed.database != ":memory:"
            else None
        )

        # The same pool; connections taken through it run each statement in its own transaction.
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._inline: Connection | None = None
        self._inline_lock = threading.Lock()
        self._loop_reads: LoopReads | None = None
        self._loop_searches: LoopReads | None = None
        if not self.is_sqlite:
            # The connection arguments the engine's own connections get (host, options such as search_path...).
            _, connect_kwargs = self.engine.dialect.create_connect_args(self.engine.url)
            self._loop_reads = LoopReads(connect_kwargs)
            # Searches wait for connections of their own: a burst of slow ones (a count over a whole store) holds
            # those, not the ones reads by id need.  Their statements are prepared there (as every loop read's
            # is), which spares PostgreSQL parsing a search's long SQL on every run (about a sixth of its CPU for
            # the patient-scoped search), and every run still gets a plan made for its values: a generic plan
            # was ten times slower.
            self._loop_searches = LoopReads(connect_kwargs, settings={"plan_cache_mode": "force_custom_plan"})
        # Whether loop_rows awaits the database (PostgreSQL) rather than running the statement inline (SQLite):
        # only then may a statement that could take long (a search) run through it.
        self.loop_rows_wait = not self.is_sqlite

    def create_schema(self) -> tuple[str, ...]:
        """Bring the schema to this version's newest migration; safe when several processes start together.

        Every process calls this as it starts.  An up-to-date database costs one read and no lock.  Otherwise
        the migrations run in one transaction holding a transaction-level advisory lock, so processes starting
        together take turns: the first upgrades, the others find it done (DDL is transactional on PostgreSQL,
        so one that fails half-way leaves nothing behind).  On SQLite the write transaction's ``BEGIN
        IMMEDIATE`` does the same.  Returns the revisions the database was at (see ``migrations.upgrade``);
        raises ``migrations.SchemaError`` when it cannot be upgraded.
        """
        with self.read(snapshot=False) as conn:
            if migrations.is_current(conn):
                return (migrations.head(),)
        with self.write() as conn:
            if not self.is_sqlite:
                # The key predates migrations: a process of an older release starting beside this one waits too.
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key("create_schema")})
            return migrations.upgrade(conn)

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Run a block in one process at a time across every server on this database (PostgreSQL session
        advisory lock, on a connection of its own so the block may commit as often as it likes).  SQLite
        serves one process, so there the block simply runs."""
        if self.is_sqlite:
            yield
            return
        with self._autocommit.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _lock_key(name)})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _lock_key(name)})

    def ping(self) -> None:
        """One round trip to the database (readiness checks); raises if it cannot be reached."""
        with self.read(snapshot=False) as conn:
            conn.execute(text("SELECT 1"))

    def drop_schema(self) -> None:
        with self.write() as conn:
            metadata.drop_all(conn)
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))  # or the next start would find it current

    @contextmanager
    def read(self, *, snapshot: bool = True) -> Iterator[Connection]:
        """A read-only unit of work.  ``snapshot=False`` is for a single statement, which is its own snapshot:
        it skips the BEGIN and ROLLBACK round trips (a third of the time of a read by id on SQLite)."""
        if snapshot:
            with self.engine.connect() as conn:
                yield conn
            return
        # On PostgreSQL the connection itself is in autocommit mode; on SQLite, pysqlite always is, and the flag
        # tells _sqlite_on_begin to issue no BEGIN.  Both mark the connection for driver_rows.
        with (self.engine if self.is_sqlite else self._autocommit).connect() as conn:
            # conn.info lives as long as the pooled DBAPI connection: always clear the flag.
            conn.info["autocommit"] = True
            try:
                yield conn
            finally:
                conn.info.pop("autocommit", None)

    @contextmanager
    def inline_read(self) -> Iterator[Connection]:
        """``read(snapshot=False)`` for the event loop's own reads on SQLite (``loop_rows``), on one connection kept
        for them: taking a pooled connection and wrapping it in a new SQLAlchemy Connection was a third of the
        database's share of a read by id.  The lock keeps it to one caller at a time (tests run several event
        loops, in threads); a caller that began a transaction on it has it rolled back, so that no read snapshot
        outlives the call (an open one would keep SQLite's WAL from being checkpointed)."""
        with self._inline_lock:
            conn = self._inline
            if conn is None or conn.closed or conn.invalidated:
                conn = self._inline = self.engine.connect()
                conn.info["autocommit"] = True
            try:
                yield conn
            finally:
                if conn.in_transaction():
                    conn.rollback()

    async def loop_rows(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any], *, search: bool = False
    ) -> list[tuple[Any, ...]]:
        """One single-statement read (driver SQL, as ``driver_rows`` takes), awaited on the event loop with no trip
        through the thread pool: on SQLite inline on the kept connection (``inline_read``), on PostgreSQL on an
        asynchronous connection (``LoopReads``; a ``search``'s from connections of their own).  For the hottest
        reads; on SQLite, where it blocks the loop (``loop_rows_wait`` False), only for quick ones."""
        loop_reads = self._loop_searches if search else self._loop_reads
        if loop_reads is None:
            with self.inline_read() as conn:
                return driver_rows(conn, sql, params)
        return await loop_reads.rows(sql, params)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self._writer, self._write_connection() as conn:
            # conn.info lives as long as the pooled DBAPI connection: always clear the flag.
            conn.info["write"] = True
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.info.pop("write", None)
            if self._checkpoints is not None:
                self._checkpoints.wrote(conn.connection.driver_connection)

    @contextmanager
    def _write_connection(self) -> Iterator[Connection]:
        """The connection for a write (the caller holds ``_writer``): on SQLite, one connection kept for every
        write, with a page cache of ``WRITER_CACHE_MIB``.  SQLite drops a connection's whole page cache when
        another connection has committed since its last transaction; the writes went through whichever pooled
        connection came next, so each found its cache dropped by the one before and read the index pages it
        changes again, and its 2 MiB spilled a group of Bundles' dirty pages into the WAL before the commit.
        Kept, and the only writer, its cache stays valid from one write to the next (SQLite transaction
        Bundles under wrk: 222 -> 64 page reads and 315 -> 247 page writes a Bundle, about 0.25 ms less of the
        server's system time in some 6 ms of CPU).  A write nested in another, in the same thread, gets a
        pooled connection and fails on the database's lock as it always did."""
        if not self.is_sqlite or self._kept_writer_busy:
            with self.engine.connect() as conn:
                yield conn
            return
        conn = self._kept_writer
        if conn is None or conn.closed or conn.invalidated:
            conn = self._kept_writer = self.engine.connect()
            # On the driver's connection, which is in autocommit mode: through ``conn`` it would begin a transaction.
            driver = conn.connection.driver_connection
            driver.execute(f"PRAGMA cache_size=-{WRITER_CACHE_MIB * 1024}")
            if self._checkpoints is not None:
                driver.execute("PRAGMA wal_autocheckpoint=0")  # ``WalCheckpoints`` makes them, beside the writer
        self._kept_writer_busy = True
        try:
            yield conn
        finally:
            self._kept_writer_busy = False

    @contextmanager
    def bulk_write(self) -> Iterator[Connection]:
        """``write()`` for a bulk load's large transactions: on SQLite with a page cache of
        ``BULK_CACHE_MIB`` while it lasts.  The writer's own (``WRITER_CACHE_MIB``, see ``_write_connection``)
        spilled a loader's transaction of thousands of resources into the WAL page by page, again and again.
        """
        with self.write() as conn:
            if not self.is_sqlite:
                yield conn
                return
            kept = conn.exec_driver_sql("PRAGMA cache_size").scalar()
            conn.exec_driver_sql(f"PRAGMA cache_size=-{BULK_CACHE_MIB * 1024}")
            try:
                yield conn
            finally:
                # Before the commit: shrinking the cache frees clean pages only, the commit writes the dirty ones.
                conn.exec_driver_sql(f"PRAGMA cache_size={int(kept)}")

    def analyze(self) -> None:
        """Fresh planner statistics after a bulk load (DESIGN.md: ANALYZE after loads).

        Outside any transaction: PostgreSQL's VACUUM refuses one, and SQLite's WAL checkpoint
        (which keeps the WAL file from growing with the load) cannot run inside one.
        """
        if self.is_sqlite:
            raw = self.engine.raw_connection()  # autocommit: see _sqlite_on_connect
            try:
                raw.execute("ANALYZE")
                raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                raw.close()
        else:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")

    def dispose(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.stop()
        with self._writer:  # a write under way finishes on it first
            writer, self._kept_writer = self._kept_writer, None
            if writer is not None and not self._kept_writer_busy:
                writer.close()
        with self._inline_lock:
            if self._inline is not None:
                if not self._inline.invalidated:
                    self._inline.info.pop("autocommit", None)
                self._inline.close()
                self._inline = None
        stranded: list[int] = []
        for loop_reads in (self._loop_reads, self._loop_searches):
            if loop_reads is not None:
                stranded += loop_reads.close()
        if stranded:  # loop connections whose event loop has closed cannot close themselves (``LoopReads.close``)
            with suppress(DBAPIError), self._autocommit.connect() as conn:  # a server gone has ended them itself
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM unnest(:pids) AS pid"), {"pids": stranded})
        self.engine.dispose()

    def layer_exists(self, conn: Connection, layer_id: str) -> bool:
        return conn.execute(layers.select().where(layers.c.id == layer_id)).first() is not None


def driver_rows(conn: Connection, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """Run one statement, already in the driver's own SQL and parameter style, on ``conn``'s DBAPI
    connection, and return its rows as plain tuples.

    For the hottest reads: SQLAlchemy's transaction, execution context and result objects cost more than
    the query itself (a read by id on SQLite: 75 µs through ``exec_driver_sql`` on a fresh connection,
    25 µs this way).  The statement joins ``conn``'s transaction, begun first as SQLAlchemy would begin it
    (so a snapshot read stays one snapshot), unless ``conn`` is a single-statement read.  The driver's
    errors reach the caller as SQLAlchemy's, and a lost connection is dropped with the whole pool, as
    SQLAlchemy does for its own statements.
    """
    return _on_driver(conn, sql, params, _fetchall)


def driver_execute(conn: Connection, statement: Executable, params: Mapping[str, Any]) -> int:
    """Run a statement built once (an INSERT or UPDATE of values the columns hold as they are: str, int,
    float, bool, bytes, None) as ``driver_rows`` runs SQL, and return its row count.

    For the write path's fixed statements, several per resource written: through ``conn.execute`` each spent
    more in SQLAlchemy (its execution context, parameter processing, result) than in SQLite.  The statement is
    compiled once per dialect and set of parameter names; every bind parameter without a value of its own must
    be given (a column default SQLAlchemy would fill in is not), which the compile checks.

    Prepared on PostgreSQL (as ``driver_execute_numbered``'s recurring writes are): key look-ups and inserts.
    """
    sql, args = _driver_args(conn, statement, params)
    return _on_driver(conn, sql, args, _rowcount, prepare=True)


def driver_fetch(conn: Connection, statement: Executable, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """``driver_execute`` for a SELECT built once (by key: it is prepared on PostgreSQL): its rows as plain tuples."""
    sql, args = _driver_args(conn, statement, params)
    return _on_driver(conn, sql, args, _fetchall, prepare=True)


def driver_execute_sql(conn: Connection, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> int:
    """``driver_rows`` for a statement that returns no rows: its row count."""
    return _on_driver(conn, sql, params, _rowcount)


def driver_execute_numbered(conn: Connection, sql: str, params: Sequence[Any], *, prepare: bool) -> int:
    """PostgreSQL: ``driver_execute_sql`` for SQL whose parameters are PostgreSQL's own ``$1, $2, ...``, passed to
    the server as they are (psycopg's ``RawCursor``).  For statements of many parameters: psycopg reads ``%s``
    markers in Python, and caches what it read only for statements of at most 50 parameters, so a write of 200
    (``Repository.write``'s one statement for a Patient) spent 0.6 ms there on every call.

    ``prepare``: on the server (per connection, psycopg keeps the last 100), for a statement that recurs:
    PostgreSQL parsed and planned a write's data-modifying ``WITH`` clauses again on every call, for plans that
    are key look-ups and inserts whatever the values.  HL7 v2 ADT^A04 on PostgreSQL: 158-163 -> 175-176
    messages/s over one connection, 186-187 -> 209-214 over ten (``bench.hl7_ingest --analyze``, alternated)."""
    return _on_driver(conn, sql, params, _rowcount, numbered=True, prepare=prepare)


def driver_executemany(conn: Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """``driver_rows`` for one statement in the driver's style (``driver_placeholders``) run for every row."""
    _on_driver(conn, sql, rows, None, many=True)


@contextmanager
def driver_savepoint(conn: Connection, name: str = "unit") -> Iterator[None]:
    """A savepoint in ``conn``'s transaction, at the driver: released if the block ends normally, rolled back
    to (and released) if it raises.  ``begin_nested`` did the same with more bookkeeping than the two
    statements cost: an HL7 v2 batch takes one per message.  Nest by stack, as SQL does (a name may repeat)."""
    _on_driver(conn, f"SAVEPOINT {name}", (), None)
    try:
        yield
    except BaseException:
        _on_driver(conn, f"ROLLBACK TO SAVEPOINT {name}", (), None)
        _on_driver(conn, f"RELEASE SAVEPOINT {name}", (), None)
        raise
    _on_driver(conn, f"RELEASE SAVEPOINT {name}", (), None)


def driver_placeholders(conn: Connection, count: int) -> str:
    """``count`` positional parameter markers in the driver's style: ``?, ?`` (sqlite3) or ``%s, %s`` (psycopg)."""
    return ", ".join(("?" if conn.dialect.paramstyle == "qmark" else "%s",) * count)


@dataclass(frozen=True)
class DriverStatement:
    """A SQLAlchemy statement compiled for one dialect into the driver's own SQL (``driver_statement``)."""

    sql: str
    order: tuple[str, ...] | None  # the parameters' order, if the driver's style is positional
    fixed: dict[str, Any]  # values of the statement's own (``column == "literal"``)

    def args(self, params: Mapping[str, Any]) -> Sequence[Any] | Mapping[str, Any]:
        """``params`` (by name) with the statement's own values, as the driver takes them."""
        values = {**self.fixed, **params} if self.fixed else params
        return tuple(values[name] for name in self.order) if self.order is not None else values


def driver_statement(dialect: Dialect, statement: Executable, names: Sequence[str]) -> DriverStatement | None:
    """Compile ``statement`` once for ``driver_rows`` and ``Database.loop_rows``, to be run with parameters named
    ``names`` (each of its bind parameters without a value of its own must be one).  Compiling costs far more than
    running: callers keep the result.  None for a statement with a list parameter (``column.in_([...])``), whose
    SQL SQLAlchemy writes out afresh for each execution."""
    compiled = statement.compile(dialect=dialect, column_keys=list(names))  # type: ignore[attr-defined]
    if any(bind.expanding for bind in compiled.binds.values()):
        return None
    # Keyed by the names the SQL uses: an anonymous parameter's key in ``binds`` is not one.
    binds = {compiled.bind_names[bind]: bind for bind in compiled.binds.values()}
    fixed = {name: bind.effective_value for name, bind in binds.items() if not bind.required}
    missing = set(binds) - set(names) - set(fixed)
    if missing:
        raise ValueError(f"driver_execute needs every parameter of its statement: {sorted(missing)} not given")
    order = tuple(compiled.positiontup or ()) if compiled.positional else None
    return DriverStatement(str(compiled), order, fixed)


_COMPILED: dict[tuple[Executable, str, tuple[str, ...]], DriverStatement] = {}


def _driver_args(
    conn: Connection, statement: Executable, params: Mapping[str, Any]
) -> tuple[str, Sequence[Any] | Mapping[str, Any]]:
    names = tuple(params)
    key = (statement, conn.dialect.name, names)
    found = _COMPILED.get(key)
    if found is None:
        compiled = driver_statement(conn.dialect, statement, names)
        if compiled is None:
            raise ValueError("driver_execute cannot take a statement with a list parameter")
        found = _COMPILED[key] = compiled
    return found.sql, found.args(params)


def _rowcount(cursor: Any) -> int:
    return cursor.rowcount


def _fetchall(cursor: Any) -> list[tuple[Any, ...]]:
    return cursor.fetchall()


def _on_driver(
    conn: Connection,
    sql: str,
    params: Any,
    result: Callable[[Any], Any] | None,
    *,
    many: bool = False,
    numbered: bool = False,
    prepare: bool = False,
) -> Any:
    """``prepare``: on PostgreSQL, prepare the statement on the server."""
    if not conn.in_transaction() and not conn.info.get("autocommit"):
        conn.begin()
    dbapi_conn = conn.connection.dbapi_connection
    assert dbapi_conn is not None  # a connection in use always has one
    if numbered:
        from psycopg import RawCursor  # only ever on PostgreSQL

        cursor = RawCursor(dbapi_conn)  # type: ignore[arg-type]
    else:
        cursor = dbapi_conn.cursor()
    try:
        listeners = conn.dispatch.before_cursor_execute
        if listeners:  # whoever watches the SQL (tests of what statements name, debugging) sees these too
            listeners(conn, cursor, sql, params, None, many)
        if many:
            cursor.executemany(sql, params)
        elif prepare and conn.dialect.name == "postgresql":
            cursor.execute(sql, params, prepare=True)
        else:
            cursor.execute(sql, params)
        return result(cursor) if result is not None else None
    except conn.dialect.loaded_dbapi.Error as exc:
        lost = conn.dialect.is_disconnect(exc, dbapi_conn, cursor)
        if lost:
            conn.invalidate(exc)
            conn.engine.dispose(close=False)  # the other pooled connections went with the server
        raise DBAPIError.instance(
            sql, params, exc, conn.dialect.loaded_dbapi.Error, connection_invalidated=lost, dialect=conn.dialect
        ) from exc
    finally:
        cursor.close()


def _lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for ``name`` (Python's hash() differs per process)."""
    return int.from_bytes(hashlib.blake2b(f"ehr-sandbox:{name}".encode(), digest_size=8).digest(), "big", signed=True)


def _sqlite_on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    # Let SQLAlchemy, not pysqlite, decide when transactions begin (see _sqlite_on_begin).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    # A checkpoint (the WAL copied back, with fsyncs) every 10,000 pages rather than SQLite's 1,000: a FHIR write
    # touches many index pages, and at 1,000 every few commits paid a checkpoint (an HL7 v2 message's commit
    # 2.0 -> 0.6 ms).  The WAL file grows to about 40 MB before it is reused.  The kept writer turns this off: its
    # checkpoints are made beside it (``WalCheckpoints``, at the same size); this covers any other connection's commit.
    cur.execute("PRAGMA wal_autocheckpoint=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    # 2 MiB of page cache per connection; the OS page cache holds the rest of the file without counting against
    # the server's memory (64 MiB each took a 16-connection server past 1 GB on a 100,000-resource store).
    cur.execute("PRAGMA cache_size=-2048")
    cur.execute("PRAGMA temp_store=MEMORY")
    cur.close()


def _sqlite_on_begin(conn: Connection) -> None:
    if conn.info.get("autocommit"):
        return  # pysqlite runs in autocommit mode (see _sqlite_on_connect); SQLAlchemy's ROLLBACK is then a no-op
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN")
