"""The demo cohort and the built-in demo lab together: each trainee sandbox sends its lab orders to the lab, and
the built-in HbA1c lab-interface task passes on what the lab acknowledged."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from sandbox.accounts.users import find_by_email
from sandbox.demo import create_demo
from sandbox.hl7v2 import destinations, log
from sandbox.hl7v2.delivery import deliver_due, translate
from sandbox.store.layers import resolve_view
from sandbox.store.repository import Actor
from tasks.engine import TaskEngine
from tasks.library import Library

TASK = "orders-and-charting/hba1c-lab-interface"
HBA1C = {
    "resourceType": "ServiceRequest",
    "status": "active",
    "intent": "order",
    "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4", "display": "Hemoglobin A1c"}]},
    "subject": {"reference": "Patient/diabetes-uncontrolled"},
}


def test_each_trainee_sandbox_has_the_demo_lab_for_orders(app: FastAPI, tmp_path: Path) -> None:
    demo = create_demo(app.state.db, app.state.fhir, tmp_path, lab=("127.0.0.1", 2599))
    assert len(demo.sandboxes) == 2
    with app.state.db.read() as conn:
        for sandbox in demo.sandboxes.values():
            assert [d.to_json() for d in destinations.listing(conn, sandbox)] == [
                {
                    "id": "demo-lab",
                    "host": "127.0.0.1",
                    "port": 2599,
                    "message_types": ["ORM^O01"],
                    "receiving_application": "demo-lab",
                    "receiving_facility": "demo-lab",
                    "enabled": True,
                }
            ]
        assert destinations.listing(conn, "default") == []  # the open default sandbox is nobody's: untouched


def test_with_the_lab_off_the_demo_configures_no_destination(app: FastAPI, tmp_path: Path) -> None:
    demo = create_demo(app.state.db, app.state.fhir, tmp_path)
    with app.state.db.read() as conn:
        assert all(destinations.listing(conn, sandbox) == [] for sandbox in demo.sandboxes.values())


def test_a_demo_trainees_hba1c_order_reaches_the_built_in_lab_and_the_task_passes_on_its_ack(
    app: FastAPI, lab_port: int, tmp_path: Path
) -> None:
    db, fhir = app.state.db, app.state.fhir
    demo = create_demo(db, fhir, tmp_path, lab=("127.0.0.1", lab_port))
    sandbox, other = demo.sandboxes["ada@demo.invalid"], demo.sandboxes["ben@demo.invalid"]
    with db.read() as conn:
        ada = find_by_email(conn, "ada@demo.invalid")
    assert ada is not None
    engine = TaskEngine(db, fhir, Library.builtin())
    engine.start(sandbox, ada.id, TASK)
    graded = engine.check(sandbox, ada.id, TASK)
    assert {r.check_id: r.status for r in graded.results}["lab-received"] == "fail"

    with db.write() as conn:
        fhir.create(conn, resolve_view(conn, sandbox), HBA1C, Actor(f"user:{ada.id}", "web-ui"))
    while translate(db, fhir, "test", batch=5000):
        pass
    assert deliver_due(db, "test") == 1

    with db.read() as conn:
        [sent] = log.listing(conn, sandbox, direction="outbound")
        assert log.listing(conn, other, direction="outbound") == []  # the other trainee's sandbox sent nothing
    assert (sent.message_type, sent.peer, sent.status, sent.ack_code) == ("ORM^O01", "demo-lab", "delivered", "AA")
    assert sent.ack is not None and "Received by the demo lab" in sent.ack
    graded = engine.check(sandbox, ada.id, TASK)
    statuses = {r.check_id: r.status for r in graded.results}
    assert statuses["lab-received"] == "pass" and statuses["sent-once"] == "pass"
    assert statuses["ordered"] == "pass"
