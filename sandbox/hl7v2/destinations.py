"""Outbound MLLP destinations a vendor configures per sandbox, and which message types each one takes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from sandbox.fhir.outcome import FhirError
from sandbox.fhir.values import instant_now
from sandbox.store.schema import hl7v2_destinations

OUTBOUND_TYPES = ("ORM^O01", "REF^I12", "ADT^A08", "ORU^R01")
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


@dataclass(frozen=True)
class Destination:
    sandbox_id: str
    id: str
    host: str
    port: int
    message_types: tuple[str, ...]
    receiving_application: str
    receiving_facility: str
    enabled: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "port": self.port,
            "message_types": list(self.message_types),
            "receiving_application": self.receiving_application,
            "receiving_facility": self.receiving_facility,
            "enabled": self.enabled,
        }


def _invalid(text: str, member: str | None = None) -> FhirError:
    """400; ``member`` names the body's member at fault (the issue's expression), None for the id in the URL."""
    return FhirError.of(400, "invalid", text, expression=member)


def put(conn: Connection, sandbox_id: str, destination_id: str, body: Any) -> Destination:
    """Create or replace a destination from ``{"host", "port", "message_types"?, "receiving_application"?, ...}``."""
    if not _ID.match(destination_id):
        raise _invalid(f"'{destination_id}' is not a valid destination id (1-64 of A-Z a-z 0-9 - .)")
    if not isinstance(body, dict):
        raise _invalid("A destination is a JSON object with host and port")
    host, port = body.get("host"), body.get("port")
    if not isinstance(host, str) or not host.strip() or len(host) > 255:
        raise _invalid("host is required: a host name or address", "host")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise _invalid("port is required: a number from 1 to 65535", "port")
    types = body.get("message_types", list(OUTBOUND_TYPES))
    if not isinstance(types, list) or not types or any(t not in OUTBOUND_TYPES for t in types):
        raise _invalid(f"message_types is a non-empty list of {', '.join(OUTBOUND_TYPES)}", "message_types")
    enabled = body.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _invalid("enabled is true or false", "enabled")
    values = {
        "host": host.strip(),
        "port": port,
        "message_types": ",".join(types),
        "receiving_application": str(body.get("receiving_application") or destination_id)[:200],
        "receiving_facility": str(body.get("receiving_facility") or destination_id)[:200],
        "enabled": enabled,
    }
    d = hl7v2_destinations.c
    key = (d.sandbox_id == sandbox_id, d.id == destination_id)
    if conn.execute(select(d.id).where(*key)).first() is None:
        conn.execute(
            insert(hl7v2_destinations).values(
                sandbox_id=sandbox_id, id=destination_id, created_at=instant_now()[1], **values
            )
        )
    else:
        conn.execute(update(hl7v2_destinations).where(*key).values(**values))
    return Destination(
        sandbox_id,
        destination_id,
        values["host"],
        port,
        tuple(types),
        values["receiving_application"],
        values["receiving_facility"],
        enabled,
    )


def listing(conn: Connection, sandbox_id: str) -> list[Destination]:
    d = hl7v2_destinations.c
    rows = conn.execute(select(hl7v2_destinations).where(d.sandbox_id == sandbox_id).order_by(d.id)).all()
    return [_destination(r) for r in rows]


def get(conn: Connection, sandbox_id: str, destination_id: str) -> Destination | None:
    d = hl7v2_destinations.c
    row = conn.execute(select(hl7v2_destinations).where(d.sandbox_id == sandbox_id, d.id == destination_id)).first()
    return _destination(row) if row else None


def remove(conn: Connection, sandbox_id: str, destination_id: str) -> bool:
    d = hl7v2_destinations.c
    return (
        conn.execute(delete(hl7v2_destinations).where(d.sandbox_id == sandbox_id, d.id == destination_id)).rowcount > 0
    )


def _destination(row: Any) -> Destination:
    return Destination(
        row.sandbox_id,
        row.id,
        row.host,
        row.port,
        tuple(t for t in row.message_types.split(",") if t),
        row.receiving_application,
        row.receiving_facility,
        bool(row.enabled),
    )
