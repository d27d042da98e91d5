"""The message log: every inbound and outbound HL7 v2 message of a sandbox, its acknowledgment and its effects."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from sandbox.fhir.values import instant_now
from sandbox.store.database import driver_execute
from sandbox.store.schema import hl7v2_messages

# What a log entry's status can be: inbound by the outcome its ACK reports, outbound by how delivery went.
STATUSES = {
    "inbound": ("accepted", "duplicate", "error", "rejected"),
    "outbound": ("pending", "delivered", "error", "failed"),
}


@dataclass(frozen=True)
class LogEntry:
    layer_id: str
    id: str
    direction: str
    created_at: str
    message_type: str
    control_id: str
    peer: str
    status: str
    ack_code: str | None
    content: str
    ack: str | None
    error: str | None
    resources: list[str]
    attempts: int
    next_attempt_at: str | None

    def to_json(self, *, full: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "direction": self.direction,
            "created_at": _instant(self.created_at),
            "message_type": self.message_type,
            "control_id": self.control_id,
            "peer": self.peer,
            "status": self.status,
            "ack_code": self.ack_code,
            "error": self.error,
            "resources": self.resources,
        }
        if self.direction == "outbound":
            data["attempts"] = self.attempts
            data["next_attempt_at"] = _instant(self.next_attempt_at) if self.next_attempt_at else None
        if full:
            data["content"] = self.content
            data["ack"] = self.ack
        return data


def _instant(value: str) -> str:
    return value[:23] + "Z"


def new_message_id() -> str:
    return str(uuid.uuid4())


def record(
    conn: Connection,
    layer_id: str,
    *,
    direction: str,
    message_type: str,
    control_id: str,
    peer: str,
    status: str,
    content: str,
    ack_code: str | None = None,
    ack: str | None = None,
    error: str | None = None,
    resources: list[str] | None = None,
    message_id: str | None = None,
    next_attempt_at: str | None = None,
) -> str:
    message_id = message_id or new_message_id()
    now = instant_now()[1]
    driver_execute(
        conn,
        _INSERT,
        {
            "layer_id": layer_id,
            "id": message_id,
            "direction": direction,
            "created_at": now,
            "message_type": message_type[:32],
            "control_id": control_id[:200],
            "peer": peer[:200],
            "status": status,
            "ack_code": ack_code,
            "content": content.replace("\x00", "\ufffd"),  # PostgreSQL text cannot hold NUL; garbage is logged as seen
            "ack": ack,
            "error": error,
            "resources": json.dumps(resources or []),
            "attempts": 0,
            "next_attempt_at": next_attempt_at,
        },
    )
    return message_id


# Built once, run at the driver (``driver_execute``): an inbound message logs one row, in its write transaction.
_INSERT = insert(hl7v2_messages)


def get(conn: Connection, layer_id: str, message_id: str) -> LogEntry | None:
    row = conn.execute(
        select(hl7v2_messages).where(hl7v2_messages.c.layer_id == layer_id, hl7v2_messages.c.id == message_id)
    ).first()
    return _entry(row) if row else None


def listing(
    conn: Connection,
    layer_id: str,
    *,
    direction: str | None = None,
    status: str | None = None,
    message_type: str | None = None,
    control_id: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[LogEntry]:
    m = hl7v2_messages
    query = select(m).where(m.c.layer_id == layer_id)
    for column, value in (
        (m.c.direction, direction),
        (m.c.status, status),
        (m.c.message_type, message_type),
        (m.c.control_id, control_id),
    ):
        if value:
            query = query.where(column == value)
    rows = conn.execute(query.order_by(m.c.created_at.desc(), m.c.id).limit(limit).offset(offset)).all()
    return [_entry(r) for r in rows]


def since(
    conn: Connection, layer_id: str, since: str, *, direction: str, message_type: str | None = None
) -> list[LogEntry]:
    """A sandbox's messages of one direction (and type) logged at ``since`` (index form) or later, oldest first:
    what the task engine judges an attempt's HL7 v2 work by."""
    m = hl7v2_messages.c
    query = select(hl7v2_messages).where(m.layer_id == layer_id, m.direction == direction, m.created_at >= since)
    if message_type:
        query = query.where(m.message_type == message_type)
    return [_entry(r) for r in conn.execute(query.order_by(m.created_at, m.id)).all()]


def set_status(conn: Connection, layer_id: str, message_id: str, **values: Any) -> None:
    if "resources" in values:
        values["resources"] = json.dumps(values["resources"])
    conn.execute(
        update(hl7v2_messages)
        .where(hl7v2_messages.c.layer_id == layer_id, hl7v2_messages.c.id == message_id)
        .values(**values)
    )


def _entry(row: Any) -> LogEntry:
    return LogEntry(
        row.layer_id,
        row.id,
        row.direction,
        row.created_at,
        row.message_type,
        row.control_id,
        row.peer,
        row.status,
        row.ack_code,
        row.content,
        row.ack,
        row.error,
        json.loads(row.resources or "[]"),
        row.attempts or 0,
        row.next_attempt_at,
    )
