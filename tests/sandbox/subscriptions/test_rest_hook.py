"""R4 rest-hook Subscriptions, delivered to a real HTTP receiver on a local port."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import func, select, update

from sandbox.store import outbox
from sandbox.store.layers import DEFAULT_SANDBOX, resolve_view
from sandbox.store.repository import Actor
from sandbox.store.schema import outbox as outbox_table
from sandbox.store.schema import subscription_notifications
from sandbox.subscriptions.delivery import CONSUMER, claim, deliver_due, queue_events

LOINC = "http://loinc.org"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A vendor's endpoint: records every request; ``answers[path]`` lists the statuses to give, then 200."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    answers: dict[str, list[int]] = field(default_factory=dict)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                found.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                planned = found.answers.get(self.path, [])
                status = planned.pop(0) if planned else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    found.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield found
    server.shutdown()
    server.server_close()


@pytest.fixture
def fast(app) -> None:
    """Retries in tens of milliseconds rather than seconds."""
    worker = app.state.subscriptions
    worker.interval, worker.backoff_base, worker.max_attempts = 0.05, 0.05, 3


def until(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def subscription(endpoint: str, criteria: str, **channel: Any) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "Tell the vendor module about heart rates",
        "criteria": criteria,
        "channel": {"type": "rest-hook", "endpoint": endpoint, **channel},
    }


def heart_rate(oid: str, code: str = "8867-4") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": "Patient/p1"},
    }


def subscribe(client, body: dict[str, Any], base: str = "/fhir", headers: dict | None = None) -> str:
    r = client.post(f"{base}/Subscription", json=body, headers=headers or {})
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "requested"
    sid = r.json()["id"]
    until(
        lambda: client.get(f"{base}/Subscription/{sid}", headers=headers or {}).json()["status"] == "active",
        "the Subscription to become active",
    )
    return sid


def test_a_requested_subscription_is_activated_through_the_write_path(client, receiver, fast):
    sid = subscribe(client, subscription(f"{receiver.url}/hook", "Observation?code=8867-4"))
    history = client.get(f"/fhir/Subscription/{sid}/_history").json()
    assert [e["resource"]["status"] for e in history["entry"]] == ["active", "requested"]  # newest first


def test_matching_writes_post_the_resource_to_the_endpoint(client, app, receiver, fast, admin_headers):
    sandbox = client.post("/admin/sandboxes", json={"name": "Vendor"}, headers=admin_headers).json()["id"]
    base = f"/sandboxes/{sandbox}/fhir"
    body = subscription(
        f"{receiver.url}/hook",
        f"Observation?code={LOINC}|8867-4",
        payload="application/fhir+json",
        header=["Authorization: Bearer vendor-secret", "X-Module: hr"],
    )
    subscribe(client, body, base, admin_headers)
    for resource, where in (
        (heart_rate("hr-default"), "/fhir"),  # another sandbox: never the vendor's business
        (heart_rate("bp", code="85354-9"), base),  # does not match the criteria
        ({"resourceType": "Patient", "id": "p1"}, base),
        (heart_rate("hr-1"), base),
        (heart_rate("hr-2"), base),
    ):
        r = client.put(f"{where}/{resource['resourceType']}/{resource['id']}", json=resource, headers=admin_headers)
        assert r.status_code == 201, r.text
    until(lambda: len(receiver.received) >= 2, "two notifications")
    assert [json.loads(r.body)["id"] for r in receiver.received] == ["hr-1", "hr-2"]
    first = receiver.received[0]
    assert first.path == "/hook"
    assert first.headers["authorization"] == "Bearer vendor-secret" and first.headers["x-module"] == "hr"
    assert first.headers["content-type"].startswith("application/fhir+json")

    def recorded() -> set[tuple[str, str, int]]:
        with app.state.db.read() as conn:
            rows = conn.execute(select(subscription_notifications)).all()
        return {(r.resource_id, r.status, r.http_status) for r in rows if r.status != "pending"}

    assert until(lambda: len(recorded()) == 2 and recorded(), "the deliveries recorded") == {
        ("hr-1", "delivered", 200),
        ("hr-2", "delivered", 200),
    }


def test_without_a_payload_the_notification_is_an_empty_post(client, receiver, fast):
    subscribe(client, subscription(f"{receiver.url}/ping", "Observation"))
    client.put("/fhir/Observation/hr-1", json=heart_rate("hr-1"))
    [note] = until(lambda: receiver.received, "a notification")
    assert note.path == "/ping" and note.body == b"" and "content-type" not in note.headers


def test_a_flaky_endpoint_is_retried_until_it_answers(client, app, receiver, fast):
    receiver.answers["/flaky"] = [503, 500]
    subscribe(client, subscription(f"{receiver.url}/flaky", "Observation"))
    client.put("/fhir/Observation/hr-1", json=heart_rate("hr-1"))

    def delivered() -> Any:
        with app.state.db.read() as conn:
            return conn.execute(
                select(subscription_notifications).where(subscription_notifications.c.status == "delivered")
            ).first()

    note = until(delivered, "the third attempt")
    assert note.attempts == 3 and len(receiver.received) == 3


def test_repeated_failures_set_the_subscription_to_error(client, app, receiver, fast):
    receiver.answers["/down"] = [500] * 10
    sid = subscribe(client, subscription(f"{receiver.url}/down", "Observation"))
    client.put("/fhir/Observation/hr-1", json=heart_rate("hr-1"))
    failed = until(
        lambda: (s := client.get(f"/fhir/Subscription/{sid}").json())["status"] == "error" and s, "status error"
    )
    assert "HTTP 500" in failed["error"] and "3 times" in failed["error"]
    assert len(receiver.received) == 3  # max_attempts, then no more
    with app.state.db.read() as conn:
        [note] = conn.execute(select(subscription_notifications)).all()
    assert note.status == "failed" and note.attempts == 3  # recorded with the status change, in one transaction
    # An errored Subscription is not notified again: once the worker has read past these writes, nothing is queued.
    client.put("/fhir/Observation/hr-2", json=heart_rate("hr-2"))
    client.put("/fhir/Observation/hr-3", json=heart_rate("hr-3"))

    def caught_up() -> bool:
        with app.state.db.read() as conn:
            newest = conn.execute(select(func.max(outbox_table.c.seq))).scalar_one()
            return (outbox.position(conn, CONSUMER) or 0) >= newest

    until(caught_up, "the worker to read the new writes")
    with app.state.db.read() as conn:
        assert len(conn.execute(select(subscription_notifications)).all()) == 1


def test_notifications_survive_worker_restarts(app, db, receiver):
    """No lifespan: the test plays the workers, one of which dies holding a notification."""
    fhir = app.state.fhir
    with db.write() as conn:
        view = resolve_view(conn, DEFAULT_SANDBOX)
        fhir.create(conn, view, subscription(f"{receiver.url}/hook", "Observation"), Actor("vendor", "fhir-api"))
    assert queue_events(db, fhir) == 1  # activates it
    with db.write() as conn:  # written while no worker runs
        fhir.update(conn, view, "Observation", "hr-1", heart_rate("hr-1"), Actor("nurse", "web-ui"))
    while queue_events(db, fhir):
        pass  # the next worker picks the write up from the outbox cursor
    assert [n.resource_id for n in claim(db, "dies-before-sending")] == ["hr-1"]
    assert deliver_due(db, fhir, "survivor") == 0  # leased to the dead worker
    with db.write() as conn:
        conn.execute(update(subscription_notifications).values(lease_until="2000-01-01T00:00:00.000000"))
    assert deliver_due(db, fhir, "survivor") == 1
    assert [r.path for r in receiver.received] == ["/hook"]


@pytest.mark.parametrize(
    ("change", "expression", "words"),
    [
        ({"criteria": "Observation?colour=red"}, "Subscription.criteria", "colour"),
        ({"criteria": "Unicorn?horn=1"}, "Subscription.criteria", "Unicorn"),
        ({"channel": {"type": "websocket"}}, "Subscription.channel.type", "websocket"),
        ({"channel": {"type": "rest-hook"}}, "Subscription.channel.endpoint", "endpoint"),
        ({"channel": {"type": "rest-hook", "endpoint": "ftp://x"}}, "Subscription.channel.endpoint", "http"),
        (
            {"channel": {"type": "rest-hook", "endpoint": "http://x", "payload": "application/fhir+xml"}},
            "Subscription.channel.payload",
            "xml",
        ),
        (
            {"channel": {"type": "rest-hook", "endpoint": "http://x", "header": ["no colon"]}},
            "Subscription.channel.header[0]",
            "no colon",
        ),
    ],
)
def test_subscriptions_that_cannot_be_served_are_refused(client, change, expression, words):
    body = {**subscription("http://127.0.0.1:9/hook", "Observation"), **change}
    r = client.post("/fhir/Subscription", json=body)
    assert r.status_code == 422, r.text
    [issue] = r.json()["issue"]
    assert issue["expression"] == [expression] and words in issue["diagnostics"]
    assert client.get("/fhir/Subscription").json()["total"] == 0
    # The same check guards every route into the write path, a transaction Bundle included.
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": body, "request": {"method": "POST", "url": "Subscription"}}],
    }
    assert client.post("/fhir", json=bundle).status_code in (400, 422)
    assert client.get("/fhir/Subscription").json()["total"] == 0
