"""Single-statement PostgreSQL reads awaited on the event loop, on asyncpg's connections.

A PostgreSQL read by id handed to the thread pool cost the server 373 µs of CPU a request under load (wrk, 8
connections: the hop to a worker thread and back, the GIL passed between it and the busy event loop, a pooled
connection checked out and wrapped); awaited on psycopg's asynchronous connections, 177 µs.  asyncpg, whose
protocol is compiled, runs the same statement for less than half of psycopg's client CPU (read by id, one
connection, in a loop: 77 against 131 µs): a fifth of a read by id's whole cost in the server.  The thread
pool's units of work stay on psycopg (SQLAlchemy's driver); only these reads use asyncpg.

The statements arrive in psycopg's SQL (``%s`` or ``%(name)s`` markers, what the store compiles for its
engine) and are renumbered once per text into PostgreSQL's own ``$1, $2...`` (``_numbered``).  asyncpg
prepares each statement on the server the first time a connection runs it and keeps it (``STATEMENTS_KEPT``).

Connections belong to the event loop that opened them (they cannot change loops, and tests run several
loops), so each loop has its own few, opened on first use and kept for the next read.  No transaction is
opened: a single statement is its own snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

# Statements each connection keeps prepared (asyncpg's own cache, least recently used out): a read by id's one
# shape a view depth, and the search shapes in use.
STATEMENTS_KEPT = 200


@dataclass
class _LoopConnections:
    limit: asyncio.Semaphore
    idle: list[asyncpg.Connection] = field(default_factory=list)


class LoopReads:
    """``rows(sql, params)``: one statement in psycopg's SQL, its rows as tuples.

    At most ``size`` statements of a loop are in flight at once (more wait for a connection), so a burst
    of reads takes no more of PostgreSQL's connections than the pool size says.  Errors arrive as
    SQLAlchemy's exception types (``DBAPIError``; ``OperationalError`` with ``connection_invalidated`` for
    a lost connection), as the thread pool's reads raise them; a lost connection (PostgreSQL restarted) is
    dropped with the loop's other idle ones, and the next read opens new ones.  ``connect_kwargs`` are
    psycopg's (``asyncpg_arguments`` turns them into asyncpg's); ``settings``, server settings of these
    connections' own.
    """

    def __init__(
        self, connect_kwargs: dict[str, Any], *, settings: Mapping[str, str] | None = None, size: int = 10
    ) -> None:
        self.connect_kwargs = asyncpg_arguments(connect_kwargs, settings)
        self.size = size
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopConnections] = (
            weakref.WeakKeyDictionary()
        )
        self._opened: list[asyncpg.Connection] = []  # every open one, to close at dispose

    async def rows(self, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> list[tuple[Any, ...]]:
        loop = asyncio.get_running_loop()
        mine = self._loops.get(loop)
        if mine is None:
            mine = self._loops[loop] = _LoopConnections(asyncio.Semaphore(self.size))
        numbered, names = _numbered(sql)
        args = [params[name] for name in names] if isinstance(params, Mapping) else params
        async with mine.limit:
            conn = mine.idle.pop() if mine.idle else await self._connect(sql, params)
            try:
                records = await conn.fetch(numbered, *args)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                lost = conn.is_closed()
                if lost:
                    self._close(conn)
                    for other in mine.idle:  # the server went away for them too
                        self._close(other)
                    mine.idle.clear()
                else:
                    mine.idle.append(conn)
                kind = OperationalError if lost else DBAPIError
                raise kind(sql, params, exc, connection_invalidated=lost) from exc  # type: ignore[arg-type]
            except BaseException:
                # Cancelled (the client went away) or worse, possibly mid-statement: the connection's state is
                # unknown, so it is not reused.
                self._close(conn)
                raise
            mine.idle.append(conn)
            return [tuple(record) for record in records]

    async def _connect(self, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> asyncpg.Connection:
        try:
            conn = await asyncpg.connect(statement_cache_size=STATEMENTS_KEPT, **self.connect_kwargs)
        except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
            raise OperationalError(sql, params, exc, connection_invalidated=True) from exc  # type: ignore[arg-type]
        self._opened.append(conn)
        return conn

    def _close(self, conn: asyncpg.Connection) -> None:
        if conn in self._opened:
            self._opened.remove(conn)
        # Its event loop may be closed already (a test's ``asyncio.run``): ``close`` then ends it on the server.
        with contextlib.suppress(RuntimeError):
            conn.terminate()

    def close(self) -> list[int]:
        """Close every connection, whichever loop opened it; returns the server process ids of those whose
        loop was closed already, which cannot close their sockets themselves: the caller ends them on the
        server (``pg_terminate_backend``)."""
        stranded = []
        for conn in list(self._opened):
            pid = conn.get_server_pid()
            self._close(conn)
            if not conn.is_closed():
                stranded.append(pid)
        self._loops.clear()
        return stranded


# asyncpg.connect's arguments for psycopg's (libpq's) connection parameters.
_RENAMED = {"dbname": "database", "host": "host", "port": "port", "user": "user", "password": "password"}


def asyncpg_arguments(connect_kwargs: Mapping[str, Any], settings: Mapping[str, str] | None = None) -> dict[str, Any]:
    """asyncpg.connect's arguments for the connection psycopg makes with ``connect_kwargs`` (what SQLAlchemy
    derives from the database URL), with ``settings`` added to the server settings.  libpq's ``options``
    (``-c name=value``, as the test suite sets ``search_path``) become server settings.  A parameter with no
    asyncpg equivalent is refused (ArgumentError, as SQLAlchemy refuses a bad URL: `serve` says so in one line)
    rather than silently left out."""
    arguments: dict[str, Any] = {}
    server_settings: dict[str, str] = {}
    for key, value in connect_kwargs.items():
        if key in _RENAMED:
            arguments[_RENAMED[key]] = int(value) if key == "port" else value
        elif key == "options":
            server_settings.update(_options(str(value)))
        elif key == "application_name":
            server_settings["application_name"] = str(value)
        elif key == "sslmode":
            arguments["ssl"] = str(value)
        elif key == "connect_timeout":
            arguments["timeout"] = float(value)
        elif key == "target_session_attrs":
            arguments["target_session_attrs"] = str(value)
        elif key not in ("prepare_threshold", "context"):  # psycopg's own (SQLAlchemy sets its adapters), not libpq's
            raise ArgumentError(f"the PostgreSQL connection parameter '{key}' is not supported")
    server_settings.update(settings or {})
    if server_settings:
        arguments["server_settings"] = server_settings
    return arguments


def _options(options: str) -> dict[str, str]:
    """libpq's ``options`` (``-c name=value``, ``-cname=value`` or ``--name=value``, space-separated) as settings."""
    found: dict[str, str] = {}
    words = iter(shlex.split(options))
    for word in words:
        if word == "-c":
            word = next(words, "")
        elif word.startswith(("-c", "--")):
            word = word[2:]
        else:
            raise ArgumentError(f"the PostgreSQL connection option '{word}' is not supported (only -c name=value)")
        name, sep, value = word.partition("=")
        if not sep:
            raise ArgumentError(f"the PostgreSQL connection option '{word}' has no value")
        found[name.replace("-", "_")] = value
    return found


_MARKER = re.compile(r"%\((\w+)\)s|%s|%%")
_NUMBERED: dict[str, tuple[str, tuple[str, ...]]] = {}


def _numbered(sql: str) -> tuple[str, tuple[str, ...]]:
    """psycopg's SQL in PostgreSQL's numbered markers, and the names of the parameters in their order (empty for
    positional ``%s``).  Kept per text: a server runs a few hundred shapes of statement over and over."""
    found = _NUMBERED.get(sql)
    if found is not None:
        return found
    names: list[str] = []
    positional = 0

    def number(match: re.Match[str]) -> str:
        nonlocal positional
        if match.group(0) == "%%":
            return "%"
        name = match.group(1)
        if name is None:
            positional += 1
            return f"${positional}"
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    text = _MARKER.sub(number, sql)
    if names and positional:
        raise ValueError("a statement mixes named and positional parameters")
    found = (text, tuple(names))
    if len(_NUMBERED) < 10_000:  # a server's texts are its few hundred shapes of statement; bounded all the same
        _NUMBERED[sql] = found
    return found
