"""ORU^R01 to DiagnosticReport and Observation (IG: OBR -> DiagnosticReport, OBX -> Observation).

Each OBR starts a report; the OBX segments after it are its results.  A
report is keyed by its filler order number (OBR-3, else the placer's OBR-2)
and each result by that number plus OBX-3 and OBX-4, so a corrected result
sent later replaces the preliminary one instead of adding a second.
"""

from __future__ import annotations

import re
from typing import Any

from sandbox.hl7v2 import datatypes as dt
from sandbox.hl7v2.adt import upsert_patient
from sandbox.hl7v2.er7 import Message, Segment, V2Error
from sandbox.hl7v2.writer import Writer

INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
# OBX-11 (table 0085) -> Observation.status
RESULT_STATUS = {
    "F": "final",
    "C": "corrected",
    "P": "preliminary",
    "R": "preliminary",
    "S": "preliminary",
    "I": "registered",
    "O": "registered",
    "X": "cancelled",
    "D": "entered-in-error",
    "W": "entered-in-error",
    "U": "final",
}
# OBR-25 (table 0123) -> DiagnosticReport.status
REPORT_STATUS = {
    "O": "registered",
    "I": "registered",
    "S": "registered",
    "P": "preliminary",
    "A": "partial",
    "R": "partial",
    "C": "corrected",
    "F": "final",
    "X": "cancelled",
}
_RANGE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*-\s*(-?\d+(?:\.\d+)?)\s*$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")


def results(msg: Message, writer: Writer) -> None:
    patient_ref = upsert_patient(msg, writer)
    encounter_ref = _encounter(msg, writer)
    groups = _groups(msg)
    if not groups:
        raise V2Error("100", "An ORU^R01 needs at least one OBR segment", "OBR")
    for obr, obxs in groups:
        report(msg, writer, obr, obxs, patient_ref, encounter_ref)


def _groups(msg: Message) -> list[tuple[Segment, list[Segment]]]:
    groups: list[tuple[Segment, list[Segment]]] = []
    for seg in msg.segments:
        if seg.name == "OBR":
            groups.append((seg, []))
        elif seg.name == "OBX":
            if not groups:
                raise V2Error("100", "An OBX segment comes before any OBR", "OBX", seg.sequence)
            groups[-1][1].append(seg)
    return groups


def _encounter(msg: Message, writer: Writer) -> str | None:
    pv1 = msg.first("PV1")
    visit = dt.cx_list(pv1, 19) if pv1 else []
    found = writer.find("Encounter", visit[0]) if visit else None
    return f"Encounter/{found[0]}" if found else None


def order_key(msg: Message, seg: Segment, filler: int, placer: int) -> dict[str, Any] | None:
    """The filler (else placer) order number as an Identifier, its system from EI.2 or the sender."""
    for n in (filler, placer):
        value = seg.get(n, 1)
        if value:
            namespace = seg.get(n, 2) or (msg.msh.get(3) if n == filler else msg.msh.get(5)) or "unknown"
            kind = "FILL" if n == filler else "PLAC"
            return {
                "system": f"urn:ehr-sandbox:hl7v2:order:{namespace}",
                "value": value,
                "type": {"coding": [{"system": f"{dt.V2_TABLE}0203", "code": kind}]},
            }
    return None


def report(
    msg: Message,
    writer: Writer,
    obr: Segment,
    obxs: list[Segment],
    patient_ref: str,
    encounter_ref: str | None,
) -> str:
    code = dt.codeable_concept(obr.components(4))
    if code is None:
        raise obr.error(4, "101", "OBR-4 (universal service identifier) is required")
    key = order_key(msg, obr, 3, 2)
    if key is None:
        raise obr.error(3, "101", "OBR-3 (filler order number) or OBR-2 (placer order number) is required")
    observations = [observation(obx, key, patient_ref, encounter_ref) for obx in obxs]
    refs = [writer.upsert(resource, resource["identifier"]) for resource in observations]
    status_code = obr.get(25)
    if status_code and status_code not in REPORT_STATUS:
        raise obr.error(25, "103", f"OBR-25 '{status_code}' is not a result status (table 0123)")
    status = REPORT_STATUS.get(status_code) or (
        "final" if observations and all(o["status"] == "final" for o in observations) else "preliminary"
    )
    resource: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "identifier": [key],
        "status": status,
        "category": [{"coding": [{"system": f"{dt.V2_TABLE}0074", "code": obr.get(24) or "LAB"}]}],
        "code": code,
        "subject": {"reference": patient_ref},
    }
    if encounter_ref:
        resource["encounter"] = {"reference": encounter_ref}
    if effective := dt.date_time(obr.get(7), obr, 7):
        resource["effectiveDateTime"] = effective
    if issued := dt.date_time(obr.get(22), obr, 22):
        resource["issued"] = _instant(issued)
    if refs:
        resource["result"] = [{"reference": ref} for ref in refs]
    return writer.upsert(resource, [key])


