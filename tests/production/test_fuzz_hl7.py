"""Fuzzing the MLLP listener with random bytes and mutated messages (hypothesis): every frame gets an ACK,
the listener survives, and a message it refuses (AE/AR) writes nothing.  Quick profile: a few dozen messages
per test (``EHR_SANDBOX_FUZZ_EXAMPLES`` times ten raises it)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from sandbox.hl7v2 import ack as acks
from sandbox.hl7v2.er7 import V2Error, parse
from sandbox.hl7v2.mllp import Client
from sandbox.store.database import Database
from sandbox.store.schema import resource_versions
from tests.sandbox.hl7v2.conftest import adt, oru

EXAMPLES = int(os.environ.get("EHR_SANDBOX_FUZZ_EXAMPLES", "3")) * 10
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
SEEDS = [adt("A01", "FZ1"), adt("A08", "FZ2"), oru("FZ3")]


def _writes(db: Database) -> int:
    with db.read() as conn:
        return conn.execute(select(func.count()).select_from(resource_versions)).scalar_one()


def _exchange(port: int, message: bytes) -> str:
    with Client("127.0.0.1", port, timeout=15) as client:
        return client.send(message).decode("utf-8", "replace")


def _ack_code(reply: str) -> str:
    msa = parse(reply).first("MSA")
    assert msa is not None, reply
    return msa.get(1)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real message with a few edits: bytes replaced, cut, repeated, separators swapped, segments shuffled."""
    text = bytearray(draw(st.sampled_from(SEEDS)).encode())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text) - 1))
        edit = draw(st.sampled_from(["replace", "delete", "insert", "duplicate", "separator"]))
        if edit == "replace":
            text[at : at + 1] = draw(st.binary(min_size=1, max_size=8))
        elif edit == "delete":
            del text[at : at + draw(st.integers(1, 40))]
        elif edit == "insert":
            text[at:at] = draw(
                st.sampled_from([b"|", b"^", b"~", b"\\", b"&", b"\r", b"\rZZZ|1", b"\xff\xfe", b"\x00"])
            )
        elif edit == "duplicate":
            text[at:at] = bytes(text[at : at + draw(st.integers(1, 60))])
        else:
            text = bytearray(text.replace(b"|", draw(st.sampled_from([b"#", b"^", b"||"])), 1))
        if not text:
            text = bytearray(b"M")
    return bytes(text)


@FUZZ
@given(noise=st.binary(min_size=1, max_size=2000))
def test_random_bytes_in_a_frame_get_a_refusal_and_write_nothing(mllp_port: int, db: Database, noise: bytes) -> None:
    before = _writes(db)
    reply = _exchange(mllp_port, noise.replace(b"\x0b", b"").replace(b"\x1c", b""))
    assert _ack_code(reply) in ("AE", "AR")
    assert _writes(db) == before


@FUZZ
@given(message=mutated())
def test_mutated_messages_are_acknowledged_and_refused_ones_write_nothing(
    mllp_port: int, db: Database, message: bytes
) -> None:
    message = message.replace(b"\x0b", b"").replace(b"\x1c", b"")  # one frame, whatever the edits made
    try:
        parsed = parse(message)
    except V2Error:
        parsed = None
    # A mutation that values MSH-15/16 switches to enhanced mode, where the sender says which ACKs it wants
    # (possibly none): only original mode promises a reply to every message.
    assume(parsed is None or not acks.enhanced(parsed))
    before = _writes(db)
    reply = _exchange(mllp_port, message)
    try:
        code = _ack_code(reply)
    except V2Error as exc:
        raise AssertionError(f"the reply is not an ACK: {reply!r}") from exc
    assert code in ("AA", "AE", "AR", "CA", "CE", "CR")
    if code not in ("AA", "CA"):
        assert _writes(db) == before


def test_the_listener_still_accepts_a_good_message_after_the_noise(mllp_port: int) -> None:
    with Client("127.0.0.1", mllp_port, timeout=30) as client:
        client.sock.sendall(b"\x0b" + os.urandom(512) + b"\x1c\x0d")  # a framed blob of noise
        assert _ack_code(client.receive().decode("utf-8", "replace")) in ("AE", "AR")
        assert _ack_code(client.send(adt("A04", "AFTER1")).decode()) == "AA"
