"""ADT messages to Patient and Encounter (HL7 v2-to-FHIR IG: PID -> Patient, PV1 -> Encounter, MRG -> link).

A01 admit, A04 register, A08 update, A31 person update, A03 discharge,
A11 cancel admit, A40 merge.  The patient is matched by its PID-3 identifiers
and the encounter by its PV1-19 visit number, so each later event updates
what the first one created.
"""

from __future__ import annotations

from typing import Any

from sandbox.hl7v2 import datatypes as dt
from sandbox.hl7v2.er7 import Message, Segment, V2Error
from sandbox.hl7v2.writer import Writer

# PV1-2 patient class (table 0004) -> Encounter.class (v3 ActCode)
PATIENT_CLASS = {
    "I": ("IMP", "inpatient encounter"),
    "O": ("AMB", "ambulatory"),
    "E": ("EMER", "emergency"),
    "P": ("PRENC", "pre-admission"),
    "R": ("AMB", "ambulatory"),
    "B": ("AMB", "ambulatory"),
    "N": ("AMB", "ambulatory"),
}
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def patient(pid: Segment) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """PID -> Patient, and its identifiers (the match keys); PID-3 is required."""
    identifiers = dt.cx_list(pid, 3)
    if not identifiers:
        raise pid.error(3, "101", "PID-3 (patient identifier list) is required: patients are matched by it")
    resource: dict[str, Any] = {"resourceType": "Patient", "identifier": identifiers, "active": True}
    names = [n for rep in range(len(pid.repetitions(5))) if (n := dt.human_name(pid.components(5, rep)))]
    if names:
        resource["name"] = names
    telecom = [c for rep in range(len(pid.repetitions(13))) if (c := dt.contact_point(pid.components(13, rep)))]
    telecom += [
        c for rep in range(len(pid.repetitions(14))) if (c := dt.contact_point(pid.components(14, rep), "work"))
    ]
    if telecom:
        resource["telecom"] = telecom
    if gender := dt.gender(pid, 8):
        resource["gender"] = gender
    if birth := dt.date_only(pid.get(7), pid, 7):
        resource["birthDate"] = birth
    if pid.get(30) == "Y" or pid.get(29):
        resource["deceasedDateTime" if pid.get(29) else "deceasedBoolean"] = (
            dt.date_time(pid.get(29), pid, 29) if pid.get(29) else True
        )
    addresses = [a for rep in range(len(pid.repetitions(11))) if (a := dt.address(pid.components(11, rep)))]
    if addresses:
        resource["address"] = addresses
    if marital := pid.get(16):
        resource["maritalStatus"] = {"coding": [{"system": f"{dt.V2_TABLE}0002", "code": marital}]}
    return resource, identifiers


def upsert_patient(msg: Message, writer: Writer) -> str:
    resource, identifiers = patient(msg.require("PID"))
    return writer.upsert(resource, identifiers)


