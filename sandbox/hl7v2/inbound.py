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
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, Select, bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from sandbox.fhir.context import Views
from sandbox.fhir.interactions import Interactions
from sandbox.fhir.outcome import FhirError
from sandbox.hl7v2 import ack as acks
from sandbox.hl7v2 import log
from sandbox.hl7v2.er7 import Message, V2Error, parse
from sandbox.hl7v2.mappers import MAPPERS, Mapper, message_types
from sandbox.hl7v2.writer import Writer
from sandbox.store.database import Database, driver_execute, driver_fetch, driver_savepoint
from sandbox.store.layers import UnknownSandbox, View, resolve_view
from sandbox.store.repository import HELD_LAYERS, Actor, hold_view
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


# Built once and run at the driver (``driver_execute``): through SQLAlchemy, with the statement built per message,
# the duplicate check and its row cost several times what SQLite spent on them.
_INSERT_CONTROL_ID = insert(hl7v2_control_ids)
_SEEN = select(hl7v2_control_ids.c.message_id).where(
    hl7v2_control_ids.c.layer_id == bindparam("layer_id"),
    hl7v2_control_ids.c.sender == bindparam("sender"),
    hl7v2_control_ids.c.control_id == bindparam("control_id"),
)


_SEEN_MANY: dict[tuple[int, int, int], Select] = {}


def _seen_many(layers: int, senders: int, control_ids: int) -> tuple[Select, tuple[int, int, int]]:
    """The control ids applied among up to so many layers, senders and control ids (each padded to a power of
    two, so few statements are ever built), and the sizes to pad to.  Every key column is named, so both
    databases look the keys up in the primary key rather than read a layer's ids."""
    sizes = (_padded(layers), _padded(senders), _padded(control_ids))
    statement = _SEEN_MANY.get(sizes)
    if statement is None:
        c = hl7v2_control_ids.c
        statement = _SEEN_MANY[sizes] = select(c.layer_id, c.sender, c.control_id, c.message_id).where(
            c.layer_id.in_([bindparam(f"layer{n}") for n in range(sizes[0])]),
            c.sender.in_([bindparam(f"sender{n}") for n in range(sizes[1])]),
            c.control_id.in_([bindparam(f"control{n}") for n in range(sizes[2])]),
        )
    return statement, sizes


def _padded(count: int) -> int:
    return 1 << (count - 1).bit_length()


def _key(layer_id: str, msg: Message) -> tuple[str, str, str]:
    return layer_id, msg.sender, msg.control_id


def _unknown(msg: Message, sandbox_id: str) -> V2Error:
    return msg.msh.error(6, "204", f"There is no sandbox '{sandbox_id}' (MSH-6 names the sandbox)")


def actor_for(msg: Message) -> Actor:
    return Actor(f"hl7v2:{msg.sender}"[:200], ROUTE)


@dataclass
class _Item:
    """One message of a batch: what was read of it, and what is to be done with it in the transaction."""

    text: str
    sandbox_id: str | None  # named by the transport (HTTP), or None
    force: bool
    strict: bool
    msg: Message | None = None
    view: View | None = None
    mapper: Mapper | None = None
    # In the transaction: "apply" it, log a "refuse"al (AR) or an "error" (AE) found before it; None: answered.
    action: str | None = None
    error: V2Error | None = None
    layer_id: str | None = None  # where a refusal is logged
    result: Result | None = None


