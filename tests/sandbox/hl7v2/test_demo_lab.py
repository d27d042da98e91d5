"""The built-in demo lab over a real socket (started by the HL7 v2 service, as ``serve`` starts it), and the
flags and variable that place it."""

from __future__ import annotations

import contextlib
import socket

import pytest

from sandbox.cli import main
from sandbox.hl7v2.demo_lab import DEFAULT_DEMO_LAB_PORT, demo_lab_port, demo_lab_port_from_env
from sandbox.hl7v2.er7 import parse
from sandbox.hl7v2.mllp import START, Client
from tests.sandbox.hl7v2.conftest import err, msa

ORM = (
    "MSH|^~\\&|EHR|SANDBOX|demo-lab|demo-lab|20240101100000||ORM^O01^ORM_O01|ORD0001|P|2.5.1\r"
    "PID|1||12345^^^EHR^MR||Lindqvist^Greta||19580312|F\r"
    "ORC|NW|ORD0001\r"
    "OBR|1|ORD0001||4548-4^Hemoglobin A1c^LN\r"
)


def test_an_order_is_acknowledged_aa_with_its_control_id(lab_port: int) -> None:
    with Client("127.0.0.1", lab_port) as client:
        reply = client.send(ORM)
        assert msa(reply) == ("AA", "ORD0001")
        ack = parse(reply)
        assert ack.message_type == "ACK^O01" and ack.msh.get(3) == "demo-lab"  # sender and receiver swapped
        # One connection carries as many messages as the sender likes, any type.
        assert msa(client.send(ORM.replace("ORD0001", "ORD0002").replace("ORM^O01^ORM_O01", "OML^O21"))) == (
            "AA",
            "ORD0002",
        )


def test_enhanced_mode_gets_the_accept_acknowledgment_it_asks_for(lab_port: int) -> None:
    enhanced = ORM.replace("|P|2.5.1\r", "|P|2.5.1|||AL|NE\r", 1)
    with Client("127.0.0.1", lab_port) as client:
        assert msa(client.send(enhanced)) == ("CA", "ORD0001")


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("hello, lab", "100"),  # not HL7 v2 at all
        (ORM.replace("ORM^O01^ORM_O01", ""), "101"),  # no message type
        (ORM.replace("|ORD0001|P|", "||P|"), "101"),  # no control id
    ],
)
def test_a_message_it_cannot_read_is_rejected_ar_with_an_err(lab_port: int, message: str, code: str) -> None:
    with Client("127.0.0.1", lab_port) as client:
        reply = client.send(message)
        assert msa(reply)[0] == "AR"
        assert err(reply)[1] == code
        assert msa(client.send(ORM)) == ("AA", "ORD0001")  # the connection still works after a rejection


def _closed_by_peer(sock: socket.socket) -> bool:
    """True when the lab closes the connection (reads end, or reset), False when it stays open for 10 s."""
    sock.settimeout(10)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


@pytest.mark.parametrize(
    "garbage",
    [
        b"\n" * 5000,  # bytes outside any frame: not MLLP
        START + b"x" * (1024 * 1024 + 10),  # a frame larger than a message may be
    ],
)
def test_a_connection_that_breaks_the_framing_is_closed_and_the_lab_goes_on(lab_port: int, garbage: bytes) -> None:
    with socket.create_connection(("127.0.0.1", lab_port)) as sock:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):  # closed while still sending: as good
            sock.sendall(garbage)
        assert _closed_by_peer(sock)
    with Client("127.0.0.1", lab_port) as client:
        assert msa(client.send(ORM)) == ("AA", "ORD0001")


def test_a_frame_cut_short_by_the_sender_gets_no_answer(lab_port: int) -> None:
    with socket.create_connection(("127.0.0.1", lab_port)) as sock:
        sock.sendall(START + ORM.encode()[:40])
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(10)
        assert sock.recv(65536) == b""  # closed without an ACK: half a message is not a message
    with Client("127.0.0.1", lab_port) as client:
        assert msa(client.send(ORM)) == ("AA", "ORD0001")


@pytest.mark.parametrize(("raw", "port"), [("2577", 2577), ("0", None), ("off", None), (" OFF ", None)])
def test_the_port_is_a_number_or_off(raw: str, port: int | None) -> None:
    assert demo_lab_port(raw, "--demo-lab-port") == port


@pytest.mark.parametrize("raw", ["", "lab", "-1", "65536", "25.76"])
def test_a_bad_port_names_the_source_and_what_it_takes(raw: str) -> None:
    with pytest.raises(ValueError, match=f"^EHR_X must be a port number \\(1-65535\\), or 0 or off .*'{raw}'$"):
        demo_lab_port(raw, "EHR_X")


def test_the_environment_variable_or_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EHR_SANDBOX_DEMO_LAB_PORT", raising=False)
    assert demo_lab_port_from_env() == DEFAULT_DEMO_LAB_PORT == 2576
    monkeypatch.setenv("EHR_SANDBOX_DEMO_LAB_PORT", "off")
    assert demo_lab_port_from_env() is None


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["serve", "--demo-lab-port", "lab"], None, "--demo-lab-port must be a port number (1-65535)"),
        (["serve"], "70000", "EHR_SANDBOX_DEMO_LAB_PORT must be a port number (1-65535)"),
        (["worker", "--demo-lab-port", "-3"], None, "--demo-lab-port must be a port number (1-65535)"),
    ],
)
def test_a_bad_demo_lab_port_is_one_line_and_nothing_is_started_or_made(
    argv: list[str],
    env: str | None,
    message: str,
    tmp_path,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("EHR_SANDBOX_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("EHR_SANDBOX_DATABASE_URL", raising=False)
    if env is None:
        monkeypatch.delenv("EHR_SANDBOX_DEMO_LAB_PORT", raising=False)
    else:
        monkeypatch.setenv("EHR_SANDBOX_DEMO_LAB_PORT", env)
    assert main(argv) == 2
    err_text = capsys.readouterr().err
    assert err_text.startswith(f"ehr-sandbox: {message}") and err_text.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # no database, no token: the mistake changed nothing
