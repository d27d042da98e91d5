"""VXU^V04 to Immunization (IG: RXA -> Immunization, RXR -> route and site).

Each RXA is one administration, keyed by the order's filler (ORC-3) or placer
(ORC-2) number, else by patient, vaccine and date so a resend of the same
record (as registries do) updates it.
"""

from __future__ import annotations

from typing import Any

from sandbox.hl7v2 import datatypes as dt
from sandbox.hl7v2.adt import upsert_patient
from sandbox.hl7v2.er7 import Message, Segment, V2Error
from sandbox.hl7v2.writer import Writer

COMPLETION = {"CP": "completed", "PA": "completed", "RE": "not-done", "NA": "not-done"}


def vaccination(msg: Message, writer: Writer) -> None:
    patient_ref = upsert_patient(msg, writer)
    orc: Segment | None = None
    found = False
    for seg in msg.segments:
        if seg.name == "ORC":
            orc = seg
        elif seg.name == "RXA":
            found = True
            rxr = _following(msg, seg, "RXR")
            resource, key = immunization(msg, seg, rxr, orc, patient_ref)
            writer.upsert(resource, [key])
    if not found:
        raise V2Error("100", "A VXU^V04 needs at least one RXA segment", "RXA")


def _following(msg: Message, seg: Segment, name: str) -> Segment | None:
    index = msg.segments.index(seg)
    nxt = msg.segments[index + 1] if index + 1 < len(msg.segments) else None
    return nxt if nxt is not None and nxt.name == name else None


def immunization(
    msg: Message, rxa: Segment, rxr: Segment | None, orc: Segment | None, patient_ref: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    vaccine = dt.codeable_concept(rxa.components(5))
    if vaccine is None:
        raise rxa.error(5, "101", "RXA-5 (administered code, CVX) is required")
    when = dt.date_time(rxa.get(3), rxa, 3)
    if when is None:
        raise rxa.error(3, "101", "RXA-3 (date/time start of administration) is required")
    completion = rxa.get(20) or "CP"
    if completion not in COMPLETION:
        raise rxa.error(20, "103", f"RXA-20 '{completion}' is not a completion status (table 0322: CP RE NA PA)")
    source = msg.msh.get(3) or "unknown"
    number = (orc.get(3) or orc.get(2)) if orc else ""
    value = number or f"{patient_ref.split('/')[1]}-{rxa.get(5)}-{rxa.get(3)}"
    key = {"system": f"urn:ehr-sandbox:hl7v2:immunization:{source}", "value": value}
    resource: dict[str, Any] = {
        "resourceType": "Immunization",
        "identifier": [key],
        "status": COMPLETION[completion],
        "vaccineCode": vaccine,
        "patient": {"reference": patient_ref},
        "occurrenceDateTime": when,
        "primarySource": rxa.get(9) in ("", "00"),
    }
    amount = rxa.get(6)
    if amount and amount != "999":
        try:
            dose: dict[str, Any] = {"value": float(amount)}
        except ValueError:
            raise rxa.error(6, "102", f"RXA-6 '{amount}' is not a number") from None
        if rxa.get(7):
            dose.update(unit=rxa.get(7, 2) or rxa.get(7), system="http://unitsofmeasure.org", code=rxa.get(7))
        resource["doseQuantity"] = dose
    if rxa.get(15):
        resource["lotNumber"] = rxa.get(15)
    if expires := dt.date_only(rxa.get(16), rxa, 16):
        resource["expirationDate"] = expires
    if rxa.get(17):
        resource["manufacturer"] = {"display": rxa.get(17, 2) or rxa.get(17)}
    if completion in ("RE", "NA") and (reason := dt.codeable_concept(rxa.components(18))):
        resource["statusReason"] = reason
    if rxr is not None:
        if route := dt.codeable_concept(rxr.components(1)):
            resource["route"] = route
        if site := dt.codeable_concept(rxr.components(2)):
            resource["site"] = site
    return resource, key