class Inbound:
    """Applies messages: one (``handle``) or a batch in one transaction (``handle_batch``), by the same code.

    A batch is what arrived over MLLP while the previous batch was being written: one transaction, and one
    commit, for all of it instead of one each.  Each message runs in its own savepoint, so one that is
    refused or fails rolls back alone, and its log entry is written in its place; the messages after it see
    what the ones before it wrote (an A08 after the A04 it updates, a resent control id).  No acknowledgment
    leaves before the commit: the results are returned after it, and if it fails every message of the batch
    is answered AE, nothing written.
    """

    def __init__(self, db: Database, fhir: Interactions, views: Views | None = None) -> None:
        self.db = db
        self.fhir = fhir
        # The app's cache of sandbox Views (its admin routes forget deleted ones); checked against the
        # sandbox's row by each transaction's hold (see ``_hold``), so a message costs no query to route.
        self.views = views if views is not None else Views(db)

    def handle(
        self, data: bytes | str, *, sandbox_id: str | None = None, force: bool = False, strict: bool = False
    ) -> Result:
        """Apply one message and build its acknowledgment.  Synchronous: call it off the event loop.

        ``sandbox_id`` is set when the transport already names the sandbox (HTTP);
        ``force`` re-applies a message whose control id was seen (reprocessing from the log);
        ``strict`` first checks the message against the standard with hl7apy (AE if it does not conform).
        """
        return self.handle_batch([data], sandbox_id=sandbox_id, force=force, strict=strict)[0]

    def handle_batch(
        self,
        batch: Sequence[bytes | str],
        *,
        sandbox_id: str | None = None,
        force: bool = False,
        strict: bool = False,
    ) -> list[Result]:
        """``handle`` for several messages, in order, in one database transaction; their results in order."""
        items = [self._read(data, sandbox_id, force, strict) for data in batch]
        todo = [item for item in items if item.result is None]
        if todo:
            try:
                self._write(todo)
            except Exception:  # the commit, or the transaction as a whole, failed: nothing of it was written
                _log.exception("hl7v2 batch of %d messages failed", len(todo))
                for item in todo:
                    item.result = self._failed(item)
        results = []
        for item in items:
            assert item.result is not None
            results.append(item.result)
        return results

    # ---- checks before anything is written -------------------------------------------------------------

    def _read(self, data: bytes | str, sandbox_id: str | None, force: bool, strict: bool) -> _Item:
        """Parse and route one message; its outcome when that settles it, else what the transaction does."""
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        item = _Item(text, sandbox_id, force, strict)
        try:
            return self._examine(item, data)
        except Exception:  # a bug, or the sandbox's lookup failed: this message's sender may retry, not the batch's
            _log.exception("hl7v2 message could not be read")
            item.result = self._failed(item)
            return item

    def _examine(self, item: _Item, data: bytes | str) -> _Item:
        sandbox_id = item.sandbox_id
        try:
            item.msg = parse(data)
            item.view = self._route(item.msg, sandbox_id)
        except V2Error as error:
            return self._refusing(item, error, sandbox_id)
        try:
            item.mapper = self._mapper(item.msg)
        except V2Error as error:
            return self._refusing(item, error, item.view.overlay)
        if item.strict:
            from sandbox.hl7v2.conformance import strict_errors  # hl7apy loads its structures on first use

            if errors := strict_errors(item.msg.text):
                item.action, item.error = "error", errors[0]
                return item
        item.action = "apply"
        return item

    def _refusing(self, item: _Item, error: V2Error, layer_id: str | None) -> _Item:
        """AR: the message as a whole was not taken.  Logged when we know whose log it belongs in."""
        error.reject = True
        if layer_id is not None and error.code != "204":
            item.action, item.error, item.layer_id = "refuse", error, layer_id
        else:
            item.result = self._refusal(item, error, layer_id)
            _log.info("hl7v2 rejected: %s", error.text)
        return item

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
            return self.views.find(target)
        except UnknownSandbox:
            raise _unknown(msg, target) from None

    def _mapper(self, msg: Message) -> Mapper:
        mapper = MAPPERS.get(msg.message_type)
        if mapper is None:
            if msg.msh.get(9, 1) in message_types():
                raise msg.msh.error(9, "201", f"Trigger event {msg.message_type} is not supported", component=2)
            raise msg.msh.error(9, "200", f"Message type {msg.msh.get(9, 1)} is not supported", component=1)
        return mapper

    # ---- the transaction ---------------------------------------------------------------------------

    def _write(self, items: list[_Item]) -> None:
        with self.db.write() as conn:
            try:
                self._hold(conn, items)
                applied = self._applied(conn, items)
                for item in items:
                    if item.result is None:
                        item.result = self._one(conn, item, applied)
                        if item.result.status == "accepted" and not item.force:  # its control id is now taken
                            assert item.msg is not None and item.view is not None
                            applied[_key(item.view.overlay, item.msg)] = item.result.message_id or ""
            finally:
                conn.info.pop(HELD_LAYERS, None)

    def _applied(self, conn: Connection, items: list[_Item]) -> dict[tuple[str, str, str], str]:
        """The control ids of the batch's messages to apply that were applied before (layer, sender, control id
        -> the message id that applied it), in one query for the whole batch rather than one a message.  The
        batch adds its own as they are taken, so a message resent within one batch is a duplicate too."""
        keys = {
            _key(item.view.overlay, item.msg)
            for item in items
            if item.result is None and item.action == "apply" and not item.force and item.msg and item.view
        }
        if not keys:
            return {}
        layer_ids, senders, control_ids = (sorted({key[n] for key in keys}) for n in range(3))
        statement, sizes = _seen_many(len(layer_ids), len(senders), len(control_ids))
        params: dict[str, str] = {}
        for prefix, values, size in zip(
            ("layer", "sender", "control"), (layer_ids, senders, control_ids), sizes, strict=True
        ):
            params.update({f"{prefix}{n}": values[min(n, len(values) - 1)] for n in range(size)})
        rows = driver_fetch(conn, statement, params)
        return {(row[0], row[1], row[2]): row[3] for row in rows if (row[0], row[1], row[2]) in keys}

    def _hold(self, conn: Connection, items: list[_Item]) -> None:
        """Hold each sandbox the batch writes into, once, first: it proves the cached View still describes
        the sandbox (or the View is resolved again here) and spares every write its own hold.  Messages for
        a sandbox that is gone are refused as at routing."""
        views: dict[str, View] = {}
        for item in items:
            if item.action == "apply" and item.view is not None:
                views.setdefault(item.view.sandbox_id, item.view)
        if not views:
            return
        held: set[str] = set()
        # In id order: batches, and a reset or delete waiting behind one, meet the sandboxes' rows in the same
        # order (on PostgreSQL the hold is a row lock until commit), so none waits for another in a cycle.
        for sandbox_id, view in sorted(views.items()):
            fresh: View | None = view
            if not hold_view(conn, view):
                self.views.forget(sandbox_id)
                try:
                    fresh = resolve_view(conn, sandbox_id)
                except UnknownSandbox:
                    fresh = None
                if fresh is not None and not hold_view(conn, fresh):
                    raise RuntimeError(f"sandbox '{sandbox_id}' changed while its messages were being applied")
                if fresh is not None:
                    self.views.remember(fresh)
            for item in items:
                if item.action == "apply" and item.view is not None and item.view.sandbox_id == sandbox_id:
                    if fresh is None:
                        assert item.msg is not None
                        item.result = self._refusal(item, _unknown(item.msg, sandbox_id), None)
                    else:
                        item.view = fresh
            if fresh is not None:
                held.add(fresh.overlay)
        conn.info[HELD_LAYERS] = held

    def _one(self, conn: Connection, item: _Item, applied: dict[tuple[str, str, str], str]) -> Result:
        """One message in its own savepoint: what it wrote stays only if it was taken."""
        msg, view = item.msg, item.view
        try:
            with driver_savepoint(conn):
                if item.action == "refuse":
                    assert item.error is not None and item.layer_id is not None
                    result = self._refusal(item, item.error, item.layer_id)
                    result.message_id = self._record(conn, item.layer_id, msg, item.text, result)
                    _log.info("hl7v2 rejected: %s", item.error.text)
                    return result
                assert msg is not None and view is not None
                if item.action == "error":
                    assert item.error is not None
                    raise item.error
                assert item.mapper is not None
                if not item.force and (original := applied.get(_key(view.overlay, msg))) is not None:
                    return self._duplicate(conn, view, msg, item.text, original)
                return self._apply(conn, msg, item.text, view, item.mapper, force=item.force)
        except V2Error as error:
            assert msg is not None and view is not None
            return self._error(conn, msg, item, error)
        except FhirError as error:  # the mapped resources did not validate, or a conditional match was ambiguous
            assert msg is not None and view is not None
            issue = "; ".join(i.diagnostics for i in error.issues)
            return self._error(conn, msg, item, V2Error("207", f"The mapped FHIR resources were refused: {issue}"))
        except IntegrityError:
            # Another connection applied the same control id first (PostgreSQL): answer as for a resend.
            if msg is not None and view is not None and item.action == "apply" and not item.force:
                with driver_savepoint(conn):
                    original = self._seen(conn, view.overlay, msg)
                    if original is not None:
                        return self._duplicate(conn, view, msg, item.text, original)
            _log.exception("hl7v2 message %s failed", msg.control_id if msg else "?")
            return self._failed(item)
        except Exception:  # a bug or a database failure: its savepoint rolled back, the sender may retry
            _log.exception("hl7v2 message %s failed", msg.control_id if msg else "?")
            return self._failed(item)

    def _apply(self, conn: Connection, msg: Message, text: str, view: View, mapper: Mapper, *, force: bool) -> Result:
        """Map and write a message whose control id was not applied before (``_applied``) or is forced."""
        message_id = log.new_message_id()
        writer = Writer(conn, view, actor_for(msg), self.fhir)
        mapper(msg, writer)
        if not force:
            key = {"layer_id": view.overlay, "sender": msg.sender, "control_id": msg.control_id}
            driver_execute(conn, _INSERT_CONTROL_ID, {**key, "message_id": message_id})
        result = self._ok(msg, view, message_id, writer.written)
        self._record(conn, view.overlay, msg, text, result, message_id)
        return result

    # ---- outcomes ----------------------------------------------------------------------------------

    def _refusal(self, item: _Item, error: V2Error, layer_id: str | None) -> Result:
        reply_code = acks.reply_code(item.msg, "AR")
        reply = acks.build(item.msg, reply_code, (error,)) if reply_code else None
        return Result("AR", reply, "rejected", layer_id, errors=[error])

    def _failed(self, item: _Item) -> Result:
        """AE for a message whose writes rolled back for a reason not its own: the sender may send it again."""
        error = V2Error("207", "Application internal error; nothing was written (retry later)")
        code = acks.reply_code(item.msg, "AE")
        sandbox_id = item.view.sandbox_id if item.view is not None else item.layer_id
        return Result("AE", acks.build(item.msg, code, (error,)) if code else None, "error", sandbox_id)

    def _ok(self, msg: Message, view: View, message_id: str, written: list[str]) -> Result:
        code = acks.reply_code(msg, "AA")
        reply = acks.build(msg, code) if code else None
        return Result("AA", reply, "accepted", view.sandbox_id, message_id, written)

    def _error(self, conn: Connection, msg: Message, item: _Item, error: V2Error) -> Result:
        """AE (AR if the error rejects the message): its writes rolled back, its log entry written in their place."""
        assert item.view is not None
        code = "AR" if error.reject else "AE"
        reply_code = acks.reply_code(msg, code)
        reply = acks.build(msg, reply_code, (error,)) if reply_code else None
        result = Result(code, reply, "rejected" if error.reject else "error", item.view.sandbox_id, errors=[error])
        try:
            with driver_savepoint(conn):
                result.message_id = self._record(conn, item.view.overlay, msg, item.text, result)
        except Exception:
            _log.exception("hl7v2 message %s: its log entry failed", msg.control_id)
            return self._failed(item)
        return result

    def _seen(self, conn: Connection, layer_id: str, msg: Message) -> str | None:
        rows = driver_fetch(conn, _SEEN, {"layer_id": layer_id, "sender": msg.sender, "control_id": msg.control_id})
        return rows[0][0] if rows else None

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
