"""What a mapper writes with: FHIR interactions in the message's one database transaction, as the sending system.

Resources that carry a v2 identifier (PID-3, PV1-19, ORC-2, ...) are written as
conditional updates by that identifier, so a later message about the same thing
(an A08 after an A04, an A03 after an A01) updates it instead of creating another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Connection

from sandbox.fhir.interactions import Interactions
from sandbox.fhir.validation import parse_json
from sandbox.store.layers import View
from sandbox.store.repository import Actor


@dataclass
class Writer:
    conn: Connection
    view: View
    actor: Actor
    fhir: Interactions
    written: list[str] = field(default_factory=list)  # "Patient/123/_history/2", in write order

    def upsert(self, resource: dict[str, Any], identifiers: list[dict[str, Any]] | None = None) -> str:
        """Conditional update by the first identifier (create when none); returns the ``Type/id`` reference."""
        rtype = resource["resourceType"]
        key = next((i for i in identifiers or resource.get("identifier", []) if i.get("value")), None)
        if key is None:
            return self.create(resource)
        outcome = self.fhir.conditional_update(self.conn, self.view, rtype, criteria(key), resource, self.actor)
        return self._note(outcome.stored.resource_type, outcome.stored.id, outcome.stored.version_id)

    def create(self, resource: dict[str, Any]) -> str:
        outcome = self.fhir.create(self.conn, self.view, resource, self.actor)
        return self._note(outcome.stored.resource_type, outcome.stored.id, outcome.stored.version_id)

    def update(self, rtype: str, rid: str, resource: dict[str, Any]) -> str:
        outcome = self.fhir.update(self.conn, self.view, rtype, rid, {**resource, "id": rid}, self.actor)
        return self._note(rtype, rid, outcome.stored.version_id)

    def find(self, rtype: str, key: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """The one resource with this identifier, as (id, JSON), or None."""
        found = self.fhir.match(self.conn, self.view, rtype, criteria(key))
        if not found:
            return None
        return found[0].id, parse_json(found[0].content or b"{}")

    def read(self, rtype: str, rid: str) -> dict[str, Any]:
        return parse_json(self.fhir.read(self.conn, self.view, rtype, rid).content or b"{}")

    def _note(self, rtype: str, rid: str, version: int) -> str:
        self.written.append(f"{rtype}/{rid}/_history/{version}")
        return f"{rtype}/{rid}"


def criteria(key: dict[str, Any]) -> str:
    """``identifier=system|value`` (URL-encoded), or any system when the identifier has none."""
    value = key["value"].replace("\\", "\\\\").replace("|", "\\|").replace(",", "\\,").replace("$", "\\$")
    token = f"{key['system']}|{value}" if key.get("system") else value
    return urlencode([("identifier", token)])
