"""The CDS Hooks log of a sandbox: every exchange with a service (discovery, hook call, feedback) and every
decision a user made on a card (accepted suggestions, or an override with its reason).

Hook calls keep the request as sent (the FHIR access token masked), the response as received, the time it
took, the outcome (``ok``, ``http-error``, ``timeout``, ``unreachable``, ``invalid``) and the cards that
passed validation, each with the ``key`` that accepting or overriding it names.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, insert, select, update

from sandbox.fhir.values import instant_now
from sandbox.store.schema import cds_calls, cds_decisions

MAX_BODY = 256 * 1024
OK, HTTP_ERROR, TIMEOUT, UNREACHABLE, INVALID = "ok", "http-error", "timeout", "unreachable", "invalid"
ERROR = "error"  # something unexpected on our side of one exchange (logged with its traceback)
ACCEPTED, OVERRIDDEN = "accepted", "overridden"


@dataclass(frozen=True)
class Call:
    layer_id: str
    id: str
    kind: str
    hook: str | None
    hook_instance: str | None
    registration_id: str | None
    service_id: str | None
    url: str
    actor: str | None
    patient_id: str | None
    created_at: str
    duration_ms: float
    status: str
    http_status: int | None
    error: str | None
    request: Any
    response: str | None
    cards: list[dict[str, Any]]

    def card(self, key: str) -> dict[str, Any] | None:
        return next((c for c in self.cards if c["key"] == key), None)

    def to_json(self, *, full: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "hook": self.hook,
            "hookInstance": self.hook_instance,
            "registration": self.registration_id,
            "service": self.service_id,
            "url": self.url,
            "actor": self.actor,
            "patient": self.patient_id,
            "created_at": _instant(self.created_at),
            "duration_ms": self.duration_ms,
            "status": self.status,
            "http_status": self.http_status,
            "error": self.error,
            "card_count": len(self.cards),
        }
        if full:
            data["request"] = self.request
            data["response"] = self.response
            data["cards"] = self.cards
        return data


@dataclass(frozen=True)
class Decision:
    layer_id: str
    id: str
    call_id: str
    card_key: str
    registration_id: str
    service_id: str
    hook: str
    patient_id: str | None
    indicator: str
    outcome: str
    suggestions: list[str]
    override_reason: dict[str, Any] | None
    resources: list[str]
    actor: str
    created_at: str
    feedback: str | None

    @property
    def has_reason(self) -> bool:
        reason = self.override_reason or {}
        return bool(reason.get("reason") or reason.get("userComment"))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "call": self.call_id,
            "card": self.card_key,
            "registration": self.registration_id,
            "service": self.service_id,
            "hook": self.hook,
            "patient": self.patient_id,
            "indicator": self.indicator,
            "outcome": self.outcome,
            "acceptedSuggestions": self.suggestions,
            "overrideReason": self.override_reason,
            "resources": self.resources,
            "actor": self.actor,
            "created_at": _instant(self.created_at),
            "feedback": self.feedback,
        }


def _instant(value: str) -> str:
    return value[:23] + "Z"


def new_id() -> str:
    return str(uuid.uuid4())


def record_call(
    conn: Connection,
    layer_id: str,
    *,
    kind: str,
    url: str,
    status: str,
    duration_ms: float,
    hook: str | None = None,
    hook_instance: str | None = None,
    registration_id: str | None = None,
    service_id: str | None = None,
    actor: str | None = None,
    patient_id: str | None = None,
    http_status: int | None = None,
    error: str | None = None,
    request: Any = None,
    response: str | None = None,
    cards: list[dict[str, Any]] | None = None,
    call_id: str | None = None,
) -> str:
    call_id = call_id or new_id()
    conn.execute(
        insert(cds_calls).values(
            layer_id=layer_id,
            id=call_id,
            kind=kind,
            hook=hook,
            hook_instance=hook_instance,
            registration_id=registration_id,
            service_id=service_id,
            url=url,
            actor=actor,
            patient_id=patient_id,
            created_at=instant_now()[1],
            duration_ms=round(duration_ms, 3),
            status=status,
            http_status=http_status,
            error=error,
            request=orjson.dumps(request).decode() if request is not None else None,
            response=_text(response),
            cards=orjson.dumps(cards or []).decode(),
        )
    )
    return call_id


def _text(body: str | None) -> str | None:
    if body is None:
        return None
    # PostgreSQL text cannot hold NUL; a garbage answer is logged as seen otherwise, cut to a sane size.
    return body[:MAX_BODY].replace("\x00", "\ufffd")


def get_call(conn: Connection, layer_id: str, call_id: str) -> Call | None:
    row = conn.execute(select(cds_calls).where(cds_calls.c.layer_id == layer_id, cds_calls.c.id == call_id)).first()
    return _call(row) if row else None


def calls(
    conn: Connection,
    layer_id: str,
    *,
    kind: str | None = None,
    hook: str | None = None,
    status: str | None = None,
    patient_id: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Call]:
    c = cds_calls.c
    query = select(cds_calls).where(c.layer_id == layer_id)
    for column, value in ((c.kind, kind), (c.hook, hook), (c.status, status), (c.patient_id, patient_id)):
        if value:
            query = query.where(column == value)
    rows = conn.execute(query.order_by(c.created_at.desc(), c.id).limit(limit).offset(offset)).all()
    return [_call(r) for r in rows]


def record_decision(conn: Connection, layer_id: str, call: Call, card: dict[str, Any], **values: Any) -> Decision:
    """Record what ``values["actor"]`` did with a card: ``outcome``, and ``suggestions`` and ``resources``
    (accepted) or ``override_reason`` (overridden)."""
    decision = Decision(
        layer_id=layer_id,
        id=new_id(),
        call_id=call.id,
        card_key=card["key"],
        registration_id=call.registration_id or "",
        service_id=call.service_id or "",
        hook=call.hook or "",
        patient_id=call.patient_id,
        indicator=card["indicator"],
        outcome=values["outcome"],
        suggestions=values.get("suggestions") or [],
        override_reason=values.get("override_reason") or None,
        resources=values.get("resources") or [],
        actor=values["actor"],
        created_at=instant_now()[1],
        feedback=values.get("feedback"),
    )
    row = {**decision.__dict__}
    for name in ("suggestions", "resources"):
        row[name] = orjson.dumps(row[name]).decode()
    row["override_reason"] = orjson.dumps(decision.override_reason).decode() if decision.override_reason else None
    conn.execute(insert(cds_decisions).values(**row))
    return decision


def set_feedback(conn: Connection, layer_id: str, decision_id: str, feedback: str) -> None:
    d = cds_decisions.c
    conn.execute(update(cds_decisions).where(d.layer_id == layer_id, d.id == decision_id).values(feedback=feedback))


def decisions(
    conn: Connection,
    layer_id: str,
    *,
    actor: str | None = None,
    since: str | None = None,
    patient_id: str | None = None,
    call_id: str | None = None,
    limit: int = 200,
) -> list[Decision]:
    d = cds_decisions.c
    query = select(cds_decisions).where(d.layer_id == layer_id)
    if actor:
        query = query.where(d.actor == actor)
    if since:
        query = query.where(d.created_at >= since)
    if patient_id:
        query = query.where(d.patient_id == patient_id)
    if call_id:
        query = query.where(d.call_id == call_id)
    return [_decision(r) for r in conn.execute(query.order_by(d.created_at.desc(), d.id).limit(limit)).all()]


def hook_calls_since(
    conn: Connection, layer_id: str, *, actor: str, since: str, patient_id: str | None = None
) -> list[Call]:
    """A user's hook calls (with their cards) since a time: what the task engine judges "the alert fired" by."""
    c = cds_calls.c
    query = select(cds_calls).where(c.layer_id == layer_id, c.kind == "hook", c.actor == actor, c.created_at >= since)
    if patient_id:
        query = query.where(c.patient_id == patient_id)
    return [_call(r) for r in conn.execute(query.order_by(c.created_at)).all()]


