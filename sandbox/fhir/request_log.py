"""The FHIR request log: which calls a vendor's app made against their sandbox (method, URL, status, time, duration).

Recording must not slow the FHIR hot path: an ASGI middleware notes each finished FHIR request in an
in-memory queue (one ``deque.append``), and a background thread writes the queue to ``fhir_requests`` in
one transaction about once a second, keeping only the newest ``per_sandbox`` rows of each sandbox it
touched.  The queue is bounded: if the database falls behind, the oldest unwritten entries are dropped
rather than memory growing.  Each server process keeps its own queue; several workers write to the same
table.  Pages that show the log call ``flush()`` first, so what they show is up to date.

Rows are keyed by layer, so a sandbox reset or delete clears its log with its data
(``sandbox.store.sandboxes.layer_tables``).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from sandbox.store.database import Database
from sandbox.store.schema import fhir_requests, layers

_log = logging.getLogger("ehr_sandbox.request_log")
_FMT = "%Y-%m-%dT%H:%M:%S.%f"
MAX_URL = 2000

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Entry = tuple[str, str, str, int, float, float]  # sandbox, method, url, status, started (epoch seconds), duration ms


@dataclass(frozen=True)
class LoggedRequest:
    at: str  # FHIR instant (UTC, milliseconds) when the request arrived
    method: str
    url: str
    status: int
    duration_ms: float


def fhir_sandbox(path: str) -> str | None:
    """The sandbox a ``/sandboxes/{id}/fhir`` request path addresses, else None.

    The open default sandbox (``/fhir``) is not logged: it belongs to no vendor, so no page shows its log, and
    it takes the bulk of anonymous and benchmark traffic.
    """
    if path.startswith("/sandboxes/"):
        parts = path.split("/", 4)  # "", "sandboxes", id, "fhir", rest
        if len(parts) >= 4 and parts[3] == "fhir" and parts[2]:
            return parts[2]
    return None


class RequestLog:
    def __init__(
        self, db: Database, *, per_sandbox: int = 500, max_pending: int = 20_000, interval: float = 1.0
    ) -> None:
        self.db = db
        self.per_sandbox = per_sandbox
        self.interval = interval
        # append and popleft are thread-safe: the event loop appends, the writer thread pops.
        self._pending: deque[Entry] = deque(maxlen=max_pending)
        self._flushing = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- the hot path ----------------------------------------------------------------------------

    def record(self, sandbox_id: str, method: str, url: str, status: int, started: float, duration_ms: float) -> None:
        self._pending.append((sandbox_id, method, url[:MAX_URL], status, started, duration_ms))

    # ---- writing -----------------------------------------------------------------------------------

    def flush(self) -> int:
        """Write what is queued; returns how many rows were written.  Entries for sandboxes that do not exist
        (a client guessing ids) are dropped, so the table only ever holds rows of real sandboxes."""
        with self._flushing:
            batch = []
            while self._pending:
                try:
                    batch.append(self._pending.popleft())
                except IndexError:
                    break
            if not batch:
                return 0
            # Only the newest ``per_sandbox`` entries of each sandbox can survive the prune: write no more than
            # those, so a burst of traffic costs one bounded transaction (SQLite holds its write lock meanwhile).
            batch = self._newest(batch)
            with self.db.write() as conn:
                wanted = {entry[0] for entry in batch}
                known = set(conn.execute(select(layers.c.id).where(layers.c.id.in_(wanted))).scalars())
                rows = [
                    {
                        "layer_id": sandbox_id,
                        "id": datetime.fromtimestamp(started, UTC).strftime(_FMT) + "-" + secrets.token_hex(4),
                        "method": method,
                        "url": url,
                        "status": status,
                        "duration_ms": round(duration_ms, 3),
                    }
                    for sandbox_id, method, url, status, started, duration_ms in batch
                    if sandbox_id in known
                ]
                if rows:
                    conn.execute(insert(fhir_requests), rows)
                for sandbox_id in known:
                    self._prune(conn, sandbox_id)
            return len(rows)

    def _newest(self, batch: list[Entry]) -> list[Entry]:
        """The batch less each sandbox's entries beyond its newest ``per_sandbox``, in the batch's order."""
        counts: dict[str, int] = {}
        newest = []
        for entry in reversed(batch):
            seen = counts.get(entry[0], 0)
            if seen < self.per_sandbox:
                counts[entry[0]] = seen + 1
                newest.append(entry)
        newest.reverse()
        return newest

    def _prune(self, conn: Connection, sandbox_id: str) -> None:
        """Keep the newest ``per_sandbox`` rows of the sandbox."""
        f = fhir_requests.c
        oldest_kept = conn.execute(
            select(f.id).where(f.layer_id == sandbox_id).order_by(f.id.desc()).offset(self.per_sandbox - 1).limit(1)
        ).scalar()
        if oldest_kept is not None:
            conn.execute(delete(fhir_requests).where(f.layer_id == sandbox_id, f.id < oldest_kept))

    # ---- reading -----------------------------------------------------------------------------------

    def recent(self, conn: Connection, sandbox_id: str, limit: int = 100) -> list[LoggedRequest]:
        """The sandbox's latest requests, newest first."""
        f = fhir_requests.c
        rows = conn.execute(
            select(f.id, f.method, f.url, f.status, f.duration_ms)
            .where(f.layer_id == sandbox_id)
            .order_by(f.id.desc())
            .limit(limit)
        ).all()
        return [LoggedRequest(r.id[:23] + "Z", r.method, r.url, r.status, r.duration_ms) for r in rows]

    # ---- the background writer ----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fhir-request-log", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the writer and write what is left."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=10)
            self._thread = None
        self._flush_logged()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._flush_logged()

    def _flush_logged(self) -> None:
        try:
            self.flush()
        except Exception:  # a database hiccup loses one batch of log lines, never the writer
            _log.exception("writing the FHIR request log")


class RecordFhirRequests:
    """ASGI middleware: after each FHIR request finishes, queue one entry in the request log."""

    def __init__(self, app: ASGIApp, log: RequestLog) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sandbox_id = fhir_sandbox(scope["path"]) if scope["type"] == "http" else None
        if sandbox_id is None:
            await self.app(scope, receive, send)
            return
        started, clock = time.time(), time.perf_counter()
        status = 500  # what the client saw if the app failed before answering

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            query = scope.get("query_string", b"")
            url = scope["path"] + ("?" + query.decode("latin-1") if query else "")
            self.log.record(sandbox_id, scope["method"], url, status, started, (time.perf_counter() - clock) * 1000)
