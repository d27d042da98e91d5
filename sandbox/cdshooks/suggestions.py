"""Applying the suggestions a user accepted: their actions go through the one write path.

Every action of every accepted suggestion runs through ``Interactions`` in the caller's one transaction,
attributed to the user (``user:<id>``) by the route ``cds-hooks``; the decision record names the card's
service.  If any action fails (an invalid resource, a version conflict) nothing is written.

A suggestion may only touch the patient of the hook call: a resource it creates or updates, and one it
updates or deletes, must not belong to another patient (a sandbox holds many; a service's bug must not
write into someone else's chart).
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Connection

from sandbox.cdshooks.cards import CardError, delete_target
from sandbox.fhir.interactions import Interactions, check_id
from sandbox.store.layers import View
from sandbox.store.repository import Actor

ROUTE = "cds-hooks"
_PATIENT_FIELDS = ("subject", "patient", "beneficiary")


def _patient_of(resource: dict[str, Any]) -> str | None:
    if resource.get("resourceType") == "Patient":
        return f"Patient/{resource.get('id')}" if resource.get("id") else None
    for name in _PATIENT_FIELDS:
        value = resource.get(name)
        reference = value.get("reference") if isinstance(value, dict) else None
        if isinstance(reference, str) and reference.startswith("Patient/"):
            return reference
    return None


def _check_patient(resource: dict[str, Any], patient: str | None, what: str) -> None:
    owner = _patient_of(resource)
    if patient and owner and owner != patient:
        raise CardError(f"The suggestion would {what} a resource of {owner}, not of {patient}: refused")


def apply_actions(
    conn: Connection,
    fhir: Interactions,
    view: View,
    actions: list[dict[str, Any]],
    actor_id: str,
    patient_id: str | None,
) -> list[str]:
    """Run the actions in order; returns what they wrote (``Type/id/_history/n``, or ``Type/id`` for a delete
    of something that was not there)."""
    actor = Actor(actor_id, ROUTE)
    patient = f"Patient/{patient_id}" if patient_id else None
    written: list[str] = []
    for action in actions:
        kind = action["type"]
        if kind == "create":
            resource = {k: v for k, v in action["resource"].items() if k not in ("id", "meta")}
            _check_patient(resource, patient, "create")
            stored = fhir.create(conn, view, resource, actor).stored
        elif kind == "update":
            resource = {k: v for k, v in action["resource"].items() if k != "meta"}
            rtype, rid = resource["resourceType"], check_id(resource["id"])
            _check_patient(resource, patient, "update")
            current = fhir.repo.current(conn, view, rtype, rid)
            if current is not None and current.content is not None:
                _check_patient(orjson.loads(current.content), patient, "update")
            stored = fhir.update(conn, view, rtype, rid, resource, actor).stored
        else:
            rtype, rid = delete_target(action)
            current = fhir.repo.current(conn, view, rtype, check_id(rid))
            if current is not None and current.content is not None:
                _check_patient(orjson.loads(current.content), patient, "delete")
            deleted = fhir.delete(conn, view, rtype, rid, actor)
            written.append(f"{rtype}/{rid}" + (f"/_history/{deleted.version_id}" if deleted else ""))
            continue
        written.append(f"{stored.resource_type}/{stored.id}/_history/{stored.version_id}")
    return written
