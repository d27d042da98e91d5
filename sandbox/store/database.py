"""Engine creation for SQLite (embedded default) and PostgreSQL (production)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool

from sandbox.store import migrations
from sandbox.store.schema import layers, metadata

BULK_CACHE_MIB = 256


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
        # A one-row SQLite read (tens of microseconds, no network) costs less on the event loop than a trip
        # through the thread pool; a PostgreSQL round trip would stall every other request, so it takes the trip.
        self.inline_reads = self.is_sqlite
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
                connect_args={"check_same_thread": False, "timeout": 30},
            )
            event.listen(self.engine, "connect", _sqlite_on_connect)
            event.listen(self.engine, "begin", _sqlite_on_begin)
        else:
            if parsed.drivername == "postgresql":
                parsed = parsed.set(drivername="postgresql+psycopg")
            # A generic plan for search SQL was ten times slower than a custom one: no server-side prepares.
            self.engine = create_engine(
                parsed,
                echo=echo,
                pool_size=20,  # a new PostgreSQL connection costs milliseconds: no churn below 20 concurrent requests
                max_overflow=20,
                # No ping before each checkout: it was a round trip on every request (a quarter of a read by id).
                # If PostgreSQL restarts, the first statement on a dead connection fails, SQLAlchemy sees the
                # disconnect and drops the whole pool, so one request gets a 500 and the next ones reconnect.
                pool_pre_ping=False,
                connect_args={"prepare_threshold": None},
            )

        # SQLite lets one writer in at a time, and one that finds the database locked sleeps in steps of up to
        # 100 ms before it looks again, so the database sat idle between one request's commit and the next
        # writer's wake-up.  This process's writers queue here instead and go in the moment it is free; the
        # busy timeout still covers other processes.  Re-entrant, so a write opened inside another in the same
        # thread fails on the database's lock as before rather than waiting here for ever.
        self._writer: AbstractContextManager[object] = threading.RLock() if self.is_sqlite else nullcontext()

        # The same pool; connections taken through it run each statement in its own transaction.
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")

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
        elif self.is_sqlite:
            with self.engine.connect() as conn:
                conn.info["autocommit"] = True
                try:
                    yield conn
                finally:
                    conn.info.pop("autocommit", None)
        else:
            with self._autocommit.connect() as conn:
                yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self._writer, self.engine.connect() as conn:
            # conn.info lives as long as the pooled DBAPI connection: always clear the flag.
            conn.info["write"] = True
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.info.pop("write", None)

    @contextmanager
    def bulk_write(self) -> Iterator[Connection]:
        """``write()`` for a bulk load's large transactions: on SQLite with a page cache of
        ``BULK_CACHE_MIB`` while it lasts.  The 2 MiB a server connection keeps (see ``_sqlite_on_connect``)
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
        self.engine.dispose()

    def layer_exists(self, conn: Connection, layer_id: str) -> bool:
        return conn.execute(layers.select().where(layers.c.id == layer_id)).first() is not None


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
    # 2.0 -> 0.6 ms).  The WAL file grows to about 40 MB before it is reused.
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
