"""Orders and referrals to ServiceRequest: ORM^O01 and OML^O21 (ORC + OBR), REF^I12 (RF1, PRD, DG1, PR1).

IG: ORC -> ServiceRequest (ORC-1/ORC-5 -> status, ORC-2/3 -> identifier, ORC-9 ->
authoredOn, ORC-12 -> requester), OBR-4 -> code, OBR-5 / ORC-7 -> priority.  An
order is keyed by its placer order number, so a cancel (ORC-1 CA) or a status
change updates the order it names.
"""

from __future__ import annotations

from typing import Any

from sandbox.hl7v2 import datatypes as dt
from sandbox.hl7v2.adt import upsert_patient
from sandbox.hl7v2.er7 import Message, Segment, V2Error
from sandbox.hl7v2.results import order_key
from sandbox.hl7v2.writer import Writer

# ORC-5 order status (table 0038) -> ServiceRequest.status
ORDER_STATUS = {
    "A": "active",
    "IP": "active",
    "SC": "active",
    "CM": "completed",
    "CA": "revoked",
    "DC": "revoked",
    "ER": "entered-in-error",
    "HD": "on-hold",
}
# ORC-1 order control (table 0119), when ORC-5 is empty
ORDER_CONTROL = {
    "NW": "active",
    "OK": "active",
    "SC": "active",
    "XO": "active",
    "RL": "active",
    "CA": "revoked",
    "OC": "revoked",
    "DC": "revoked",
    "OD": "revoked",
    "HD": "on-hold",
    "OH": "on-hold",
}
PRIORITY = {"S": "stat", "A": "asap", "R": "routine", "P": "routine", "C": "urgent", "T": "urgent"}
REFERRAL = {"system": "http://snomed.info/sct", "code": "3457005", "display": "Patient referral"}


def orders(msg: Message, writer: Writer) -> None:
    """ORM^O01 / OML^O21: one ServiceRequest per ORC (with the OBR that follows it)."""
    patient_ref = upsert_patient(msg, writer)
    pairs: list[tuple[Segment, Segment | None]] = []
    for seg in msg.segments:
        if seg.name == "ORC":
            pairs.append((seg, None))
        elif seg.name == "OBR":
            if not pairs or pairs[-1][1] is not None:
                raise V2Error("100", "An OBR segment must follow its ORC", "OBR", seg.sequence)
            pairs[-1] = (pairs[-1][0], seg)
    if not pairs:
        raise V2Error("100", f"A {msg.message_type} needs at least one ORC segment", "ORC")
    for orc, obr in pairs:
        writer.upsert(*service_request(msg, orc, obr, patient_ref))


def service_request(
    msg: Message, orc: Segment, obr: Segment | None, patient_ref: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    control = orc.get(1)
    if not control:
        raise orc.error(1, "101", "ORC-1 (order control) is required")
    status_code = orc.get(5)
    if status_code:
        if status_code not in ORDER_STATUS:
            raise orc.error(5, "103", f"ORC-5 '{status_code}' is not an order status (table 0038)")
        status = ORDER_STATUS[status_code]
    elif control in ORDER_CONTROL:
        status = ORDER_CONTROL[control]
    else:
        raise orc.error(1, "103", f"ORC-1 '{control}' is not an order control code this server takes")
    placer = order_key(msg, orc, 3, 2) if orc.get(2) else (order_key(msg, obr, 3, 2) if obr else None)
    if placer is None:
        raise orc.error(2, "101", "ORC-2 or OBR-2 (placer order number) is required: orders are matched by it")
    identifiers = [placer]
    if orc.get(3) and orc.get(2):
        filler = order_key(msg, orc, 3, 99)
        if filler:
            identifiers.append(filler)
    code = dt.codeable_concept(obr.components(4)) if obr else None
    if code is None:
        raise (obr or orc).error(4, "101", "OBR-4 (universal service identifier) is required")
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "identifier": identifiers,
        "status": status,
        "intent": "order",
        "code": code,
        "subject": {"reference": patient_ref},
    }
    priority = (obr.get(5) if obr else "") or orc.get(7, 6)
    if priority in PRIORITY:
        resource["priority"] = PRIORITY[priority]
    if authored := dt.date_time(orc.get(9), orc, 9):
        resource["authoredOn"] = authored
    if requester := dt.practitioner_display(orc.components(12)):
        resource["requester"] = requester
    if obr is not None:
        reasons = [c for rep in range(len(obr.repetitions(31))) if (c := dt.codeable_concept(obr.components(31, rep)))]
        if reasons:
            resource["reasonCode"] = reasons
    return resource, [placer]


def referral(msg: Message, writer: Writer) -> None:
    """REF^I12: a referral ServiceRequest keyed by RF1-6 (originating referral identifier)."""
    rf1 = msg.require("RF1")
    patient_ref = upsert_patient(msg, writer)
    number = rf1.get(6)
    if not number:
        raise rf1.error(6, "101", "RF1-6 (originating referral identifier) is required: referrals are matched by it")
    key = {"system": f"urn:ehr-sandbox:hl7v2:referral:{rf1.get(6, 2) or msg.msh.get(3)}", "value": number}
    status = {"A": "active", "P": "draft", "R": "revoked", "E": "completed"}.get(rf1.get(1), "active")
    code = dt.codeable_concept(rf1.components(3))
    pr1 = msg.first("PR1")
    if pr1 is not None and (procedure := dt.codeable_concept(pr1.components(3))):
        code = procedure
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "identifier": [key],
        "status": status,
        "intent": "order",
        "category": [{"coding": [REFERRAL]}],
        "code": code or {"coding": [REFERRAL]},
        "subject": {"reference": patient_ref},
    }
    priority = {"S": "stat", "A": "asap", "R": "routine"}.get(rf1.get(2))
    if priority:
        resource["priority"] = priority
    if authored := dt.date_time(rf1.get(7), rf1, 7):
        resource["authoredOn"] = authored
    reasons = [c for dg1 in msg.all("DG1") if (c := dt.codeable_concept(dg1.components(3)))]
    if reasons:
        resource["reasonCode"] = reasons
    for prd in msg.all("PRD"):
        role = prd.get(1)
        name = dt.human_name(prd.components(2))
        display = " ".join([*name.get("given", []), name.get("family", "")]).strip() if name else ""
        if not display:
            continue
        if role == "RT":
            resource.setdefault("performer", []).append({"display": display})
        elif role == "RP":
            resource["requester"] = {"display": display}
    writer.upsert(resource, [key])