def encounter(pv1: Segment, patient_ref: str, status: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    patient_class = pv1.get(2)
    if not patient_class:
        raise pv1.error(2, "101", "PV1-2 (patient class) is required")
    if patient_class not in PATIENT_CLASS:
        raise pv1.error(2, "103", f"PV1-2 '{patient_class}' is not a patient class (table 0004: I O E P R B N)")
    code, display = PATIENT_CLASS[patient_class]
    resource: dict[str, Any] = {
        "resourceType": "Encounter",
        "status": status,
        "class": {"system": ACT_CODE, "code": code, "display": display},
        "subject": {"reference": patient_ref},
    }
    identifiers = dt.cx_list(pv1, 19)
    if identifiers:
        resource["identifier"] = identifiers
    period: dict[str, str] = {}
    if start := dt.date_time(pv1.get(44), pv1, 44):
        period["start"] = start
    if end := dt.date_time(pv1.get(45), pv1, 45):
        period["end"] = end
    if period:
        resource["period"] = period
    participants = []
    for n, role in ((7, "ATND"), (8, "REF"), (17, "ADM")):
        if ref := dt.practitioner_display(pv1.components(n)):
            participants.append(
                {
                    "type": [
                        {
                            "coding": [
                                {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": role}
                            ]
                        }
                    ],
                    "individual": ref,
                }
            )
    if participants:
        resource["participant"] = participants
    location = [x for x in pv1.components(3)[:3] if x]
    if location:
        resource["location"] = [{"location": {"display": " ".join(location)}}]
    if pv1.get(36):
        resource["hospitalization"] = {
            "dischargeDisposition": {"coding": [{"system": f"{dt.V2_TABLE}0112", "code": pv1.get(36)}]}
        }
    return resource, identifiers


def upsert_encounter(msg: Message, writer: Writer, patient_ref: str, status: str, *, required: bool) -> str | None:
    pv1 = msg.first("PV1")
    if pv1 is None:
        if required:
            raise V2Error("100", f"A {msg.message_type} needs a PV1 segment", "PV1")
        return None
    resource, identifiers = encounter(pv1, patient_ref, status)
    if not identifiers and not required:
        return None  # an update without a visit number cannot say which encounter it is about
    return writer.upsert(resource, identifiers)


def admit(msg: Message, writer: Writer) -> None:
    """A01 (admit) and A04 (register): the patient, and an in-progress encounter."""
    ref = upsert_patient(msg, writer)
    upsert_encounter(msg, writer, ref, "in-progress", required=True)


def update(msg: Message, writer: Writer) -> None:
    """A08 and A31: the patient as sent; A08's visit, if it names one."""
    ref = upsert_patient(msg, writer)
    if msg.message_type.endswith("A08"):
        upsert_encounter(msg, writer, ref, "in-progress", required=False)


def discharge(msg: Message, writer: Writer) -> None:
    """A03: the encounter finishes (PV1-45 its end)."""
    ref = upsert_patient(msg, writer)
    upsert_encounter(msg, writer, ref, "finished", required=True)


def cancel_admit(msg: Message, writer: Writer) -> None:
    """A11: the admission named by PV1-19 was entered in error."""
    pv1 = msg.require("PV1")
    ref = upsert_patient(msg, writer)
    resource, identifiers = encounter(pv1, ref, "entered-in-error")
    if not identifiers:
        raise pv1.error(19, "101", "PV1-19 (visit number) is required to say which admission is cancelled")
    found = writer.find("Encounter", identifiers[0])
    if found is None:
        raise pv1.error(19, "204", f"No encounter has visit number '{identifiers[0]['value']}'")
    rid, current = found
    writer.update("Encounter", rid, {**current, "status": "entered-in-error"})


def merge(msg: Message, writer: Writer) -> None:
    """A40: the patient in MRG-1 is merged into the one in PID-3 (IG: replaced-by / replaces links)."""
    survivor_ref = upsert_patient(msg, writer)
    mrg = msg.require("MRG")
    prior_ids = dt.cx_list(mrg, 1)
    if not prior_ids:
        raise mrg.error(1, "101", "MRG-1 (prior patient identifier list) is required")
    found = writer.find("Patient", prior_ids[0])
    if found is None:
        raise mrg.error(1, "204", f"No patient has the identifier '{prior_ids[0]['value']}' named in MRG-1")
    prior_id, prior = found
    if f"Patient/{prior_id}" == survivor_ref:
        raise mrg.error(1, "205", "MRG-1 names the same patient as PID-3")
    prior_links = [link for link in prior.get("link", []) if link.get("type") != "replaced-by"]
    writer.update(
        "Patient",
        prior_id,
        {
            **prior,
            "active": False,
            "link": [*prior_links, {"other": {"reference": survivor_ref}, "type": "replaced-by"}],
        },
    )
    survivor_id = survivor_ref.split("/", 1)[1]
    body = writer.read("Patient", survivor_id)
    body["link"] = [*body.get("link", []), {"other": {"reference": f"Patient/{prior_id}"}, "type": "replaces"}]
    writer.update("Patient", survivor_id, body)
