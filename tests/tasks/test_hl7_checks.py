"""The ``hl7`` check: HL7 v2 messages in the trainee's sandbox's message log, validated in lint and judged from
the log (outbound orders sent through the outbox to a real MLLP destination)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sandbox.cli import main
from sandbox.fhir.interactions import Interactions
from sandbox.hl7v2 import destinations
from sandbox.hl7v2.delivery import deliver_due, translate
from sandbox.store.database import Database
from sandbox.store.layers import resolve_view
from sandbox.store.repository import Actor
from tasks.engine import TaskEngine
from tasks.library import Library
from tasks.live import LiveChecker
from tasks.loader import PackError, load_pack
from tests.sandbox.hl7v2.test_outbound import Destination

PACK = """\
pack: hl7-mini
title: Messages
threshold: 0.8
tasks:
  - id: order
    title: Order an HbA1c that reaches the lab
    role: physician
    competencies: [knowledge:interfaces]
    case: diabetes-uncontrolled
    instructions: Order it.
    checks:
      - id: received
        title: The lab acknowledged the HbA1c order
        points: 2
        hl7:
          direction: outbound
          type: ORM^O01
          status: delivered
          ack: AA
          fields: {OBR-4.1: 4548-4, PID-5.1: Lindqvist}
        feedback: The lab has not acknowledged an HbA1c order.
      - id: no-cbc
        title: No CBC sent
        points: 1
        forbid: true
        hl7:
          type: ORM^O01
          fields: {OBR-4.1: 58410-2}
        feedback: She needs no CBC today.
