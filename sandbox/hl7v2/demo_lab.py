"""The built-in demo lab: an MLLP receiver that acknowledges whatever it is sent, so lab-interface tasks work
without a vendor's laboratory system (as ``sandbox.cdshooks.demo_services`` does for CDS Hooks).

It answers each message with an original-mode ACK (or the accept acknowledgment that MSH-15/16 ask for):
AA for a message it can read, AR (with an ERR segment) for one it cannot or that has no type or control id,
like the project's own listener.  It keeps nothing: the sender's message log already holds each message and
its ACK.  ``ehr-sandbox serve`` runs it beside the MLLP listener; while it does, every cohort sandbox made (the
demo cohort's, and those of the cohorts trainers create) gets a destination ``demo-lab`` pointing at it
(``connect``).
"""

from __future__ import annotations

import logging
import os

from sqlalchemy import Connection

from sandbox.concurrency import run_in_threadpool
from sandbox.hl7v2 import ack as acks
from sandbox.hl7v2 import destinations
from sandbox.hl7v2.er7 import Message, V2Error, parse
from sandbox.hl7v2.mllp import Server

DEFAULT_DEMO_LAB_PORT = 2576
DESTINATION_ID = "demo-lab"
NAME = "demo lab"  # in messages, e.g. "the demo lab cannot listen on 127.0.0.1:2576 (address already in use)"
DISABLED = ("0", "off")

_log = logging.getLogger("ehr_sandbox.hl7v2")


def demo_lab_port(raw: str, source: str) -> int | None:
    """The port ``raw`` names (None when it says the lab is off); ``source`` names the flag or variable in errors."""
    value = raw.strip().lower()
    if value in DISABLED:
        return None
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ValueError(f"{source} must be a port number (1-65535), or 0 or off for no demo lab, not '{raw}'")
    return int(value)


def demo_lab_port_from_env() -> int | None:
    return demo_lab_port(
        os.environ.get("EHR_SANDBOX_DEMO_LAB_PORT", str(DEFAULT_DEMO_LAB_PORT)), "EHR_SANDBOX_DEMO_LAB_PORT"
    )


def reachable_host(bind_host: str) -> str:
    """The address a sender on this host connects to for a listener bound to ``bind_host`` (a wildcard bind
    is not an address to connect to)."""
    return "127.0.0.1" if bind_host in ("", "0.0.0.0", "::") else bind_host


def connect(conn: Connection, sandbox_id: str, lab: tuple[str, int]) -> None:
    """Send the sandbox's lab orders to the demo lab at ``lab`` (host, port), through the same ``destinations.put``
    as the API, so a trainer or vendor sees it on the HL7 v2 page and may change or remove it."""
    # ORM^O01 only: the lab-interface task is about orders, and an ADT to a lab would only add noise.
    destinations.put(conn, sandbox_id, DESTINATION_ID, {"host": lab[0], "port": lab[1], "message_types": ["ORM^O01"]})


def acknowledge(data: bytes) -> str | None:
    """The lab's answer to one frame: None when the sender asked for no acknowledgment."""
    msg: Message | None = None
    try:
        msg = parse(data)
        if not msg.msh.get(9, 1) or not msg.msh.get(9, 2):
            raise msg.msh.error(9, "101", "MSH-9 (message type^trigger event) is required")
        if not msg.control_id:
            raise msg.msh.error(10, "101", "MSH-10 (message control id) is required")
    except V2Error as error:
        error.reject = True
        _log.info("demo lab rejected a message: %s", error.text)
        code = acks.reply_code(msg, "AR")
        return acks.build(msg, code, (error,)) if code else None
    code = acks.reply_code(msg, "AA")
    return acks.build(msg, code, text="Received by the demo lab") if code else None


class DemoLab:
    """The lab's MLLP server on the running event loop."""

    def __init__(self, host: str, port: int) -> None:
        self.server = Server(self._answer, host, port, name=NAME)

    @property
    def port(self) -> int:
        return self.server.port

    async def _answer(self, data: bytes) -> bytes | None:
        reply = await run_in_threadpool(acknowledge, data)  # a large message is parsed off the event loop
        return reply.encode("utf-8") if reply is not None else None

    def bind(self) -> None:
        """Take the port now (``Server.bind``): ``ListenError`` when it is in use."""
        self.server.bind()

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()
