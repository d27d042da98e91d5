"""Bad input over MLLP: rejected with AR/AE and an ERR segment saying where and why, or the connection closed;
nothing is written either way."""

from __future__ import annotations

import socket

import pytest
from sqlalchemy import func, select

from sandbox.hl7v2.er7 import MAX_MESSAGE_BYTES
from sandbox.hl7v2.mllp import END, START, Client
from sandbox.store.schema import resources
from tests.sandbox.hl7v2.conftest import adt, err, msa


def resource_count(db) -> int:  # type: ignore[no-untyped-def]
    with db.read() as conn:
        return conn.execute(select(func.count()).select_from(resources)).scalar_one()


def closed_without_reply(port: int, payload: bytes) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        try:
            return sock.recv(65536) == b""
        except ConnectionResetError:
            return True


@pytest.mark.parametrize(
    ("message", "location", "code"),
    [
        ("hello, this is not HL7", "MSH^1", "100"),
        ("PID|1||123^^^HOSP^MR||Doe^John\r", "MSH^1", "100"),
        ("MSH|^~\\&\r", "MSH^1^9^1", "101"),
        ("MSH|^^\\&|LAB|HOSP|EHR|default|20240101||ADT^A04|X1|P|2.5.1\r", "MSH^1^2^1", "102"),
        ("MSHA^~\\&ALAB\r", "MSH^1^1^1", "102"),
        ("MSH|^~\\&|LAB|HOSP|EHR|default|20240101||ADT^A04||P|2.5.1\rPID|1||1^^^H^MR\r", "MSH^1^10^1", "101"),
        ("MSH|^~\\&|LAB|HOSP|EHR|default|20240101||ADT^A04|X1|P|9.9\rPID|1||1^^^H^MR\r", "MSH^1^12^1", "203"),
        ("MSH|^~\\&|LAB|HOSP|EHR|default|20240101||ADT^Z99|X1|P|2.5.1\rPID|1||1^^^H^MR\r", "MSH^1^9^1^2", "201"),
        ("MSH|^~\\&|LAB|HOSP|EHR|default|20240101||XYZ^A01|X1|P|2.5.1\rPID|1||1^^^H^MR\r", "MSH^1^9^1^1", "200"),
        ("MSH|^~\\&|LAB|HOSP|EHR|nowhere|20240101||ADT^A04|X1|P|2.5.1\rPID|1||1^^^H^MR\r", "MSH^1^6^1", "204"),
        ("MSH|^~\\&|LAB|HOSP|EHR||20240101||ADT^A04|X1|P|2.5.1\rPID|1||1^^^H^MR\r", "MSH^1^6^1", "101"),
    ],
    ids=[
        "garbage",
        "missing-msh",
        "truncated-msh",
        "wrong-encoding-characters",
        "alphanumeric-field-separator",
        "no-control-id",
        "unknown-version",
        "unknown-event",
        "unknown-message-type",
        "unknown-sandbox",
        "no-sandbox",
    ],
)
def test_a_message_that_cannot_be_taken_is_rejected_ar_and_writes_nothing(mllp_port, db, message, location, code):
    with Client("127.0.0.1", mllp_port) as client:
        reply = client.send(message)
    assert msa(reply)[0] == "AR"
    assert err(reply)[:2] == (location, code)
    assert resource_count(db) == 0


@pytest.mark.parametrize(
    ("message", "location", "code"),
    [
        (adt(mrn=""), "PID^1^3^1", "101"),
        (adt().replace("|19800102|M|", "|19800102|Q|"), "PID^1^8^1", "103"),
        (adt().replace("|19800102|", "|1980-01-02|"), "PID^1^7^1", "102"),
        (adt().replace("PV1|1|O|", "PV1|1|Z|"), "PV1^1^2^1", "103"),
        ("\r".join(adt().split("\r")[:3]) + "\r", "PV1^1", "100"),
    ],
    ids=["no-patient-id", "bad-sex", "bad-birth-date", "bad-patient-class", "no-pv1"],
)
def test_a_message_whose_content_is_wrong_gets_ae_and_writes_nothing(mllp_port, db, message, location, code):
    with Client("127.0.0.1", mllp_port) as client:
        reply = client.send(message)
    assert msa(reply) == ("AE", "MSG0001")
    found_location, found_code, text = err(reply)
    assert (found_location, found_code) == (location, code) and text
    assert resource_count(db) == 0


def test_an_error_in_the_second_segment_group_undoes_the_first(mllp_port, db):
    """The patient and the first results are not kept when a later OBX is wrong: one message, one transaction."""
    from tests.sandbox.hl7v2.conftest import oru

    with Client("127.0.0.1", mllp_port) as client:
        reply = client.send(oru(value="high"))
    assert msa(reply)[0] == "AE" and err(reply)[:2] == ("OBX^1^5^1", "102")
    assert resource_count(db) == 0


def test_a_truncated_frame_is_not_applied(mllp_port, db):
    message = adt().encode()
    with socket.create_connection(("127.0.0.1", mllp_port), timeout=10) as sock:
        sock.sendall(START + message[: len(message) // 2])
    with Client("127.0.0.1", mllp_port) as client:  # the server is still there for the next sender
        assert msa(client.send(adt("A04", "NEXT", mrn="999")))[0] == "AA"
    assert resource_count(db) == 2  # the second message's patient and encounter only


def test_a_frame_interrupted_by_a_new_one_is_dropped_and_the_new_one_answered(mllp_port, db):
    with socket.create_connection(("127.0.0.1", mllp_port), timeout=10) as sock:
        sock.sendall(START + b"MSH|^~\\&|LAB|HO" + START + adt("A04", "WHOLE").encode() + END)
        reply = sock.recv(65536)
    assert msa(reply.strip(b"\x0b\x1c\r")) == ("AA", "WHOLE")


def test_an_oversize_frame_closes_the_connection(mllp_port, db):
    assert closed_without_reply(mllp_port, START + b"MSH|^~\\&|" + b"X" * (MAX_MESSAGE_BYTES + 10))
    assert resource_count(db) == 0


def test_noise_outside_frames_closes_the_connection(mllp_port, db):
    assert closed_without_reply(mllp_port, b"\x00\xff garbage " * 1000)
    assert resource_count(db) == 0


def test_rejections_in_a_known_sandbox_are_in_its_log(mllp_app):
    bad = "MSH|^~\\&|LAB|HOSP|EHR|default|20240101||ADT^Z99|Z1|P|2.5.1\rPID|1||1^^^H^MR\r"
    with Client("127.0.0.1", mllp_app.mllp_port) as client:
        client.send(bad)
        client.send(adt(mrn=""))
    log = mllp_app.get("/sandboxes/default/hl7v2/messages").json()["messages"]
    assert [(m["control_id"], m["status"], m["ack_code"]) for m in log] == [
        ("MSG0001", "error", "AE"),
        ("Z1", "rejected", "AR"),
    ]
    assert "PID-3" in log[0]["error"]
