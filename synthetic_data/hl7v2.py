"""HL7 v2.5.1 messages for the generated patients: ADT^A04 (registration) and ORU^R01 (results).

Messages are written from the patient's FHIR resources, so both formats tell
the same story: the PID carries the same MRN, name and address; the ORU
carries the latest lab panels (or, for a patient without labs, the latest
vital signs) with their LOINC codes and UCUM units.  Segments end with a
carriage return, as HL7 v2 requires; every field value is escaped.
"""

from __future__ import annotations

from typing import Any

SENDING_APPLICATION = "EHR-SANDBOX"
RECEIVING_APPLICATION = "TRAINING"
_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("~", "\\R\\"), ("&", "\\T\\"))
_SEX = {"male": "M", "female": "F", "other": "O", "unknown": "U"}
_VITAL_SIGNS_PANEL = ("85353-1", "Vital signs, weight, height, head circumference, oxygen saturation and BMI panel")


def escape(text: str) -> str:
    for raw, escaped in _ESCAPES:
        text = text.replace(raw, escaped)
    return text.replace("\r", " ").replace("\n", " ")


def hl7_time(fhir_time: str) -> str:
    """``2024-03-05T14:30:00Z`` -> ``20240305143000``; a date alone stays a date."""
    digits = "".join(ch for ch in fhir_time[:19] if ch.isdigit())
    return digits[:14]


def _segment(*fields: str) -> str:
    return "|".join(fields).rstrip("|")


def _facility(encounter: dict[str, Any] | None) -> str:
    """The sending facility (HD): the organization's id as a UUID, since its name may exceed a namespace id."""
    reference = (encounter or {}).get("serviceProvider", {}).get("reference", "")
    return f"^{escape(reference.split('/', 1)[1])}^UUID" if reference.startswith("Organization/") else ""


def _msh(message_type: str, control_id: str, when: str, facility: str) -> str:
    return _segment(
        "MSH",
        "^~\\&",
        SENDING_APPLICATION,
        facility,
        RECEIVING_APPLICATION,
        RECEIVING_APPLICATION,
        when,
        "",
        message_type,
        control_id,
        "P",
        "2.5.1",
    )


def _pid(patient: dict[str, Any]) -> str:
    mrn = next(
        (
            i["value"]
            for i in patient.get("identifier", [])
            if i.get("type", {}).get("coding", [{}])[0].get("code") == "MR"
        ),
        patient["id"],
    )
    name = patient["name"][0]
    given = name.get("given", [])
    xpn = "^".join([escape(name.get("family", "")), escape(given[0] if given else ""), escape(" ".join(given[1:]))])
    address = ""
    if patient.get("address"):
        a = patient["address"][0]
        address = "^".join(
            [
                escape(" ".join(a.get("line", []))),
                "",
                escape(a.get("city", "")),
                escape(a.get("state", "")),
                escape(a.get("postalCode", "")),
                "USA",
            ]
        )
    phones = []
    for telecom in patient.get("telecom", []):
        if telecom["system"] == "phone":
            phones.append(f"{escape(telecom['value'])}^PRN^PH")
        elif telecom["system"] == "email":
            phones.append(f"^NET^Internet^{escape(telecom['value'])}")
    death = hl7_time(patient["deceasedDateTime"]) if "deceasedDateTime" in patient else ""
    marital = patient.get("maritalStatus", {}).get("coding", [{}])[0].get("code", "")
    fields = ["PID", "1", "", f"{escape(mrn)}^^^EHRSANDBOX^MR", "", xpn, "", hl7_time(patient["birthDate"])]
    fields += [_SEX.get(patient.get("gender", "unknown"), "U"), "", "", address, "", "~".join(phones), "", "", marital]
    fields += [""] * 13 + [death, "Y" if death else ""]
    return _segment(*fields)


def _pv1(encounter: dict[str, Any] | None, practitioners: dict[str, dict[str, Any]]) -> str:
    if encounter is None:
        return "PV1|1|O"
    patient_class = "E" if encounter["class"]["code"] == "EMER" else "O"
    doctor = ""
    for participant in encounter.get("participant", []):
        reference = participant.get("individual", {}).get("reference", "")
        practitioner = practitioners.get(reference)
        if practitioner:
            npi = practitioner.get("identifier", [{}])[0].get("value", "")
            pname = practitioner["name"][0]
            doctor = f"{npi}^{escape(pname['family'])}^{escape(pname['given'][0])}^^^Dr.^^^NPI"
        elif "display" in participant.get("individual", {}):
            doctor = f"^{escape(participant['individual']['display'])}"
    # PL.9, the location description: names run longer than the 20 characters of a point of care.
    location = "^" * 8 + escape(encounter.get("serviceProvider", {}).get("display", ""))
    fields = ["PV1", "1", patient_class, location, "", "", "", doctor]
    fields += [""] * 11 + [escape(encounter["id"])]
    fields += [""] * 24 + [hl7_time(encounter["period"]["start"])]
    return _segment(*fields)


