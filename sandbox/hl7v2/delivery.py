"""Outbound delivery: outbox events -> queued messages in the log -> MLLP destinations, with retries.

Two steps, each safe with several workers on several hosts:

1. ``translate``: the outbox events past the translator's cursor (consumer
   ``hl7v2-translate``, ``store/outbox.py``) are taken in one write
   transaction, each relevant one becomes a ``pending`` outbound row in the
   message log per destination, and the cursor moves past them, all in that
   transaction: a worker that dies half-way leaves the events for the next one,
   and while one worker holds the cursor the others do other work.
2. ``deliver_due``: pending rows whose time has come are claimed with a
   conditional UPDATE that sets a lease (a worker that dies lets the lease
   lapse and another takes the row), sent outside any transaction, and the
   ACK recorded; a failed send is retried with exponential backoff until
   ``MAX_ATTEMPTS``.

Writes that came in over HL7 v2 produce nothing: the sending system already knows.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, update

from sandbox.fhir.interactions import Interactions
from sandbox.fhir.validation import parse_json
from sandbox.hl7v2 import TRANSLATOR, destinations, log
from sandbox.hl7v2.er7 import V2Error, parse
from sandbox.hl7v2.mllp import Client
from sandbox.hl7v2.outbound import SENT_TYPES, build, message_type_for
from sandbox.metrics import count_mllp
from sandbox.store import outbox
from sandbox.store.database import Database
from sandbox.store.layers import UnknownSandbox, resolve_view
from sandbox.store.leases import LeaseQueue
from sandbox.store.schema import hl7v2_messages

_log = logging.getLogger("ehr_sandbox.hl7v2")

MAX_ATTEMPTS = 8
LEASE = timedelta(seconds=60)
_FMT = "%Y-%m-%dT%H:%M:%S.%f"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _stamp(when: datetime) -> str:
    return when.strftime(_FMT)


def backoff(attempts: int, base: float) -> timedelta:
    """1, 2, 4, ... times ``base`` seconds, at most 5 minutes."""
    return timedelta(seconds=min(base * 2 ** max(attempts - 1, 0), 300.0))


TRANSLATE_BATCH = 100  # outbox events a translation transaction takes at most, on SQLite (``outbox.batch_for``)


def translate(db: Database, fhir: Interactions, *, batch: int = TRANSLATE_BATCH) -> int:
    """Turn the outbox events past the translator's cursor into queued outbound messages; returns how many events
    were consumed.

    A cursor, not a mark on each event: marking every event done rewrote each outbox row once more, and on
    PostgreSQL the index of events not done filled with the dead versions of the rows marked since the last
    vacuum, which every poll walked (77 ms a poll under Bundle ingest, a core of PostgreSQL's time).
    """

    def queue_each(conn: Connection, events: list[Row[Any]]) -> None:
        for event in events:
            _queue(conn, fhir, event)

    return outbox.consume(db, TRANSLATOR, queue_each, batch=batch, wanted=_translatable)[0]


def _translatable(event: Row[Any]) -> bool:
    """Whether an event may make a message: a FHIR write (not one an HL7 v2 message made) of a type sent."""
    return event.route != "hl7v2" and event.action != "delete" and event.resource_type in SENT_TYPES


def _queue(conn: Connection, fhir: Interactions, event: Row[Any]) -> None:
    targets = [d for d in destinations.listing(conn, event.layer_id) if d.enabled]
    if not targets:
        return
    try:
        view = resolve_view(conn, event.layer_id)
    except UnknownSandbox:
        return  # a baseline's writes (loads) or a deleted sandbox: nobody to send for
    stored = fhir.repo.version(conn, view, event.resource_type, event.resource_id, event.version_id)
    if stored is None or stored.content is None:
        return  # the sandbox was reset since the write
    resource = parse_json(stored.content)
    message_type = message_type_for(resource, event.action)
    if message_type is None:
        return
    source = f"{event.resource_type}/{event.resource_id}/_history/{event.version_id}"
    for target in targets:
        if message_type not in target.message_types:
            continue
        text, control_id = build(
            conn,
            fhir.repo,
            view,
            resource,
            message_type,
            application=target.receiving_application,
            facility=target.receiving_facility,
        )
        log.record(
            conn,
            event.layer_id,
            direction="outbound",
            message_type=message_type,
            control_id=control_id,
            peer=target.id,
            status="pending",
            content=text,
            resources=[source],
            next_attempt_at=_stamp(_now()),
        )


_OUTBOUND = LeaseQueue(
    hl7v2_messages,
    where=[hl7v2_messages.c.direction == "outbound"],
    order_by=[hl7v2_messages.c.next_attempt_at],
)


def claim(db: Database, worker_id: str, *, batch: int = 10) -> list[log.LogEntry]:
    """Pending outbound messages now due, leased to this worker."""
    now = _now()
    return _OUTBOUND.claim(db, worker_id, now=_stamp(now), until=_stamp(now + LEASE), batch=batch, load=_log_entry)


def _log_entry(conn: Connection, layer_id: str, message_id: str) -> log.LogEntry:
    entry = log.get(conn, layer_id, message_id)
    assert entry is not None  # leased in this transaction
    return entry


def deliver_due(
    db: Database,
    worker_id: str,
    *,
    timeout: float = 10.0,
    backoff_base: float = 2.0,
    batch: int = 10,
    on_sent: Callable[[str], object] | None = None,
) -> int:
    """Send what is due; returns how many were attempted.  ``on_sent`` hears the sandbox of each attempt once its
    outcome is logged: the log changed without a FHIR write, so the outbox's consumers (the task engine's live
    re-checks of checks on the log) would not hear of it otherwise."""
    entries = claim(db, worker_id, batch=batch)
    for entry in entries:
        _send(db, worker_id, entry, timeout=timeout, backoff_base=backoff_base)
        if on_sent is not None:
            on_sent(entry.layer_id)
    return len(entries)


def _send(db: Database, worker_id: str, entry: log.LogEntry, *, timeout: float, backoff_base: float) -> None:
    with db.read() as conn:
        target = destinations.get(conn, entry.layer_id, entry.peer)
    attempts = entry.attempts + 1
    values: dict[str, object] = {"attempts": attempts, "claimed_by": None, "lease_until": None}
    if target is None:
        values.update(status="failed", error=f"destination '{entry.peer}' no longer exists")
    else:
        try:
            with Client(target.host, target.port, timeout=timeout) as client:
                reply = client.send(entry.content).decode("utf-8", "replace")
            code, text = _ack(reply)
            count_mllp("outbound", entry.content, code)
            delivered = code in ("AA", "CA")
            values.update(status="delivered" if delivered else "error", ack=reply, ack_code=code[:2] or None)
            values["error"] = None if delivered else f"the destination answered {code}: {text}"
        except (OSError, ConnectionError, TimeoutError) as exc:
            timed_out = isinstance(exc, TimeoutError)
            reason = "timed out waiting for the ACK" if timed_out else str(exc) or type(exc).__name__
            values["error"] = f"attempt {attempts} to {target.host}:{target.port} failed: {reason}"
            if attempts >= MAX_ATTEMPTS:
                values["status"] = "failed"
            else:
                values["next_attempt_at"] = _stamp(_now() + backoff(attempts, backoff_base))
    m = hl7v2_messages.c
    with db.write() as conn:
        conn.execute(
            update(hl7v2_messages)
            .where(m.layer_id == entry.layer_id, m.id == entry.id, m.claimed_by == worker_id)
            .values(**values)
        )


def _ack(reply: str) -> tuple[str, str]:
    try:
        msa = parse(reply).first("MSA")
    except V2Error:
        return "", "the reply is not an HL7 v2 message"
    return (msa.get(1), msa.get(3)) if msa else ("", "the reply has no MSA segment")


def requeue(conn: Connection, layer_id: str, message_id: str) -> None:
    """Send an outbound message again as soon as a worker is free (resend from the log)."""
    log.set_status(
        conn,
        layer_id,
        message_id,
        status="pending",
        attempts=0,
        next_attempt_at=_stamp(_now()),
        claimed_by=None,
        lease_until=None,
    )


class Worker:
    """A background thread that translates and delivers until stopped."""

    def __init__(self, db: Database, fhir: Interactions, *, interval: float = 0.5, backoff_base: float = 2.0) -> None:
        self.db = db
        self.fhir = fhir
        self.interval = interval
        self.backoff_base = backoff_base
        self.worker_id = f"hl7v2-{uuid.uuid4().hex[:12]}"
        self.batch = outbox.batch_for(db, TRANSLATE_BATCH)
        self.on_sent: Callable[[str], object] | None = None  # see ``deliver_due``; set before or after start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hl7v2-outbound", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                translated = translate(self.db, self.fhir, batch=self.batch)
                delivered = deliver_due(self.db, self.worker_id, backoff_base=self.backoff_base, on_sent=self.on_sent)
            except Exception:  # a database hiccup must not end delivery for the life of the server
                _log.exception("hl7v2 outbound worker")
                translated = delivered = 0
            if not outbox.backlog(translated, self.batch) and not delivered:
                self._stop.wait(self.interval)
