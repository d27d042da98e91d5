"""Inbound messages: read, route to a sandbox, apply through the one write path, log, acknowledge.

Routing: MSH-6 (receiving facility, its namespace id) names the sandbox
(``default`` for the default sandbox).  Over HTTP the URL names it, and MSH-6,
when valued, must agree.  A message that cannot be routed or read is rejected
(AR); one whose content cannot be mapped gets AE; either way nothing is
written.  A message whose MSH-10 control id this sandbox already applied from
the same sender is acknowledged again without a second write.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from sandbox.fhir.interactions import Interactions
from sandbox.fhir.outcome import FhirError
from sandbox.hl7v2 import ack as acks
from sandbox.hl7v2 import log
from sandbox.hl7v2.er7 import Message, V2Error, parse
from sandbox.hl7v2.mappers import MAPPERS, Mapper, message_types
from sandbox.hl7v2.writer import Writer
from sandbox.store.database import Database
from sandbox.store.layers import UnknownSandbox, View, resolve_view
from sandbox.store.repository import Actor
from sandbox.store.schema import hl7v2_control_ids

_log = logging.getLogger("ehr_sandbox.hl7v2")

VERSIONS = {"2.1", "2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2"}
PROCESSING_IDS = {"P", "T", "D"}
ROUTE = "hl7v2"


@dataclass
class Result:
    code: str  # AA, AE, AR: the application outcome
    reply: str | None  # the acknowledgment to send back, None when the sender asked for none
    status: str  # accepted, duplicate, error, rejected
    sandbox_id: str | None = None
    message_id: str | None = None
    resources: list[str] = field(default_factory=list)
    errors: list[V2Error] = field(default_factory=list)


def actor_for(msg: Message) -> Actor:
    return Actor(f"hl7v2:{msg.sender}"[:200], ROUTE)


class Inbound:
    def __init__(self, db: Database, fhir: Interactions) -> None:
        self.db = db
        self.fhir = fhir

    def handle(
        self, data: bytes | str, *, sandbox_id: str | None = None, force: bool = False, strict: bool = False
    ) -> Result:
        """Apply one message and build its acknowledgment.  Synchronous: call it off the event loop.

        ``sandbox_id`` is set when the transport already names the sandbox (HTTP);
        ``force`` re-applies a message whose control id was seen (reprocessing from the log);
        ``strict`` first checks the message against the standard with hl7apy (AE if it does not conform).
        """
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        msg: Message | None = None
        try:
            msg = parse(data)
            view = self._route(msg, sandbox_id)
        except V2Error as error:
            return self._refuse(msg, text, error, sandbox_id)
        try:
            mapper = self._mapper(msg)
        except V2Error as error:
            return self._refuse(msg, text, error, view.overlay)
        if strict:
            from sandbox.hl7v2.conformance import strict_errors  # hl7apy loads its structures on first use

            if errors := strict_errors(msg.text):
                return self._error(msg, text, view, errors[0])
        try:
            return self._apply(msg, text, view, mapper, force=force)
        except Exception:  # a bug or a database failure: the transaction rolled back, the sender may retry
            _log.exception("hl7v2 message %s from %s failed", msg.control_id, msg.sender)
            error = V2Error("207", "Application internal error; nothing was written (retry later)")
            code = acks.reply_code(msg, "AE")
            return Result("AE", acks.build(msg, code, (error,)) if code else None, "error", view.sandbox_id)

    # ---- checks before anything is written -------------------------------------------------------------

    def _route(self, msg: Message, sandbox_id: str | None) -> View:
        msh = msg.msh
        if not msh.get(9, 1) or not msh.get(9, 2):
            raise msh.error(9, "101", "MSH-9 (message type^trigger event) is required")
        if not msg.control_id:
            raise msh.error(10, "101", "MSH-10 (message control id) is required")
        processing = msh.get(11)
        if processing not in PROCESSING_IDS:
            raise msh.error(11, "202", f"MSH-11 processing id '{processing}' is not P, T or D")
        version = msh.get(12)
        if version not in VERSIONS:
            raise msh.error(12, "203", f"MSH-12 version '{version}' is not an HL7 v2 version this server reads")
        facility = msh.get(6)
        if sandbox_id is not None and facility and facility != sandbox_id:
            raise msh.error(6, "204", f"MSH-6 names sandbox '{facility}' but the message was sent to '{sandbox_id}'")
        target = sandbox_id or facility
        if not target:
            raise msh.error(6, "101", "MSH-6 (receiving facility) must name the sandbox ('default' for /fhir)")
        try:
            with self.db.read(snapshot=False) as conn:
                return resolve_view(conn, target)
        except UnknownSandbox:
            raise msh.error(6, "204", f"There is no sandbox '{target}' (MSH-6 names the sandbox)") from None

    def _mapper(self, msg: Message) -> Mapper:
        mapper = MAPPERS.get(msg.message_type)
        if mapper is None:
            if msg.msh.get(9, 1) in message_types():
                raise msg.msh.error(9, "201", f"Trigger event {msg.message_type} is not supported", component=2)
            raise msg.msh.error(9, "200", f"Message type {msg.msh.get(9, 1)} is not supported", component=1)
        return mapper

    # ---- outcomes ----------------------------------------------------------------------------------

    def _refuse(self, msg: Message | None, text: str, error: V2Error, layer_id: str | None) -> Result:
        """AR: the message as a whole was not taken.  Logged when we know whose log it belongs in."""
        error.reject = True
        reply_code = acks.reply_code(msg, "AR")
        reply = acks.build(msg, reply_code, (error,)) if reply_code else None
        result = Result("AR", reply, "rejected", layer_id, errors=[error])
        if layer_id is not None and error.code != "204":
            with self.db.write() as conn:
                result.message_id = self._record(conn, layer_id, msg, text, result)
        _log.info("hl7v2 rejected: %s", error.text)
        return result

    def _apply(self, msg: Message, text: str, view: View, mapper: Mapper, *, force: bool) -> Result:
        actor = actor_for(msg)
        message_id = log.new_message_id()
        try:
            with self.db.write() as conn:
                if not force:
                    original = self._seen(conn, view.overlay, msg)
                    if original is not None:
                        return self._duplicate(conn, view, msg, text, original)
                writer = Writer(conn, view, actor, self.fhir)
                mapper(msg, writer)
                if not force:
                    conn.execute(
                        insert(hl7v2_control_ids).values(
                            layer_id=view.overlay, sender=msg.sender, control_id=msg.control_id, message_id=message_id
                        )
                    )
                result = self._ok(msg, view, message_id, writer.written)
                self._record(conn, view.overlay, msg, text, result, message_id)
                return result
        except V2Error as error:
            return self._error(msg, text, view, error)
        except FhirError as error:  # the mapped resources did not validate, or a conditional match was ambiguous
            issue = "; ".join(i.diagnostics for i in error.issues)
            return self._error(msg, text, view, V2Error("207", f"The mapped FHIR resources were refused: {issue}"))
        except IntegrityError:
            # Another connection applied the same control id first (PostgreSQL): answer as for a resend.
            with self.db.write() as conn:
                original = self._seen(conn, view.overlay, msg)
                if original is not None:
                    return self._duplicate(conn, view, msg, text, original)
            raise

    def _ok(self, msg: Message, view: View, message_id: str, written: list[str]) -> Result:
        code = acks.reply_code(msg, "AA")
        reply = acks.build(msg, code) if code else None
        return Result("AA", reply, "accepted", view.sandbox_id, message_id, written)

    def _error(self, msg: Message, text: str, view: View, error: V2Error) -> Result:
        code = "AR" if error.reject else "AE"
        reply_code = acks.reply_code(msg, code)
        reply = acks.build(msg, reply_code, (error,)) if reply_code else None
        result = Result(code, reply, "rejected" if error.reject else "error", view.sandbox_id, errors=[error])
        with self.db.write() as conn:
            result.message_id = self._record(conn, view.overlay, msg, text, result)
        return result

    def _seen(self, conn: Connection, layer_id: str, msg: Message) -> str | None:
        c = hl7v2_control_ids.c
        return conn.execute(
            select(c.message_id).where(c.layer_id == layer_id, c.sender == msg.sender, c.control_id == msg.control_id)
        ).scalar()

    def _duplicate(self, conn: Connection, view: View, msg: Message, text: str, original: str) -> Result:
        code = acks.reply_code(msg, "AA")
        reply = acks.build(msg, code, text=f"Duplicate of message {original}; not applied again") if code else None
        result = Result("AA", reply, "duplicate", view.sandbox_id)
        result.message_id = self._record(conn, view.overlay, msg, text, result, error=f"duplicate of {original}")
        return result

    def _record(
        self,
        conn: Connection,
        layer_id: str,
        msg: Message | None,
        text: str,
        result: Result,
        message_id: str | None = None,
        *,
        error: str | None = None,
    ) -> str:
        return log.record(
            conn,
            layer_id,
            direction="inbound",
            message_type=msg.message_type if msg else "",
            control_id=msg.control_id if msg else "",
            peer=msg.sender if msg else "",
            status=result.status,
            content=text,
            ack_code=result.code,
            ack=result.reply,
            error=error or "; ".join(e.text for e in result.errors) or None,
            resources=result.resources,
            message_id=message_id,
        )
