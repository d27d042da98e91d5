"""The hooks the chart fires, and the context each one carries (CDS Hooks 2.0 hook definitions).

- ``patient-view``: the chart opened; context ``userId``, ``patientId``, ``encounterId`` (optional).
- ``order-select``: an order is being drafted; context adds ``selections`` (ids of the orders just chosen,
  ``MedicationRequest/123``) and ``draftOrders`` (a Bundle of every draft order, status ``draft``).
- ``order-sign``: the orders are about to be signed; context adds ``draftOrders``.

Only the root-level primitive fields of a context may be prefetch tokens (``{{context.patientId}}``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PATIENT_VIEW, ORDER_SELECT, ORDER_SIGN = "patient-view", "order-select", "order-sign"
HOOKS = (PATIENT_VIEW, ORDER_SELECT, ORDER_SIGN)


class HookError(ValueError):
    """A hook call the chart asked for that cannot be made as given (one line, for the caller)."""


@dataclass(frozen=True)
class HookUser:
    """Who is at the chart: our account (writes are attributed to ``user:<account_id>``) and, when the
    sandbox has one, their FHIR resource (``Practitioner/123``), which becomes ``context.userId``."""

    account_id: str
    fhir_user: str | None = None

    @property
    def actor_id(self) -> str:
        return f"user:{self.account_id}"

    @property
    def reference(self) -> str:
        # userId is REQUIRED; without a FHIR resource for the user we name them by account, as a Practitioner.
        return self.fhir_user or f"Practitioner/{self.account_id}"


def draft_orders_bundle(orders: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``draftOrders`` Bundle (type collection) the order hooks carry."""
    for order in orders:
        if not isinstance(order, dict) or not isinstance(order.get("resourceType"), str):
            raise HookError("Each draft order is a FHIR resource (a JSON object with a resourceType)")
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": o} for o in orders]}


def build_context(
    hook: str,
    user: HookUser,
    patient_id: str,
    encounter_id: str | None = None,
    *,
    draft_orders: list[dict[str, Any]] | None = None,
    selections: list[str] | None = None,
) -> dict[str, Any]:
    if hook not in HOOKS:
        raise HookError(f"The hook must be one of {', '.join(HOOKS)}, not '{hook}'")
    if not patient_id:
        raise HookError("A hook call needs the patient in context")
    context: dict[str, Any] = {"userId": user.reference, "patientId": patient_id}
    if encounter_id:
        context["encounterId"] = encounter_id
    if hook == PATIENT_VIEW:
        return context
    orders = draft_orders or []
    if not orders:
        raise HookError(f"{hook} needs at least one draft order")
    context["draftOrders"] = draft_orders_bundle(orders)
    if hook == ORDER_SELECT:
        known = {f"{o['resourceType']}/{o.get('id')}" for o in orders}
        chosen = selections if selections is not None else sorted(known)
        unknown = [s for s in chosen if s not in known]
        if not chosen or unknown:
            raise HookError(f"order-select's selections must name draft orders (Type/id); unknown: {unknown}")
        context["selections"] = chosen
    return context


def token_values(context: dict[str, Any], user: HookUser) -> dict[str, str]:
    """The prefetch tokens this call can fill: root-level primitive context fields and the user's ids."""
    values = {f"context.{k}": str(v) for k, v in context.items() if isinstance(v, str | int | float | bool)}
    if user.fhir_user and "/" in user.fhir_user:
        rtype, _, rid = user.fhir_user.partition("/")
        token = {
            "Practitioner": "userPractitionerId",
            "PractitionerRole": "userPractitionerRoleId",
            "Patient": "userPatientId",
            "RelatedPerson": "userRelatedPersonId",
        }.get(rtype)
        if token:
            values[token] = rid
    return values
