"""Who wrote what in a sandbox, as FHIR R4 AuditEvent resources.

The attribution is already stored with every version (``resource_versions``:
actor, route, method, time); this renders a sandbox's own versions, newest
first, as AuditEvents in a ``searchset`` Bundle.  They are derived, not
stored, so they never show up in the sandbox's own FHIR searches and a reset
removes them with the writes they describe.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from sandbox.store.layers import View
from sandbox.store.repository import Repository, Stored

_ACTIONS = {"POST": ("C", "create"), "PUT": ("U", "update"), "PATCH": ("U", "patch"), "DELETE": ("D", "delete")}


def audit_event(stored: Stored, base: str) -> dict[str, Any]:
    action, interaction = _ACTIONS.get(stored.method or "", ("E", "operation"))
    if stored.method == "PUT" and stored.version_id == 1:
        action, interaction = "C", "create"  # update-as-create
    return {
        "resourceType": "AuditEvent",
        "id": f"{stored.resource_type}-{stored.id}-{stored.version_id}"[:64],
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        },
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": interaction}],
        "action": action,
        "recorded": stored.instant,
        "outcome": "0",
        "agent": [
            {
                "who": {"identifier": {"system": "urn:ehr-sandbox:actor", "value": stored.actor or "unknown"}},
                "requestor": True,
            }
        ],
        "source": {
            "site": stored.route or "unknown",  # fhir-api, web-ui, hl7v2, loader, ...
            "observer": {"display": "ehr-sandbox"},
            "type": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "4",
                    "display": "Application Server",
                }
            ],
        },
        "entity": [{"what": {"reference": f"{base}/{stored.resource_type}/{stored.id}/_history/{stored.version_id}"}}],
    }


def audit_bundle(
    conn: Connection,
    repo: Repository,
    sandbox_id: str,
    base: str,
    *,
    since: str | None = None,
    count: int = 100,
    offset: int = 0,
) -> dict[str, Any]:
    """The sandbox's own writes (not its baseline's), newest first, optionally since an index-form instant."""
    own = View(sandbox_id, (sandbox_id,))
    versions, total = repo.history(conn, own, since=since, limit=count, offset=offset)
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "entry": [{"resource": audit_event(stored, base), "search": {"mode": "match"}} for stored in versions],
    }