def latest_hook_calls(conn: Connection, layer_id: str, *, actor: str, patient_id: str, hook: str) -> list[Call]:
    """The calls of the newest firing (``hookInstance``) of a hook for a user and patient: the cards the chart
    still shows after the page that fired the hook has moved on."""
    c = cds_calls.c
    newest = conn.execute(
        select(c.hook_instance)
        .where(c.layer_id == layer_id, c.kind == "hook", c.hook == hook, c.actor == actor, c.patient_id == patient_id)
        .order_by(c.created_at.desc())
        .limit(1)
    ).scalar()
    if newest is None:
        return []
    rows = conn.execute(
        select(cds_calls).where(c.layer_id == layer_id, c.kind == "hook", c.hook_instance == newest).order_by(c.id)
    ).all()
    return [_call(r) for r in rows]


def _call(row: Any) -> Call:
    return Call(
        row.layer_id,
        row.id,
        row.kind,
        row.hook,
        row.hook_instance,
        row.registration_id,
        row.service_id,
        row.url,
        row.actor,
        row.patient_id,
        row.created_at,
        row.duration_ms,
        row.status,
        row.http_status,
        row.error,
        orjson.loads(row.request) if row.request else None,
        row.response,
        orjson.loads(row.cards or "[]"),
    )


def _decision(row: Any) -> Decision:
    return Decision(
        row.layer_id,
        row.id,
        row.call_id,
        row.card_key,
        row.registration_id,
        row.service_id,
        row.hook,
        row.patient_id,
        row.indicator,
        row.outcome,
        orjson.loads(row.suggestions or "[]"),
        orjson.loads(row.override_reason) if row.override_reason else None,
        orjson.loads(row.resources or "[]"),
        row.actor,
        row.created_at,
        row.feedback,
    )
