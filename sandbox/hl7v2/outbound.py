"""Outbound messages built from FHIR writes: ServiceRequest -> ORM^O01 (orders) or REF^I12 (referrals),
Patient updates -> ADT^A08, final DiagnosticReports -> ORU^R01 (with their Observations).

The reverse of the inbound maps (v2-to-FHIR IG read backwards), in HL7 v2.5.1.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import Connection

from sandbox.fhir.validation import parse_json
from sandbox.hl7v2.ack import timestamp
from sandbox.hl7v2.datatypes import LOCAL_AUTHORITY, SYSTEM_CODES
from sandbox.hl7v2.er7 import Builder, Repeat
from sandbox.hl7v2.results import INTERPRETATION
from sandbox.store.layers import View
from sandbox.store.repository import Repository

SENDING_APPLICATION = "EHR-SANDBOX"
REFERRAL_CODES = {"3457005", "306206005", "103696004"}  # SNOMED: patient referral, referral to service, to specialist
_SEX = {"male": "M", "female": "F", "other": "O", "unknown": "U"}
_ORDER_CONTROL = {"active": "NW", "revoked": "CA", "on-hold": "HD", "completed": "SC", "entered-in-error": "CA"}
_RESULT_STATUS = {"final": "F", "corrected": "C", "amended": "C", "preliminary": "P", "cancelled": "X"}


# The resource types whose writes may produce a message (``message_type_for``).
SENT_TYPES = frozenset({"ServiceRequest", "Patient", "DiagnosticReport"})


def message_type_for(resource: dict[str, Any], action: str) -> str | None:
    """Which outbound message a write produces, if any (only ever for a type in ``SENT_TYPES``)."""
    rtype = resource.get("resourceType")
    if rtype == "ServiceRequest":
        return "REF^I12" if is_referral(resource) else "ORM^O01"
    if rtype == "Patient" and action == "update":
        return "ADT^A08"
    if rtype == "DiagnosticReport" and resource.get("status") in ("final", "corrected", "amended"):
        return "ORU^R01"
    return None


def is_referral(resource: dict[str, Any]) -> bool:
    for concept in [*resource.get("category", []), resource.get("code", {})]:
        for coding in concept.get("coding", []):
            if coding.get("code") in REFERRAL_CODES:
                return True
    return False


def v2_time(fhir: str | None) -> str:
    return "".join(ch for ch in (fhir or "")[:19] if ch.isdigit())


def cwe(concept: dict[str, Any] | None) -> list[str]:
    if not concept:
        return []
    coding = next(iter(concept.get("coding", [])), {})
    system = coding.get("system", "")
    name = SYSTEM_CODES.get(system, system.removeprefix("urn:ehr-sandbox:hl7v2:coding-system:"))
    return [coding.get("code", ""), coding.get("display") or concept.get("text", ""), name if coding else ""]


def _cx(identifier: dict[str, Any]) -> list[object]:
    system = identifier.get("system", "")
    authority: str | list[str] = system.removeprefix(LOCAL_AUTHORITY) if system.startswith(LOCAL_AUTHORITY) else ""
    if not authority and system.startswith("urn:oid:"):
        authority = ["", system.removeprefix("urn:oid:"), "ISO"]  # HD subcomponents: namespace&OID&ISO
    kind = next(iter(identifier.get("type", {}).get("coding", [])), {}).get("code", "")
    return [identifier.get("value", ""), "", "", authority, kind]


def pid(patient: dict[str, Any]) -> list[object]:
    identifiers = patient.get("identifier") or [{"value": patient["id"], "system": f"{LOCAL_AUTHORITY}EHRSANDBOX"}]
    name = next(iter(patient.get("name", [])), {})
    given = name.get("given", [])
    address = next(iter(patient.get("address", [])), {})
    lines = address.get("line", [])
    xad = [lines[0] if lines else "", " ".join(lines[1:]), address.get("city", ""), address.get("state", "")]
    xad += [address.get("postalCode", ""), address.get("country", "")]
    phones = [t.get("value", "") for t in patient.get("telecom", []) if t.get("system") == "phone"]
    return [
        "1",
        "",
        Repeat(*(_cx(i) for i in identifiers)),
        "",
        [name.get("family", ""), given[0] if given else "", " ".join(given[1:])],
        "",
        v2_time(patient.get("birthDate")),
        _SEX.get(patient.get("gender", ""), ""),
        "",
        "",
        xad if any(xad) else "",
        "",
        Repeat(*([p, "PRN", "PH"] for p in phones)) if phones else "",
    ]


def _msh(b: Builder, message_type: str, structure: str, application: str, facility: str, sandbox_id: str) -> str:
    control_id = f"{message_type[:3]}{secrets.token_hex(8)}"
    code, event = message_type.split("^")
    b.seg(
        "MSH",
        SENDING_APPLICATION,
        sandbox_id,
        application,
        facility,
        timestamp(),
        "",
        [code, event, structure],
        control_id,
        "P",
        "2.5.1",
    )
    return control_id


def build(
    conn: Connection,
    repo: Repository,
    view: View,
    resource: dict[str, Any],
    message_type: str,
    *,
    application: str,
    facility: str,
) -> tuple[str, str]:
    """The ER7 text and control id of ``message_type`` for ``resource``."""
    b = Builder()
    structure = {"ORM^O01": "ORM_O01", "REF^I12": "REF_I12", "ADT^A08": "ADT_A01", "ORU^R01": "ORU_R01"}[message_type]
    control_id = _msh(b, message_type, structure, application, facility, view.sandbox_id)
    if message_type == "ADT^A08":
        b.seg("EVN", "A08", timestamp())
        b.seg("PID", *pid(resource))
        b.seg("PV1", "1", "N")
        return b.text(), control_id
    patient = _read(conn, repo, view, resource.get("subject", {}).get("reference", ""))
    if message_type == "ORM^O01":
        b.seg("PID", *pid(patient or {"id": "unknown"}))
        _orc_obr(b, resource)
    elif message_type == "REF^I12":
        b.seg("RF1", _referral_status(resource), _priority(resource), "", "", "", resource["id"])
        # The provider contact group is required in REF_I12: the referring (RP) and referred-to (RT) providers.
        b.seg("PRD", "RP", [resource.get("requester", {}).get("display", "") or SENDING_APPLICATION])
        for performer in resource.get("performer", []):
            if performer.get("display"):
                b.seg("PRD", "RT", [performer["display"]])
        b.seg("PID", *pid(patient or {"id": "unknown"}))
        if reason := next(iter(resource.get("reasonCode", [])), None):
            b.seg("DG1", "1", "", cwe(reason), "", "", "W")  # DG1-6 diagnosis type (required): working
        # PR1-5 (procedure date/time) is required: when the referral was written, else now.
        b.seg("PR1", "1", "", cwe(resource.get("code")), "", v2_time(resource.get("authoredOn")) or timestamp())
    else:
        b.seg("PID", *pid(patient or {"id": "unknown"}))
        b.seg("ORC", "RE", "", resource["id"], "", "CM")
        b.seg(
            "OBR",
            "1",
            "",
            resource["id"],
            cwe(resource.get("code")),
            "",
            "",
            v2_time(resource.get("effectiveDateTime")),
            *[""] * 14,
            v2_time(resource.get("issued")),
            "",
            "",
            _RESULT_STATUS.get(resource.get("status", ""), "F"),
        )
        for n, ref in enumerate(resource.get("result", []), start=1):
            observation = _read(conn, repo, view, ref.get("reference", ""))
            if observation is not None:
                b.seg("OBX", str(n), *_obx(observation))
    return b.text(), control_id


def _orc_obr(b: Builder, request: dict[str, Any]) -> None:
    control = _ORDER_CONTROL.get(request.get("status", ""), "NW")
    when = v2_time(request.get("authoredOn"))
    b.seg("ORC", control, request["id"], "", "", "", "", "", "", when)
    b.seg("OBR", "1", request["id"], "", cwe(request.get("code")), _priority(request), when)


def _priority(request: dict[str, Any]) -> str:
    return {"stat": "S", "asap": "A", "urgent": "A", "routine": "R"}.get(request.get("priority", ""), "R")


def _referral_status(request: dict[str, Any]) -> list[str]:
    code = {"active": "A", "completed": "E", "revoked": "R", "draft": "P"}.get(request.get("status", ""), "P")
    return [code, "", "HL70283"]


def _obx(observation: dict[str, Any]) -> list[object]:
    value_type, units = "", ""
    value: str | list[str] = ""
    if "valueQuantity" in observation:
        q = observation["valueQuantity"]
        value_type, value = "NM", str(q.get("value", ""))
        unit = q.get("code") or q.get("unit")
        units = [unit, q.get("unit", ""), "UCUM"] if unit else ""
    elif "valueString" in observation:
        value_type, value = "ST", observation["valueString"]
    elif "valueCodeableConcept" in observation:
        value_type, value = "CWE", cwe(observation["valueCodeableConcept"])
    flags = [
        c.get("code", "")
        for concept in observation.get("interpretation", [])
        for c in concept.get("coding", [])
        if c.get("system") == INTERPRETATION
    ]
    status = _RESULT_STATUS.get(observation.get("status", ""), "F")
    return [
        value_type,
        cwe(observation.get("code")),
        "",
        value,
        units,
        "",
        Repeat(*flags) if flags else "",
        "",
        "",
        status,
        "",
        "",
        v2_time(observation.get("effectiveDateTime")),
    ]


def _read(conn: Connection, repo: Repository, view: View, reference: str) -> dict[str, Any] | None:
    rtype, _, rid = reference.partition("/")
    if not rid:
        return None
    stored = repo.current(conn, view, rtype, rid)
    if stored is None or stored.deleted or stored.content is None:
        return None
    return parse_json(stored.content)