def observation(obx: Segment, order: dict[str, Any], patient_ref: str, encounter_ref: str | None) -> dict[str, Any]:
    code = dt.codeable_concept(obx.components(3))
    if code is None:
        raise obx.error(3, "101", "OBX-3 (observation identifier) is required")
    status_code = obx.get(11)
    if not status_code:
        raise obx.error(11, "101", "OBX-11 (observation result status) is required")
    if status_code not in RESULT_STATUS:
        raise obx.error(11, "103", f"OBX-11 '{status_code}' is not a result status (table 0085)")
    sub_id = obx.get(4)
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [
            {
                "system": order["system"],
                "value": f"{order['value']}-{obx.get(3)}" + (f"-{sub_id}" if sub_id else ""),
            }
        ],
        "status": RESULT_STATUS[status_code],
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "laboratory"}]}],
        "code": code,
        "subject": {"reference": patient_ref},
    }
    if encounter_ref:
        resource["encounter"] = {"reference": encounter_ref}
    resource.update(value(obx))
    if flags := [f for rep in obx.repetitions(8) if (f := rep[0][0])]:
        resource["interpretation"] = [{"coding": [{"system": INTERPRETATION, "code": flag}]} for flag in flags]
    if ref_range := reference_range(obx.get(7)):
        resource["referenceRange"] = [ref_range]
    if effective := dt.date_time(obx.get(14), obx, 14):
        resource["effectiveDateTime"] = effective
    return resource


def value(obx: Segment) -> dict[str, Any]:
    """OBX-5 by its type in OBX-2 (NM, SN, ST/TX/FT, CE/CWE/CNE, DT/TS/DTM)."""
    kind = obx.get(2)
    raw = obx.get(5)
    if not raw and not obx.components(5)[0]:
        return {}
    if kind == "NM":
        if not _NUMBER.match(raw.strip()):
            raise obx.error(5, "102", f"OBX-5 '{raw}' is not a number, as OBX-2 (NM) says it is")
        return {"valueQuantity": quantity(raw.strip(), obx.components(6))}
    if kind == "SN":
        comparator, number = obx.get(5, 1), obx.get(5, 2)
        if not _NUMBER.match(number):
            raise obx.error(5, "102", f"OBX-5 '{raw}' is not a structured numeric (comparator^number)")
        q = quantity(number, obx.components(6))
        if comparator in ("<", "<=", ">=", ">"):
            q["comparator"] = comparator
        return {"valueQuantity": q}
    if kind in ("ST", "TX", "FT"):
        texts = [obx.get(5, repetition=r) for r in range(len(obx.repetitions(5)))]
        return {"valueString": "\n".join(texts)}
    if kind in ("CE", "CWE", "CNE"):
        concept = dt.codeable_concept(obx.components(5))
        return {"valueCodeableConcept": concept} if concept else {}
    if kind in ("DT", "TS", "DTM"):
        return {"valueDateTime": dt.date_time(raw, obx, 5)}
    if not kind:
        raise obx.error(2, "101", "OBX-2 (value type) is required when OBX-5 has a value")
    raise obx.error(2, "102", f"OBX-2 value type '{kind}' is not supported (NM, SN, ST, TX, FT, CE, CWE, CNE, DT, TS)")


def quantity(number: str, units: list[str]) -> dict[str, Any]:
    q: dict[str, Any] = {"value": float(number) if "." in number else int(number)}
    if units[0] or units[1]:
        q["unit"] = units[1] or units[0]
        system = dt.system_for(units[2]) if units[2] else "http://unitsofmeasure.org"
        if units[0]:
            q["system"] = system
            q["code"] = units[0]
    return q


def reference_range(text: str) -> dict[str, Any] | None:
    if not text:
        return None
    m = _RANGE.match(text)
    if not m:
        return {"text": text}
    low, high = m.groups()
    return {"low": {"value": float(low)}, "high": {"value": float(high)}, "text": text}


def _instant(value: str) -> str:
    """An instant needs seconds and a zone; a date alone becomes midnight UTC."""
    return value if "T" in value else f"{value}T00:00:00Z"
