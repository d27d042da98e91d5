"""Single-statement PostgreSQL reads awaited on the event loop, on psycopg's asynchronous connections.

A PostgreSQL read by id handed to the thread pool cost the server 373 µs of CPU a request under load (wrk, 8
connections: the hop to a worker thread and back, the GIL passed between it and the busy event loop, a pooled
connection checked out and wrapped); awaited here, 177 µs.  The statement itself costs the client about 45 µs,
and the loop serves other requests while PostgreSQL works on it.

Connections belong to the event loop that opened them (psycopg's asynchronous connections cannot change
loops, and tests run several loops), so each loop has its own few, opened on first use and kept for the
next read.  Every connection is in autocommit mode: a single statement is its own snapshot.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import Dialect
from sqlalchemy.exc import DBAPIError


@dataclass
class _LoopConnections:
    limit: asyncio.Semaphore
    idle: list[psycopg.AsyncConnection[Any]] = field(default_factory=list)


class LoopReads:
    """``rows(sql, params)``: one statement in the driver's own SQL, its rows as tuples.

    At most ``size`` statements of a loop are in flight at once (more wait for a connection), so a burst
    of reads takes no more of PostgreSQL's connections than the pool size says.  Errors arrive as
    SQLAlchemy's exception types, as the thread pool's reads raise them; a lost connection (PostgreSQL
    restarted) is dropped with the loop's other idle ones, and the next read opens new ones.  ``prepare``: each
    statement is prepared on the server the first time a connection runs it (the connection arguments must
    allow it: a ``prepare_threshold`` that is not None).
    """

    def __init__(
        self, connect_kwargs: dict[str, Any], dialect: Dialect, *, size: int = 10, prepare: bool = False
    ) -> None:
        self.connect_kwargs = connect_kwargs
        self.dialect = dialect
        self.size = size
        self.prepare = prepare
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopConnections] = (
            weakref.WeakKeyDictionary()
        )
        self._opened: list[psycopg.AsyncConnection[Any]] = []  # every open one, to close at dispose

    async def rows(self, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> list[tuple[Any, ...]]:
        loop = asyncio.get_running_loop()
        mine = self._loops.get(loop)
        if mine is None:
            mine = self._loops[loop] = _LoopConnections(asyncio.Semaphore(self.size))
        async with mine.limit:
            conn = mine.idle.pop() if mine.idle else await self._connect(sql, params)
            try:
                async with conn.cursor() as cursor:
                    await cursor.execute(sql, params, prepare=self.prepare or None)
                    rows = await cursor.fetchall()
            except psycopg.Error as exc:
                lost = conn.broken or conn.closed
                if lost:
                    self._close(conn)
                    for other in mine.idle:  # the server went away for them too
                        self._close(other)
                    mine.idle.clear()
                else:
                    mine.idle.append(conn)
                raise DBAPIError.instance(
                    sql, params, exc, psycopg.Error, connection_invalidated=lost, dialect=self.dialect
                ) from exc
            except BaseException:
                # Cancelled (the client went away) or worse, possibly mid-statement: the connection's state is
                # unknown, so it is not reused.
                self._close(conn)
                raise
            mine.idle.append(conn)
            return rows

    async def _connect(self, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> psycopg.AsyncConnection[Any]:
        try:
            conn = await psycopg.AsyncConnection.connect(autocommit=True, **self.connect_kwargs)
        except psycopg.Error as exc:
            raise DBAPIError.instance(
                sql, params, exc, psycopg.Error, connection_invalidated=True, dialect=self.dialect
            ) from exc
        self._opened.append(conn)
        return conn

    def _close(self, conn: psycopg.AsyncConnection[Any]) -> None:
        # Closing needs no event loop: it ends the libpq connection (the socket), as AsyncConnection.close does.
        if not conn.closed:
            conn.pgconn.finish()
        if conn in self._opened:
            self._opened.remove(conn)

    def close(self) -> None:
        """Close every connection, whichever loop opened it (that loop may be gone already)."""
        for conn in list(self._opened):
            self._close(conn)
        self._loops.clear()