def adt_a04(
    patient: dict[str, Any], encounter: dict[str, Any] | None, practitioners: dict[str, dict[str, Any]], control_id: str
) -> str:
    """Register a patient (outpatient arrival), with their latest visit in the PV1."""
    when = hl7_time(encounter["period"]["start"]) if encounter else hl7_time(patient["birthDate"])
    segments = [
        _msh("ADT^A04^ADT_A01", control_id, when, _facility(encounter)),
        _segment("EVN", "A04", when),
        _pid(patient),
        _pv1(encounter, practitioners),
    ]
    return "\r".join(segments) + "\r"


def _observation_value(observation: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(value type, code, display, value, unit) rows of one Observation; blood pressure gives two rows."""
    rows = []
    coding = observation["code"]["coding"][0]
    if "valueQuantity" in observation:
        q = observation["valueQuantity"]
        rows.append(("NM", coding["code"], coding["display"], str(q["value"]), q.get("code", q.get("unit", ""))))
    elif "valueCodeableConcept" in observation:
        c = observation["valueCodeableConcept"]["coding"][0]
        rows.append(("CE", coding["code"], coding["display"], f"{c['code']}^{escape(c['display'])}^SCT", ""))
    for component in observation.get("component", []):
        c = component["code"]["coding"][0]
        q = component["valueQuantity"]
        rows.append(("NM", c["code"], c["display"], str(q["value"]), q.get("code", "")))
    return rows


def oru_r01(
    patient: dict[str, Any],
    encounter: dict[str, Any] | None,
    reports: list[tuple[tuple[str, str], str, list[dict[str, Any]]]],
    practitioners: dict[str, dict[str, Any]],
    control_id: str,
) -> str:
    """Results: one ORC/OBR group per report ((code, display), time, observations), OBX per result."""
    when = reports[0][1] if reports else hl7_time(patient["birthDate"])
    segments = [
        _msh("ORU^R01^ORU_R01", control_id, when, _facility(encounter)),
        _pid(patient),
        _pv1(encounter, practitioners),
    ]
    for n, ((code, display), time, observations) in enumerate(reports, start=1):
        order = f"{control_id}-{n}"
        segments.append(_segment("ORC", "RE", order, order, "", "CM"))
        obr = ["OBR", str(n), order, order, f"{code}^{escape(display)}^LN", "", "", time]
        obr += [""] * 14 + [time, "", "", "F"]
        segments.append(_segment(*obr))
        set_id = 0
        for observation in observations:
            for value_type, obs_code, obs_display, value, unit in _observation_value(observation):
                set_id += 1
                units = f"{escape(unit)}^{escape(unit)}^UCUM" if unit else ""
                obx = ["OBX", str(set_id), value_type, f"{obs_code}^{escape(obs_display)}^LN", "", value, units]
                obx += ["", "", "", "", "F", "", "", hl7_time(observation["effectiveDateTime"])]
                segments.append(_segment(*obx))
    return "\r".join(segments) + "\r"


def _is_vital_sign(observation: dict[str, Any]) -> bool:
    """Whether an Observation is categorized vital-signs (a code status, for one, has no category)."""
    return any(
        coding.get("code") == "vital-signs"
        for category in observation.get("category", [])
        for coding in category.get("coding", [])
    )


def messages_for(resources: list[dict[str, Any]], directory: dict[str, dict[str, Any]], number: int) -> tuple[str, str]:
    """The ADT^A04 and the ORU^R01 of one patient's resources (``number`` makes the control ids unique)."""
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    by_url = {f"urn:uuid:{r['id']}": r for r in resources}
    encounters = [r for r in resources if r["resourceType"] == "Encounter"]
    latest = max(encounters, key=lambda e: e["period"]["start"]) if encounters else None
    lab_reports = [r for r in resources if r["resourceType"] == "DiagnosticReport"]
    reports: list[tuple[tuple[str, str], str, list[dict[str, Any]]]] = []
    resulted = latest  # the encounter the results belong to
    if lab_reports:
        last_time = max(r["effectiveDateTime"] for r in lab_reports)
        for report in lab_reports:
            if report["effectiveDateTime"] == last_time:
                coding = report["code"]["coding"][0]
                results = [by_url[ref["reference"]] for ref in report.get("result", []) if ref["reference"] in by_url]
                reports.append(((coding["code"], coding["display"]), hl7_time(last_time), results))
                resulted = by_url.get(report.get("encounter", {}).get("reference", ""), resulted)
    elif latest is not None:
        encounter_url = f"urn:uuid:{latest['id']}"
        vitals = [
            r
            for r in resources
            if r["resourceType"] == "Observation"
            and r.get("encounter", {}).get("reference") == encounter_url
            and _is_vital_sign(r)
        ]
        if vitals:
            reports.append((_VITAL_SIGNS_PANEL, hl7_time(latest["period"]["start"]), vitals))
    return (
        adt_a04(patient, latest, directory, f"A{number:09d}"),
        oru_r01(patient, resulted, reports, directory, f"R{number:09d}"),
    )