"""


def _error(old: str, new: str) -> PackError:
    assert old in PACK
    with pytest.raises(PackError) as caught:
        load_pack(PACK.replace(old, new), "hl7.yaml")
    return caught.value


@pytest.mark.parametrize(
    ("old", "new", "field", "line", "message"),
    [
        ("direction: outbound", "direction: sideways", "checks[received].hl7.direction", 16, "not one of"),
        ("type: ORM^O01\n          status", "type: ORM\n          status", "checks[received].hl7.type", 17, "MSH-9"),
        ("status: delivered", "status: accepted", "checks[received].hl7.status", 18, "not a status of outbound"),
        ("ack: AA", "ack: OK", "checks[received].hl7.ack", 19, "not an ACK code"),
        ("{OBR-4.1: 4548-4, PID", "{OBR4: 4548-4, PID", "checks[received].hl7.fields.OBR4", 20, "field path"),
        ("{OBR-4.1: 4548-4, PID", "{MSH-2: x, PID", "checks[received].hl7.fields.MSH-2", 20, "separators"),
        ("{OBR-4.1: 58410-2}", "{OBR-4.1: [a, b]}", "checks[no-cbc].hl7.fields.OBR-4.1", 28, "as text"),
        ("{OBR-4.1: 58410-2}", "{}", "checks[no-cbc].hl7.fields", 28, "at least one field"),
        ("{OBR-4.1: 58410-2}", "{OBX-5: 7.90}", "checks[no-cbc].hl7.fields.OBX-5", 28, "quote it"),
        (
            "  forbid: true\n        hl7:\n          type",
            "  forbid: true\n        by_trainee: true\n        hl7:\n          direction: inbound\n          type",
            "checks[no-cbc].by_trainee",
            26,
            "not written by a trainee",
        ),
        ("ack: AA", "acks: AA", "checks[received].hl7.acks", 19, "unknown field"),
        ("  feedback: She", '  where: "true"\n        feedback: She', "checks[no-cbc].where", 29, "unknown field"),
        ("  feedback: She", "  cds: {service: x}\n        feedback: She", "checks[no-cbc].hl7", 26, "not both"),
    ],
)
def test_a_bad_hl7_check_is_refused_with_its_file_line_and_field(
    old: str, new: str, field: str, line: int, message: str
) -> None:
    error = _error(old, new)
    assert error.source == "hl7.yaml" and error.line == line, str(error)
    assert error.field.endswith(field) and message in error.message, str(error)


def test_lint_names_the_file_line_and_field_of_a_bad_hl7_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "good.yaml").write_text(PACK)
    assert main(["tasks", "lint", str(tmp_path / "good.yaml")]) == 0
    assert "ok: " in capsys.readouterr().out
    (tmp_path / "bad.yaml").write_text(PACK.replace("OBR-4.1: 58410-2", "OBR-four: 58410-2"))
    assert main(["tasks", "lint", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'bad.yaml'}:28: tasks[order].checks[no-cbc].hl7.fields.OBR-four: not a field" in err


ORDER = {
    "resourceType": "ServiceRequest",
    "status": "active",
    "intent": "order",
    "subject": {"reference": "Patient/diabetes-uncontrolled"},
}
HBA1C = {"coding": [{"system": "http://loinc.org", "code": "4548-4", "display": "Hemoglobin A1c"}]}
CBC = {"coding": [{"system": "http://loinc.org", "code": "58410-2", "display": "CBC panel"}]}


@pytest.fixture
def lab() -> Iterator[Destination]:
    peer = Destination()
    yield peer
    peer.close()


def test_hl7_checks_count_this_sandboxs_messages_since_the_start(
    db: Database, fhir: Interactions, new_sandbox: Callable[[str], str], lab: Destination
) -> None:
    engine = TaskEngine(db, fhir, Library([load_pack(PACK, "hl7.yaml")]))
    mine, theirs = new_sandbox("hl7-mine"), new_sandbox("hl7-theirs")

    def order(sandbox: str, code: dict, trainee: str = "ana") -> None:
        with db.write() as conn:
            destinations.put(conn, sandbox, "lab", {"host": "127.0.0.1", "port": lab.port})
            actor = Actor(f"user:{trainee}", "web-ui")
            fhir.create(conn, resolve_view(conn, sandbox), {**ORDER, "code": code}, actor)
        while translate(db, fhir, batch=5000):
            pass
        while deliver_due(db, "test"):
            pass

    order(mine, HBA1C)  # sent and acknowledged before the attempt started: does not count
    engine.start(mine, "ana", "hl7-mini/order")
    order(theirs, HBA1C)  # another sandbox's message: does not count
    order(mine, HBA1C, "ben")  # another trainee's order in this (shared) sandbox: not ana's
    assert len(lab.received) == 3
    graded = engine.check(mine, "ana", "hl7-mini/order")
    assert [(r.check_id, r.status) for r in graded.results] == [("received", "fail"), ("no-cbc", "pass")]
    assert graded.results[0].message == (
        "Expected at least 1 outbound ORM^O01 message with status delivered, ACK AA, OBR-4.1 = 4548-4,"
        " PID-5.1 = Lindqvist sent for your writes since the task started, found 0"
    )
    assert graded.results[0].feedback == "The lab has not acknowledged an HbA1c order."
    assert graded.score == 1

    order(mine, HBA1C)
    graded = engine.check(mine, "ana", "hl7-mini/order")
    assert [r.status for r in graded.results] == ["pass", "pass"] and graded.passed

    order(mine, CBC)
    graded = engine.check(mine, "ana", "hl7-mini/order")
    assert [(r.check_id, r.status) for r in graded.results] == [("received", "pass"), ("no-cbc", "fail")]
    assert graded.results[1].message.startswith("Found 1 outbound ORM^O01 message with OBR-4.1 = 58410-2")
    assert graded.results[1].feedback == "She needs no CBC today."


def test_a_message_the_lab_did_not_acknowledge_does_not_count(
    db: Database, fhir: Interactions, new_sandbox: Callable[[str], str]
) -> None:
    engine = TaskEngine(db, fhir, Library([load_pack(PACK, "hl7.yaml")]))
    sandbox = new_sandbox("hl7-silent")
    silent = Destination(silent=True)  # takes the message, never answers: delivery times out and is retried
    try:
        engine.start(sandbox, "ana", "hl7-mini/order")
        with db.write() as conn:
            destinations.put(conn, sandbox, "lab", {"host": "127.0.0.1", "port": silent.port})
            fhir.create(conn, resolve_view(conn, sandbox), {**ORDER, "code": HBA1C}, Actor("user:ana", "web-ui"))
        while translate(db, fhir, batch=5000):
            pass
        deliver_due(db, "test", timeout=0.2)
    finally:
        silent.close()
    graded = engine.check(sandbox, "ana", "hl7-mini/order")
    assert graded.results[0].status == "fail" and graded.results[0].message.endswith("found 0")


def test_an_outbound_check_says_so_when_the_sandbox_has_no_destination_that_takes_the_message(
    db: Database, fhir: Interactions, new_sandbox: Callable[[str], str]
) -> None:
    """Nothing the trainee does in the chart sends a message from a sandbox without a destination for it: the
    failed check says what is missing and who adds it, until an enabled destination takes that type."""
    engine = TaskEngine(db, fhir, Library([load_pack(PACK, "hl7.yaml")]))
    sandbox = new_sandbox("hl7-nowhere")
    engine.start(sandbox, "ana", "hl7-mini/order")
    missing = (
        "found 0; this sandbox has no HL7 v2 destination that takes ORM^O01, so nothing is sent: your trainer adds"
        f" one with PUT /sandboxes/{sandbox}/hl7v2/destinations/{{name}}"
    )

    def received() -> str:
        result = engine.check(sandbox, "ana", "hl7-mini/order").results[0]
        assert (result.check_id, result.status) == ("received", "fail")
        return result.message

    assert received().endswith(missing)
    with db.write() as conn:
        destinations.put(conn, sandbox, "adt", {"host": "127.0.0.1", "port": 9, "message_types": ["ADT^A08"]})
        destinations.put(conn, sandbox, "lab", {"host": "127.0.0.1", "port": 9, "enabled": False})
    assert received().endswith(missing)  # one for other types, one switched off: still nowhere to send it
    with db.write() as conn:
        destinations.put(conn, sandbox, "lab", {"host": "127.0.0.1", "port": 9})
    message = received()
    assert message.endswith("found 0") and "no HL7 v2 destination" not in message


def test_a_delivery_re_checks_the_live_checklist(
    db: Database, fhir: Interactions, new_sandbox: Callable[[str], str], lab: Destination
) -> None:
    """The ACK changes the message log, not the sandbox's data: the delivery worker pokes the live checker, which
    re-checks the sandbox's active attempts at its next poll."""
    engine = TaskEngine(db, fhir, Library([load_pack(PACK, "hl7.yaml")]))
    checker = LiveChecker(engine, db)  # not started: the test runs its poll's step itself
    sandbox = new_sandbox("hl7-live")
    engine.start(sandbox, "ana", "hl7-mini/order")
    with db.write() as conn:
        destinations.put(conn, sandbox, "lab", {"host": "127.0.0.1", "port": lab.port})
        fhir.create(conn, resolve_view(conn, sandbox), {**ORDER, "code": HBA1C}, Actor("user:ana", "web-ui"))
    while translate(db, fhir, batch=5000):
        pass
    assert checker.recheck_poked() == 0  # nothing delivered yet
    assert deliver_due(db, "test", on_sent=checker.poke) == 1
    assert checker.recheck_poked() == 1
    latest = engine.latest(sandbox, "ana", "hl7-mini/order")
    assert latest is not None and [r.status for r in latest.results] == ["pass", "pass"] and latest.passed
    assert checker.recheck_poked() == 0  # each poke is handled once
