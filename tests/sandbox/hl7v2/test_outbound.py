"""Outbound: orders, referrals, patient updates and final results leave as HL7 v2 to the sandbox's destinations,
through the outbox; a dead or slow destination is retried with backoff and every attempt is logged."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import update

from sandbox.hl7v2 import TRANSLATOR
from sandbox.hl7v2 import ack as acks
from sandbox.hl7v2.delivery import deliver_due, translate
from sandbox.hl7v2.er7 import parse
from sandbox.hl7v2.mllp import FrameReader, frame
from sandbox.store.outbox import lags as outbox_lags
from sandbox.store.schema import hl7v2_messages, outbox
from tests.sandbox.hl7v2.conftest import adt

ORDER = {
    "resourceType": "ServiceRequest",
    "status": "active",
    "intent": "order",
    "priority": "stat",
    "code": {"coding": [{"system": "http://loinc.org", "code": "58410-2", "display": "CBC panel"}], "text": "CBC"},
    "authoredOn": "2024-01-01T10:00:00Z",
}
REFERRAL = {
    "resourceType": "ServiceRequest",
    "status": "active",
    "intent": "order",
    "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "3457005", "display": "Patient referral"}]}],
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "183519002", "display": "Cardiology referral"}]},
}


class Destination:
    """A real MLLP peer on a socket: answers AA, or never answers (``silent``)."""

    def __init__(self, *, silent: bool = False) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.silent = silent
        self.received: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                frames = FrameReader()
                while data := conn.recv(65536):
                    for message in frames.feed(data):
                        self.received.append(message.decode())
                        if not self.silent:
                            conn.sendall(frame(acks.build(parse(message), "AA")))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def destination() -> Iterator[Destination]:
    peer = Destination()
    yield peer
    peer.close()


def dead_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return sock.getsockname()[1]  # closed again: nobody listens there


def configure(client, port: int, types: list[str] | None = None) -> None:  # type: ignore[no-untyped-def]
    body = {"host": "127.0.0.1", "port": port, "receiving_application": "LIS", "receiving_facility": "LAB"}
    if types:
        body["message_types"] = types
    response = client.put("/sandboxes/default/hl7v2/destinations/lab", json=body)
    assert response.status_code == 200, response.text


def patient_id(client) -> str:  # type: ignore[no-untyped-def]
    client.post("/sandboxes/default/hl7v2", content=adt())
    return client.get("/fhir/Patient").json()["entry"][0]["resource"]["id"]


def outbound(client) -> list[dict]:  # type: ignore[no-untyped-def]
    return client.get("/sandboxes/default/hl7v2/messages?direction=outbound").json()["messages"]


def test_an_order_leaves_as_an_orm_and_its_ack_is_logged(client, app, db, destination):
    configure(client, destination.port)
    pid = patient_id(client)
    order = client.post("/fhir/ServiceRequest", json={**ORDER, "subject": {"reference": f"Patient/{pid}"}}).json()
    translate(db, app.state.fhir)
    assert deliver_due(db, "w1") == 1
    [sent] = destination.received
    msg = parse(sent)
    assert msg.message_type == "ORM^O01" and msg.msh.get(5) == "LIS" and msg.msh.get(6) == "LAB"
    assert msg.first("OBR").get(4, 1) == "58410-2" and msg.first("OBR").get(4, 3) == "LN"
    assert msg.first("ORC").get(2) == order["id"]
    assert msg.first("PID").get(3) == "12345"
    [entry] = outbound(client)
    assert entry["status"] == "delivered" and entry["ack_code"] == "AA" and entry["attempts"] == 1
    assert entry["resources"] == [f"ServiceRequest/{order['id']}/_history/1"]


def test_a_referral_leaves_as_ref_i12_and_a_patient_update_as_adt_a08(client, app, db, destination):
    pid = patient_id(client)  # created over HL7 v2, before any destination: nothing goes out for it
    configure(client, destination.port)
    client.post("/fhir/ServiceRequest", json={**REFERRAL, "subject": {"reference": f"Patient/{pid}"}})
    patient = client.get(f"/fhir/Patient/{pid}").json()
    client.put(f"/fhir/Patient/{pid}", json={**patient, "gender": "female"})
    translate(db, app.state.fhir)
    deliver_due(db, "w1")
    assert sorted(parse(m).message_type for m in destination.received) == ["ADT^A08", "REF^I12"]
    a08 = next(parse(m) for m in destination.received if "ADT^A08" in m)
    assert a08.first("PID").get(8) == "F"


def test_writes_that_came_in_over_hl7v2_are_not_echoed_back(client, app, db, destination):
    configure(client, destination.port)
    client.post("/sandboxes/default/hl7v2", content=adt())
    client.post("/sandboxes/default/hl7v2", content=adt("A08", "M2", family="Dough"))
    translate(db, app.state.fhir)
    assert deliver_due(db, "w1") == 0 and destination.received == []


def test_only_the_message_types_a_destination_takes_are_queued(client, app, db, destination):
    configure(client, destination.port, ["ADT^A08"])
    pid = patient_id(client)
    client.post("/fhir/ServiceRequest", json={**ORDER, "subject": {"reference": f"Patient/{pid}"}})
    translate(db, app.state.fhir)
    assert outbound(client) == []


def test_a_translation_batch_passes_over_writes_that_send_nothing_and_counts_only_orders_to_its_limit(
    client, app, db, destination
):
    """The translator's batch bounds the events it sends for, not the ones it passes over: each batch is a write
    transaction, and an ingest of Observations should not cost one per ``batch`` of them."""
    configure(client, destination.port)
    pid = patient_id(client)
    translate(db, app.state.fhir)  # the Patient's creation (over HL7 v2: nothing to send)
    vital = {"resourceType": "Observation", "status": "final", "code": {"text": "pulse"}}
    for _ in range(5):
        client.post("/fhir/Observation", json={**vital, "subject": {"reference": f"Patient/{pid}"}})
    orders = [
        client.post("/fhir/ServiceRequest", json={**ORDER, "subject": {"reference": f"Patient/{pid}"}}).json()["id"]
        for _ in range(3)
    ]
    assert translate(db, app.state.fhir, batch=2) == 7  # five Observations, then the first two orders
    assert translate(db, app.state.fhir, batch=2) == 1
    assert translate(db, app.state.fhir, batch=2) == 0
    assert deliver_due(db, "w1") == 3
    assert sorted(parse(m).first("ORC").get(2) for m in destination.received) == sorted(orders)


def test_a_dead_destination_is_retried_with_backoff_then_delivered_when_it_comes_back(client, app, db):
    port = dead_port()
    configure(client, port)
    pid = patient_id(client)
    client.post("/fhir/ServiceRequest", json={**ORDER, "subject": {"reference": f"Patient/{pid}"}})
    translate(db, app.state.fhir)
    assert deliver_due(db, "w1", timeout=2) == 1
    [entry] = outbound(client)
    assert entry["status"] == "pending" and entry["attempts"] == 1 and "failed" in entry["error"]
    assert deliver_due(db, "w1") == 0  # not due again before its backoff
    peer = Destination()
    try:
        configure(client, peer.port)
        _make_due(db)
        assert deliver_due(db, "w1") == 1
        [entry] = outbound(client)
        assert entry["status"] == "delivered" and entry["attempts"] == 2
    finally:
        peer.close()


def test_a_slow_destination_times_out_and_the_message_stays_queued(client, app, db):
    slow = Destination(silent=True)
    try:
        configure(client, slow.port)
        pid = patient_id(client)
        client.post("/fhir/ServiceRequest", json={**ORDER, "subject": {"reference": f"Patient/{pid}"}})
        translate(db, app.state.fhir)
        deliver_due(db, "w1", timeout=0.3)
        [entry] = outbound(client)
        assert entry["status"] == "pending" and "timed out" in entry["error"]
        assert len(slow.received) == 1
    finally:
        slow.close()


def test_queued_messages_survive_a_worker_that_dies_mid_delivery(client, app, db, destination):
    """A claim whose worker vanished lapses with its lease; another worker then sends the message."""
    configure(client, destination.port)
    pid = patient_id(client)
    client.post("/fhir/ServiceRequest", json={**ORDER, "subject": {"reference": f"Patient/{pid}"}})
    translate(db, app.state.fhir)
    from sandbox.hl7v2.delivery import claim

    assert len(claim(db, "dying-worker")) == 1  # claimed, then the worker is gone
    assert deliver_due(db, "w2") == 0  # leased: nobody else takes it yet
    with db.write() as conn:
        conn.execute(update(hl7v2_messages).values(lease_until="2000-01-01T00:00:00.000000"))
    assert deliver_due(db, "w2") == 1
    assert outbound(client)[0]["status"] == "delivered"


def test_every_outbox_event_is_consumed_once(client, app, db, destination):
    configure(client, destination.port)
    pid = patient_id(client)
    client.post("/fhir/ServiceRequest", json={**ORDER, "subject": {"reference": f"Patient/{pid}"}})
    translate(db, app.state.fhir)
    assert translate(db, app.state.fhir) == 0
    with db.read() as conn:
        assert outbox_lags(conn)[TRANSLATOR] == 0
    assert len(outbound(client)) == 1


def test_resend_from_the_log_sends_again(client, app, db, destination):
    configure(client, destination.port)
    pid = patient_id(client)
    client.post("/fhir/ServiceRequest", json={**ORDER, "subject": {"reference": f"Patient/{pid}"}})
    translate(db, app.state.fhir)
    deliver_due(db, "w1")
    [entry] = outbound(client)
    assert client.post(f"/sandboxes/default/hl7v2/messages/{entry['id']}/resend").status_code == 202
    deliver_due(db, "w1")
    assert len(destination.received) == 2


def test_a_destination_needs_a_host_and_a_port(client):
    bad = client.put("/sandboxes/default/hl7v2/destinations/lab", json={"host": "x", "port": 70000})
    assert bad.status_code == 400
    assert bad.json()["issue"][0]["expression"] == ["port"]  # the member at fault
    bad_id = client.put("/sandboxes/default/hl7v2/destinations/no%20spaces", json={"host": "x", "port": 2575})
    assert bad_id.status_code == 400 and "expression" not in bad_id.json()["issue"][0]
    assert client.get("/sandboxes/default/hl7v2/destinations").json() == {"destinations": []}


def _make_due(db) -> None:  # type: ignore[no-untyped-def]
    with db.write() as conn:
        conn.execute(update(hl7v2_messages).values(next_attempt_at="2000-01-01T00:00:00.000000"))


def test_translating_reads_the_events_past_its_cursor_by_primary_key_whatever_the_statistics_say(tmp_path):
    """SQLite's statistics taken after a load (every event untranslated) once made it read the whole outbox for
    each batch, holding the write lock; the events past the cursor are read by primary key however stale they are."""
    import re

    from sqlalchemy import event, insert

    from sandbox.fhir.interactions import Interactions
    from sandbox.fhir.search_params import registry
    from sandbox.store import outbox as events
    from sandbox.store.database import Database
    from sandbox.store.repository import Repository

    db = Database(f"sqlite:///{tmp_path / 'outbox.db'}")
    db.create_schema()
    row = {"layer_id": "default", "resource_type": "Observation", "version_id": 1, "action": "create"}
    row.update({"actor": "loader", "route": "loader", "created_at": "2024-01-01T00:00:00.000000"})
    with db.write() as conn:
        conn.execute(insert(outbox), [{**row, "resource_id": f"o{n}"} for n in range(500)])
    db.analyze()  # as after a load: every event still to translate
    with db.write() as conn:
        events.start_at_end(conn, TRANSLATOR)  # translated since
        conn.execute(insert(outbox), [{**row, "resource_id": f"new{n}"} for n in range(3)])
    statements: list[tuple[str, object]] = []

    def grab(_conn, _cursor, statement, parameters, _context, _many) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT") and re.search(r"FROM outbox\s", statement + " "):
            statements.append((statement, parameters))

    reg = registry()
    event.listen(db.engine, "before_cursor_execute", grab)
    try:
        assert translate(db, Interactions(Repository(reg), reg)) == 3
    finally:
        event.remove(db.engine, "before_cursor_execute", grab)
    with db.read() as conn:
        plans = [
            "\n".join(r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params).all())
            for sql, params in statements
        ]
        behind = outbox_lags(conn)[TRANSLATOR]
    assert len(plans) == 2  # the idle check, then the batch
    assert all("INTEGER PRIMARY KEY" in plan and "SCAN outbox" not in plan for plan in plans), plans
    assert behind == 0
    db.dispose()
