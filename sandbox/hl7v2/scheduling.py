"""SIU^S12 (new appointment booking) to Appointment: SCH for the booking, AIS/AIP/AIL for what, who and where.

Keyed by the filler appointment id (SCH-2, else the placer's SCH-1).
"""

from __future__ import annotations

from typing import Any

from sandbox.hl7v2 import datatypes as dt
from sandbox.hl7v2.adt import upsert_patient
from sandbox.hl7v2.er7 import Message
from sandbox.hl7v2.writer import Writer

# SCH-25 filler status (table 0278) -> Appointment.status
FILLER_STATUS = {
    "Booked": "booked",
    "Pending": "pending",
    "Waitlist": "waitlist",
    "Cancelled": "cancelled",
    "Deleted": "entered-in-error",
    "Complete": "fulfilled",
    "Noshow": "noshow",
    "Started": "arrived",
}


def booking(msg: Message, writer: Writer) -> None:
    sch = msg.require("SCH")
    patient_ref = upsert_patient(msg, writer)
    number, namespace = (sch.get(2), sch.get(2, 2)) if sch.get(2) else (sch.get(1), sch.get(1, 2))
    if not number:
        raise sch.error(2, "101", "SCH-2 (filler appointment id) or SCH-1 (placer's) is required")
    key = {"system": f"urn:ehr-sandbox:hl7v2:appointment:{namespace or msg.msh.get(3)}", "value": number}
    ais = msg.first("AIS")
    start = dt.date_time(sch.get(11, 4), sch, 11) or (dt.date_time(ais.get(4), ais, 4) if ais else None)
    if not start:
        raise sch.error(11, "101", "SCH-11.4 (appointment start) or AIS-4 (start date/time) is required", component=4)
    resource: dict[str, Any] = {
        "resourceType": "Appointment",
        "identifier": [key],
        "status": FILLER_STATUS.get(sch.get(25), "booked"),
        "start": _instant(start),
        "participant": [{"actor": {"reference": patient_ref}, "status": "accepted"}],
    }
    if end := dt.date_time(sch.get(11, 5), sch, 11):
        resource["end"] = _instant(end)
    duration, units = sch.get(9), sch.get(10)
    if duration.isdigit() and units in ("", "MIN", "min"):
        resource["minutesDuration"] = int(duration)
    if reason := dt.codeable_concept(sch.components(7)):
        resource["reasonCode"] = [reason]
    if ais is not None and (service := dt.codeable_concept(ais.components(3))):
        resource["serviceType"] = [service]
    for aip in msg.all("AIP"):
        if ref := dt.practitioner_display(aip.components(3)):
            resource["participant"].append({"actor": ref, "status": "accepted"})
    for ail in msg.all("AIL"):
        if place := " ".join(x for x in ail.components(3)[:4] if x):
            resource["participant"].append({"actor": {"display": place}, "status": "accepted"})
    writer.upsert(resource, [key])


def _instant(value: str) -> str:
    return value if "T" in value else f"{value}T00:00:00Z"
