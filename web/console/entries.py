"""What a trainee actually wrote during an attempt: the versions in their sandbox attributed to them
(``resource_versions.actor == "user:<id>"``) between the attempt's start and its end.

Only the sandbox's own layer is read: a trainee never writes to a baseline.  After a reset the entries are
gone with the rest of the sandbox's writes; the attempt's stored check results remain.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from sqlalchemy import Connection, select

from sandbox.store.schema import resource_versions
from tasks.engine import Attempt

MAX_ENTRIES = 200


@dataclass(frozen=True)
class Entry:
    resource_type: str
    id: str
    version_id: int
    method: str
    at: str  # FHIR instant
    route: str  # web-ui, fhir-api, hl7v2...
    deleted: bool
    content: str  # the resource as stored, indented for reading; empty for a delete


def trainee_entries(conn: Connection, attempt: Attempt) -> list[Entry]:
    """The trainee's writes in the attempt's sandbox from its start until it ended (or now), oldest first."""
    v = resource_versions.c
    query = select(v.resource_type, v.id, v.version_id, v.method, v.last_updated, v.route, v.deleted, v.content).where(
        v.layer_id == attempt.sandbox_id,
        v.actor == f"user:{attempt.trainee_id}",
        v.last_updated >= attempt.started_at,
    )
    if attempt.ended_at is not None:
        query = query.where(v.last_updated <= attempt.ended_at)
    rows = conn.execute(query.order_by(v.last_updated, v.resource_type, v.id).limit(MAX_ENTRIES)).all()
    return [
        Entry(
            r.resource_type,
            r.id,
            r.version_id,
            r.method,
            r.last_updated[:23] + "Z",
            r.route,
            bool(r.deleted),
            orjson.dumps(orjson.loads(r.content), option=orjson.OPT_INDENT_2).decode() if r.content else "",
        )
        for r in rows
    ]
