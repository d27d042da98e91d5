"""Subscriptions at work: outbox events -> queued notifications -> POSTs to rest-hook endpoints, with retries.

Two steps, each safe with several workers on several hosts and across restarts:

1. ``queue_events``: follows the outbox with a cursor of its own (``store/outbox.py``).  In one write
   transaction it takes a batch of events, activates Subscriptions written with status ``requested``
   (an update through the one write path, attributed to ``system:subscriptions``), finds which active
   Subscriptions of the event's sandbox match each written resource (the search engine runs the
   criteria restricted to that resource's ``_id``), queues one notification per match, and moves the
   cursor.  A worker that dies half-way leaves the batch for the next.
2. ``deliver_due``: pending notifications whose time has come are leased (a dead worker's lease lapses
   and another takes the row), POSTed outside any transaction, and the outcome recorded; failures are
   retried with exponential backoff, and after ``max_attempts`` the notification fails and its
   Subscription is set to status ``error`` with the reason in ``Subscription.error``.

Matching reads the sandbox as it is when the batch is handled (normally well under a second after the
write); deletions notify nobody, since a deleted resource matches no search.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Connection, Row, insert, select, update

from sandbox.fhir.criteria import split_criteria
from sandbox.fhir.interactions import Interactions
from sandbox.fhir.outcome import FhirError
from sandbox.fhir.validation import parse_json
from sandbox.hl7v2.delivery import backoff
from sandbox.store import outbox
from sandbox.store.database import Database
from sandbox.store.layers import UnknownSandbox, View, resolve_view
from sandbox.store.leases import LeaseQueue
from sandbox.store.repository import Actor
from sandbox.store.schema import subscription_notifications

_log = logging.getLogger("ehr_sandbox.subscriptions")

CONSUMER = "subscriptions"
ACTOR = Actor("system:subscriptions", "subscriptions")
MAX_ATTEMPTS = 6
LEASE = timedelta(seconds=60)
_FMT = "%Y-%m-%dT%H:%M:%S.%f"
# Search result parameters shape a Bundle, not which resources match: left out when matching one resource.
_RESULT_PARAMETERS = {"_include", "_revinclude", "_sort", "_count", "_total", "_summary", "_elements", "_contained"}


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _stamp(when: datetime) -> str:
    return when.strftime(_FMT)


@dataclass(frozen=True)
class Watch:
    """An active rest-hook Subscription of a sandbox, as the matcher needs it."""

    id: str
    resource_type: str
    query: list[tuple[str, str]]
    after_seq: int  # events at or before this one predate the Subscription (written in the same batch)


# ---- step 1: outbox events -> notifications --------------------------------------------------------------


QUEUE_BATCH = 200  # outbox events a matching transaction takes at most, on SQLite (``outbox.batch_for``)


def queue_events(db: Database, fhir: Interactions, *, batch: int = QUEUE_BATCH) -> int:
    """One batch of outbox events handled; returns how many were consumed."""

    def match(conn: Connection, events: list[Row[Any]]) -> None:
        by_layer: dict[str, list[Row[Any]]] = {}
        for event in events:
            by_layer.setdefault(event.layer_id, []).append(event)
        for layer_id, layer_events in by_layer.items():
            try:
                view = resolve_view(conn, layer_id)
            except UnknownSandbox:
                continue  # a baseline's load, or a sandbox deleted since: nobody subscribed there
            _handle(conn, fhir, view, layer_events)

    return outbox.consume(db, CONSUMER, match, batch=batch)[0]


def _handle(conn: Connection, fhir: Interactions, view: View, events: list[Row[Any]]) -> None:
    written: dict[str, int] = {}  # Subscriptions written in this batch: only later events concern them
    for event in events:
        if event.resource_type != "Subscription" or event.actor == ACTOR.id or event.action == "delete":
            continue
        written[event.resource_id] = event.seq
        _activate(conn, fhir, view, event.resource_id)
    watches = _watches(conn, fhir, view, written)
    if not watches:
        return
    for event in events:
        if event.action == "delete" or event.actor == ACTOR.id:
            continue  # our own status changes notify nobody
        for watch in watches:
            if watch.resource_type != event.resource_type or event.seq <= watch.after_seq:
                continue
            if _matches(conn, fhir, view, watch, event.resource_id):
                conn.execute(
                    insert(subscription_notifications).values(
                        layer_id=view.overlay,
                        id=uuid.uuid4().hex,
                        subscription_id=watch.id,
                        event_seq=event.seq,
                        resource_type=event.resource_type,
                        resource_id=event.resource_id,
                        version_id=event.version_id,
                        status="pending",
                        attempts=0,
                        next_attempt_at=_stamp(_now()),
                        created_at=_stamp(_now()),
                    )
                )


def _activate(conn: Connection, fhir: Interactions, view: View, sid: str) -> None:
    """``requested`` -> ``active`` (criteria and channel were checked when it was written)."""
    stored = fhir.repo.current(conn, view, "Subscription", sid)
    if stored is None or stored.deleted or stored.content is None:
        return
    resource = parse_json(stored.content)
    if resource.get("status") != "requested":
        return
    resource["status"] = "active"
    resource.pop("error", None)
    try:
        with conn.begin_nested():
            fhir.update(conn, view, "Subscription", sid, resource, ACTOR, if_match=stored.version_id)
    except FhirError as error:  # the client changed it again meanwhile: that write's event comes next
        _log.info("Subscription/%s not activated: %s", sid, error)


def _watches(conn: Connection, fhir: Interactions, view: View, written: dict[str, int]) -> list[Watch]:
    query = [("status", "active"), ("type", "rest-hook"), ("_count", str(fhir.max_count))]
    found = []
    for stored in fhir.search(conn, view, "Subscription", query).matches:
        resource = parse_json(stored.content or b"{}")
        try:
            rtype, pairs = split_criteria(str(resource.get("criteria", "")))
        except FhirError:
            continue  # checked on write; a registry change since could make old criteria unreadable
        found.append(Watch(stored.id, rtype, pairs, written.get(stored.id, 0)))
    return found


def _matches(conn: Connection, fhir: Interactions, view: View, watch: Watch, rid: str) -> bool:
    """The search engine runs the criteria, restricted to the written resource."""
    criteria = [(k, v) for k, v in watch.query if k not in _RESULT_PARAMETERS]
    query = [*criteria, ("_id", rid), ("_count", "1"), ("_total", "none")]
    return bool(fhir.search(conn, view, watch.resource_type, query, strict=True).matches)


# ---- step 2: notifications -> rest-hook endpoints ------------------------------------------------------------


_NOTIFICATIONS = LeaseQueue(
    subscription_notifications,
    order_by=[subscription_notifications.c.next_attempt_at, subscription_notifications.c.event_seq],
)


def claim(db: Database, worker_id: str, *, batch: int = 20) -> list[Row[Any]]:
    """Pending notifications now due, leased to this worker."""
    now = _now()
    return _NOTIFICATIONS.claim(
        db, worker_id, now=_stamp(now), until=_stamp(now + LEASE), batch=batch, load=_notification
    )


def _notification(conn: Connection, layer_id: str, notification_id: str) -> Row[Any]:
    n = subscription_notifications.c
    return conn.execute(select(subscription_notifications).where(n.layer_id == layer_id, n.id == notification_id)).one()


def deliver_due(
    db: Database,
    fhir: Interactions,
    worker_id: str,
    *,
    timeout: float = 10.0,
    backoff_base: float = 2.0,
    max_attempts: int = MAX_ATTEMPTS,
) -> int:
    """Send what is due; returns how many were attempted."""
    notes = claim(db, worker_id)
    if not notes:
        return 0
    with httpx.Client(timeout=timeout) as client:
        for note in notes:
            _send(db, fhir, client, worker_id, note, backoff_base=backoff_base, max_attempts=max_attempts)
    return len(notes)


def _send(
    db: Database,
    fhir: Interactions,
    client: httpx.Client,
    worker_id: str,
    note: Row[Any],
    *,
    backoff_base: float,
    max_attempts: int,
) -> None:
    attempts = note.attempts + 1
    values: dict[str, Any] = {"attempts": attempts, "claimed_by": None, "lease_until": None}
    subscription = written = None
    with db.read() as conn:
        try:
            view = resolve_view(conn, note.layer_id)
            subscription = fhir.repo.current(conn, view, "Subscription", note.subscription_id)
            written = fhir.repo.version(conn, view, note.resource_type, note.resource_id, note.version_id)
        except UnknownSandbox:
            pass  # deleted since: its rows go with it, and this update finds nothing
    resource = parse_json(subscription.content) if subscription and subscription.content else None
    if resource is None or resource.get("status") != "active":
        values.update(status="skipped", error="the Subscription is no longer active")
    elif written is None or written.content is None:
        values.update(status="skipped", error="the resource is gone (the sandbox was reset)")
    else:
        channel = resource.get("channel", {})
        headers = dict(_header(h) for h in channel.get("header", []))
        payload = channel.get("payload")
        body = b""
        if payload:
            body = written.content
            headers["Content-Type"] = f"{payload}; charset=utf-8"
        failure: str | None
        try:
            response = client.post(channel["endpoint"], content=body, headers=headers)
            values["http_status"] = response.status_code
            failure = None if response.is_success else f"the endpoint answered HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if failure is None:
            values.update(status="delivered", error=None, delivered_at=_stamp(_now()))
        else:
            values["error"] = f"attempt {attempts} to {channel['endpoint']} failed: {failure}"
            if attempts >= max_attempts:
                values["status"] = "failed"
            else:
                values["next_attempt_at"] = _stamp(_now() + backoff(attempts, backoff_base))
    n = subscription_notifications.c
    with db.write() as conn:
        conn.execute(
            update(subscription_notifications)
            .where(n.layer_id == note.layer_id, n.id == note.id, n.claimed_by == worker_id)
            .values(**values)
        )
        if values.get("status") == "failed":
            _set_error(conn, fhir, note, f"Delivery failed {attempts} times; last: {values['error']}")


def _header(line: str) -> tuple[str, str]:
    name, _, value = line.partition(":")
    return name.strip(), value.strip()


def _set_error(conn: Connection, fhir: Interactions, note: Row[Any], error: str) -> None:
    """The Subscription goes to status ``error``, through the one write path, with the reason."""
    view = resolve_view(conn, note.layer_id)
    stored = fhir.repo.current(conn, view, "Subscription", note.subscription_id)
    if stored is None or stored.deleted or stored.content is None:
        return
    resource = parse_json(stored.content)
    if resource.get("status") != "active":
        return
    resource.update(status="error", error=error[:1000])
    try:
        with conn.begin_nested():
            fhir.update(conn, view, "Subscription", note.subscription_id, resource, ACTOR, if_match=stored.version_id)
    except FhirError as exc:  # the client changed it meanwhile; its own status stands
        _log.info("Subscription/%s not set to error: %s", note.subscription_id, exc)


# ---- the worker ----------------------------------------------------------------------------------------------


class SubscriptionWorker:
    """A background thread that queues and delivers notifications until stopped."""

    def __init__(
        self,
        db: Database,
        fhir: Interactions,
        *,
        interval: float = 0.5,
        backoff_base: float = 2.0,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.db = db
        self.fhir = fhir
        self.interval = interval
        self.backoff_base = backoff_base
        self.max_attempts = max_attempts
        self.worker_id = f"subscriptions-{uuid.uuid4().hex[:12]}"
        self.batch = outbox.batch_for(db, QUEUE_BATCH)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        with self.db.write() as conn:
            if outbox.position(conn, CONSUMER) is None:
                outbox.start_at_end(conn, CONSUMER)  # the first run does not replay loads from before it existed
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="subscriptions", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                queued = queue_events(self.db, self.fhir, batch=self.batch)
                delivered = deliver_due(
                    self.db,
                    self.fhir,
                    self.worker_id,
                    backoff_base=self.backoff_base,
                    max_attempts=self.max_attempts,
                )
            except Exception:  # a database hiccup must not end delivery for the life of the server
                _log.exception("subscription worker")
                queued = delivered = 0
            if not outbox.backlog(queued, self.batch) and not delivered:
                self._stop.wait(self.interval)
