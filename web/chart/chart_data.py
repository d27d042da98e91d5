"""What the chart shows, read through the one search engine (``Interactions.search``) of the sandbox.

Each method answers plain rows for a template: the chart never shows raw FHIR, and never reads tables
directly, so a chart entry and a FHIR POST are seen alike.  Lists are bounded (``_count``): the chart
shows the latest entries, as an EHR's default view does.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson
from sqlalchemy import Connection

from sandbox.fhir.interactions import Interactions
from sandbox.fhir.outcome import FhirError
from sandbox.store.layers import View
from synthetic_data.codes import CODE_STATUS_TYPE, CODE_STATUS_VALUES, LABS
from web.chart.display import (
    age_on,
    codes_of,
    concept_text,
    concepts_text,
    human_name,
    number_text,
    quantity_text,
    reference_text,
    status_code,
    when,
)

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
REFERRAL_CATEGORY = (SNOMED, "3457005")
IMAGING_CATEGORY = (SNOMED, "363679005")
LAB_CATEGORY = (SNOMED, "108252007")
PAYER_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type|pay"
# Code status: the latest Observation of the resuscitation directive (synthetic_data.codes: SNOMED CT 304251008,
# which C-CDA's Advance Directive Observation names with the LOINC translation 75320-2; that LOINC code alone names
# any advance directive, so the banner looks for the SNOMED one).  Entered-in-error and preliminary ones are not it.
CODE_STATUS = f"{SNOMED}|{CODE_STATUS_TYPE[0]}"
CODE_STATUS_FINAL = "final,amended,corrected"
PATIENTS_PER_PAGE = 50

# The flowsheet's rows: (key, label, LOINC codes that chart it, unit shown).
VITAL_ROWS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("bp", "Blood pressure", ("85354-9",), "mm[Hg]"),
    ("hr", "Heart rate", ("8867-4",), "/min"),
    ("rr", "Respiratory rate", ("9279-1",), "/min"),
    ("spo2", "Oxygen saturation", ("59408-5", "2708-6"), "%"),
    ("temp", "Temperature", ("8310-5",), "Cel"),
    ("weight", "Body weight", ("29463-7",), "kg"),
    ("height", "Body height", ("8302-2",), "cm"),
    ("bmi", "BMI", ("39156-5",), "kg/m2"),
    ("pain", "Pain score (0-10)", ("72514-3",), ""),
)
_VITAL_BY_CODE = {code: key for key, _, codes, _ in VITAL_ROWS for code in codes}


class PatientNotFound(LookupError):
    pass


@dataclass(frozen=True)
class Banner:
    id: str
    name: str
    age: int | None
    sex: str
    birth_date: str
    mrn: str
    allergies: list[str]
    code_status: str
    code_status_date: str = ""
    dnr: bool = False  # flagged in the banner, as allergies are


def resource_of(stored: Any) -> dict[str, Any]:
    """A stored resource's JSON, parsed."""
    return orjson.loads(stored.content)


class ChartReader:
    """The chart of one patient in one sandbox, read on one connection."""

    def __init__(self, conn: Connection, fhir: Interactions, view: View, patient_id: str, today: date) -> None:
        self.conn = conn
        self.fhir = fhir
        self.view = view
        self.patient_id = patient_id
        self.today = today
        self.ref = f"Patient/{patient_id}"
        try:
            self.patient = resource_of(fhir.read(conn, view, "Patient", patient_id))
        except FhirError:
            raise PatientNotFound(patient_id) from None

    def search(self, rtype: str, *query: tuple[str, str], count: int = 100) -> list[dict[str, Any]]:
        # The chart never shows a total: _total=none spares the search engine a count of the matches.
        result = self.fhir.search(self.conn, self.view, rtype, [*query, ("_count", str(count)), ("_total", "none")])
        return [resource_of(s) for s in result.matches]

    def for_patient(self, rtype: str, *query: tuple[str, str], count: int = 100) -> list[dict[str, Any]]:
        param = "beneficiary" if rtype == "Coverage" else "patient"
        return self.search(rtype, (param, self.ref), *query, count=count)

    # ---- the banner ------------------------------------------------------------------------------

    def banner(self) -> Banner:
        p = self.patient
        mrn = next(
            (
                str(i.get("value", ""))
                for i in p.get("identifier") or []
                if any(c.get("code") == "MR" for c in (i.get("type") or {}).get("coding") or [])
            ),
            "",
        )
        allergies = [a["substance"] for a in self.allergies() if a["clinical_status"] == "active"]
        status = self.code_status()
        code_status, code_status_date, dnr = "", "", False
        if status is not None:
            value = status.get("valueCodeableConcept")
            code_status = concept_text(value) or str(status.get("valueString", ""))
            code_status_date = when(status.get("effectiveDateTime") or status.get("issued"))
            dnr = (SNOMED, CODE_STATUS_VALUES["dnr"][0]) in codes_of(value)
        return Banner(
            id=self.patient_id,
            name=human_name(p),
            age=age_on(p.get("birthDate"), self.today),
            sex=str(p.get("gender", "unknown")),
            birth_date=str(p.get("birthDate", "")),
            mrn=mrn,
            allergies=allergies,
            code_status=code_status or "Not documented",
            code_status_date=code_status_date,
            dnr=dnr,
        )

    def code_status(self) -> dict[str, Any] | None:
        """The latest code status Observation, or None.  Two documented at the same moment (a change saved
        within the second of the last) are told apart by when the server stored them."""
        found = self.for_patient(
            "Observation", ("code", CODE_STATUS), ("status", CODE_STATUS_FINAL), ("_sort", "-date"), count=10
        )
        if not found:
            return None
        latest = [o for o in found if _effective(o) == _effective(found[0])]
        return max(latest, key=lambda o: str((o.get("meta") or {}).get("lastUpdated", "")))

    # ---- lists -----------------------------------------------------------------------------------

    def problems(self) -> list[dict[str, Any]]:
        rows = [
            {
                "id": c["id"],
                "problem": concept_text(c.get("code")),
                "category": concepts_text(c.get("category")),
                "clinical_status": status_code(c.get("clinicalStatus")),
                "verification": status_code(c.get("verificationStatus")),
                "onset": when(c.get("onsetDateTime") or c.get("recordedDate")),
            }
            for c in self.for_patient("Condition")
        ]
        return sorted(rows, key=lambda r: (r["clinical_status"] != "active", r["problem"].lower()))

    def conditions_for_reason(self) -> list[tuple[str, str]]:
        """(reference, label) of the patient's active conditions: what an order or referral can be for."""
        return [
            (f"Condition/{r['id']}", r["problem"])
            for r in self.problems()
            if r["clinical_status"] in ("active", "recurrence", "relapse")
        ]

    def medications(self, *, statements: bool = True) -> dict[str, list[dict[str, Any]]]:
        """Orders, and (unless ``statements`` is False) what the patient reports taking."""
        orders = [
            {
                "id": m["id"],
                "medication": concept_text(m.get("medicationCodeableConcept")),
                "status": m.get("status", ""),
                "dosage": "; ".join(_dosage_text(d) for d in m.get("dosageInstruction") or []),
                "authored": when(m.get("authoredOn")),
                "reason": concept_text(m.get("statusReason")),
            }
            for m in self.for_patient("MedicationRequest", ("_sort", "-authoredon"))
        ]
        statements = [
            {
                "id": m["id"],
                "medication": concept_text(m.get("medicationCodeableConcept")),
                "status": m.get("status", ""),
                "asserted": when(m.get("dateAsserted")),
                "note": "; ".join(str(n.get("text", "")) for n in m.get("note") or []),
            }
            for m in (self.for_patient("MedicationStatement") if statements else [])
        ]
        orders.sort(key=lambda r: (r["status"] != "active", r["medication"].lower()))
        return {"orders": orders, "statements": statements}

    def allergies(self) -> list[dict[str, Any]]:
        return [
            {
                "id": a["id"],
                "substance": concept_text(a.get("code")),
                "clinical_status": status_code(a.get("clinicalStatus")),
                "verification": status_code(a.get("verificationStatus")),
                "criticality": a.get("criticality", ""),
                "reactions": "; ".join(
                    concepts_text(r.get("manifestation")) + (f" ({r['severity']})" if r.get("severity") else "")
                    for r in a.get("reaction") or []
                ),
            }
            for a in self.for_patient("AllergyIntolerance")
        ]

    def vitals(self, count: int = 200) -> dict[str, Any]:
        """The flowsheet: one column per charting time (newest first), one row per vital sign."""
        # One search by the flowsheet's own codes (the pain score is a survey, not a vital-signs Observation).
        codes = ",".join(f"{LOINC}|{code}" for code in _VITAL_BY_CODE)
        observations = self.for_patient("Observation", ("code", codes), ("_sort", "-date"), count=count)
        cells: dict[str, dict[str, str]] = {}
        series: dict[str, list[tuple[str, float]]] = {}
        for o in observations:
            key = next((_VITAL_BY_CODE[c] for _, c in codes_of(o.get("code")) if c in _VITAL_BY_CODE), None)
            moment = str(o.get("effectiveDateTime") or o.get("issued") or "")
            if key is None or not moment:
                continue
            column = cells.setdefault(when(moment), {})
            if key == "bp":
                parts = {
                    code: (c.get("valueQuantity") or {}).get("value")
                    for c in o.get("component") or []
                    for _, code in codes_of(c.get("code"))
                }
                systolic, diastolic = parts.get("8480-6"), parts.get("8462-4")
                column[key] = f"{number_text(systolic)}/{number_text(diastolic)}"
                if isinstance(systolic, int | float):
                    series.setdefault("bp", []).append((moment, float(systolic)))
                if isinstance(diastolic, int | float):
                    series.setdefault("bp-diastolic", []).append((moment, float(diastolic)))
                continue
            value = o.get("valueQuantity", {}).get("value") if "valueQuantity" in o else o.get("valueInteger")
            column[key] = quantity_text(o["valueQuantity"]) if "valueQuantity" in o else number_text(value)
            if isinstance(value, int | float):
                series.setdefault(key, []).append((moment, float(value)))
        times = sorted(cells, reverse=True)
        rows = [
            {"key": key, "label": label, "values": [cells[t].get(key, "") for t in times]}
            for key, label, _, _ in VITAL_ROWS
            if any(key in cells[t] for t in times)
        ]
        return {"times": times, "rows": rows, "series": series}

    def results(self, count: int = 100) -> list[dict[str, Any]]:
        """Lab results, newest first, each with its reference range and an H/L flag."""
        rows = []
        for o in self.for_patient(
            "Observation", ("category", f"{OBS_CATEGORY}|laboratory"), ("_sort", "-date"), count=count
        ):
            value = (o.get("valueQuantity") or {}).get("value")
            low, high = _reference_range(o)
            flag = _interpretation(o) or _flag(value, low, high)
            rows.append(
                {
                    "id": o["id"],
                    "test": concept_text(o.get("code")),
                    "value": quantity_text(o.get("valueQuantity")) or str(o.get("valueString", "")),
                    "range": _range_text(low, high),
                    "flag": flag,
                    "when": when(o.get("effectiveDateTime") or o.get("issued")),
                    "status": o.get("status", ""),
                }
            )
        return rows

    def notes(self) -> list[dict[str, Any]]:
        rows = []
        for d in self.for_patient("DocumentReference", ("_sort", "-date")):
            text = ""
            for content in d.get("content") or []:
                attachment = content.get("attachment") or {}
                if str(attachment.get("contentType", "")).startswith("text/") and attachment.get("data"):
                    try:
                        text = base64.b64decode(attachment["data"]).decode("utf-8", errors="replace")
                    except (binascii.Error, ValueError):
                        text = "(unreadable attachment)"
                    break
            rows.append(
                {
                    "id": d["id"],
                    "type": concept_text(d.get("type")),
                    "status": d.get("status", ""),
                    "date": when(d.get("date")),
                    "text": text,
                    "title": d.get("description", ""),
                }
            )
        return rows

    def service_requests(self) -> dict[str, list[dict[str, Any]]]:
        """Orders and referrals (a ServiceRequest with the referral category is a referral)."""
        orders, referrals = [], []
        for s in self.for_patient("ServiceRequest", ("_sort", "-authored")):
            categories = set().union(*(codes_of(c) for c in s.get("category") or [])) if s.get("category") else set()
            row = {
                "id": s["id"],
                "what": concept_text(s.get("code")),
                "category": concepts_text(s.get("category")),
                "status": s.get("status", ""),
                "intent": s.get("intent", ""),
                "priority": s.get("priority", "routine"),
                "reason": concepts_text(s.get("reasonCode"))
                or "; ".join(reference_text(r) for r in s.get("reasonReference") or []),
                "performer": "; ".join(reference_text(r) for r in s.get("performer") or []),
                "authored": when(s.get("authoredOn")),
            }
            (referrals if REFERRAL_CATEGORY in categories else orders).append(row)
        if referrals:
            tasks = self.search("Task", ("patient", self.ref))
            messages = self.search("Communication", ("patient", self.ref))
            for row in referrals:
                target = f"ServiceRequest/{row['id']}"
                row["tasks"] = [
                    f"{t.get('status', '')} ({reference_text(t.get('owner'))})"
                    for t in tasks
                    if (t.get("focus") or {}).get("reference") == target
                ]
                row["messages"] = [
                    "; ".join(str(p.get("contentString", "")) for p in m.get("payload") or [])
                    for m in messages
                    if any(b.get("reference") == target for b in m.get("basedOn") or [])
                ]
        return {"orders": orders, "referrals": referrals}

    def open_referral_tasks(self) -> list[tuple[str, str]]:
        """(Task/id, label) of the tasks tracking a referral that are not finished yet: loops still open."""
        referrals = {f"ServiceRequest/{r['id']}": r for r in self.service_requests()["referrals"]}
        open_tasks = []
        for t in self.search("Task", ("patient", self.ref)):
            focus = (t.get("focus") or {}).get("reference")
            if focus in referrals and t.get("status") not in ("completed", "cancelled", "failed", "rejected"):
                r = referrals[focus]
                to = r["performer"] or "specialist"
                label = f"{r['what']} to {to} · {r['authored']} · task {t.get('status', '')}"
                open_tasks.append((f"Task/{t['id']}", label))
        return open_tasks

    def consult_notes(self) -> list[tuple[str, str]]:
        """(DocumentReference/id, label) of the patient's notes, newest first, for linking to a referral."""
        return [
            (f"DocumentReference/{n['id']}", " · ".join(x for x in (n["title"] or n["type"], n["date"]) if x))
            for n in self.notes()
        ]

    def encounters(self, count: int = 50) -> list[dict[str, Any]]:
        return [
            {
                "id": e["id"],
                "status": e.get("status", ""),
                "class": (e.get("class") or {}).get("display") or (e.get("class") or {}).get("code", ""),
                "type": concepts_text(e.get("type")),
                "start": when((e.get("period") or {}).get("start")),
                "reason": concepts_text(e.get("reasonCode")),
            }
            for e in self.for_patient("Encounter", ("_sort", "-date"), count=count)
        ]

    def encounter_choices(self) -> list[tuple[str, str]]:
        """(reference, label) for an entry's encounter: in-progress visits first, then the latest."""
        found = self.encounters(count=10)
        found.sort(key=lambda e: e["status"] != "in-progress")
        return [(f"Encounter/{e['id']}", f"{e['start']} · {e['type'] or e['class']} · {e['status']}") for e in found]

    def immunizations(self) -> list[dict[str, Any]]:
        rows = [
            {
                "id": i["id"],
                "vaccine": concept_text(i.get("vaccineCode")),
                "status": i.get("status", ""),
                "date": when(i.get("occurrenceDateTime") or i.get("occurrenceString")),
                "lot": i.get("lotNumber", ""),
                "site": concept_text(i.get("site")),
                "route": concept_text(i.get("route")),
            }
            for i in self.for_patient("Immunization")
        ]
        return sorted(rows, key=lambda r: r["date"], reverse=True)

    def appointments(self) -> list[dict[str, Any]]:
        rows = [
            {
                "id": a["id"],
                "status": a.get("status", ""),
                "start": when(a.get("start")),
                "end": when(a.get("end")),
                "service": concepts_text(a.get("serviceType")),
                "with": "; ".join(
                    reference_text(p.get("actor"))
                    for p in a.get("participant") or []
                    if (p.get("actor") or {}).get("reference") != self.ref
                ),
            }
            for a in self.for_patient("Appointment")
        ]
        return sorted(rows, key=lambda r: r["start"])

    def coverage(self) -> list[dict[str, Any]]:
        return [
            {"status": c.get("status", ""), "payor": "; ".join(reference_text(p) for p in c.get("payor") or [])}
            for c in self.for_patient("Coverage")
        ]


# ---- the sandbox's directory: who can be referred to, booked with, or pay -------------------------


def practitioner_roles(conn: Connection, fhir: Interactions, view: View) -> list[tuple[str, str]]:
    """(reference, label) of every PractitionerRole: the clinician and the specialty."""
    found = fhir.search(conn, view, "PractitionerRole", [("_count", "200"), ("_total", "none")]).matches
    choices = []
    for stored in found:
        role = resource_of(stored)
        label = f"{reference_text(role.get('practitioner')) or 'Clinician'} · {concepts_text(role.get('specialty'))}"
        choices.append((f"PractitionerRole/{role['id']}", label))
    return sorted(choices, key=lambda c: c[1].lower())


def payors(conn: Connection, fhir: Interactions, view: View) -> list[tuple[str, str]]:
    found = fhir.search(
        conn, view, "Organization", [("type", PAYER_TYPE), ("_count", "100"), ("_total", "none")]
    ).matches
    return sorted(((f"Organization/{o.id}", str(resource_of(o).get("name", o.id))) for o in found), key=lambda c: c[1])


@dataclass(frozen=True)
class PatientPage:
    """One page of the patient list, and the search's own cursors to the pages either side (None at an end)."""

    rows: list[dict[str, Any]]
    next: str | None
    previous: str | None


def find_patients(
    conn: Connection, fhir: Interactions, view: View, text: str, *, cursor: str = "", count: int = PATIENTS_PER_PAGE
) -> PatientPage:
    """Patients whose name (or MRN, when ``text`` has a digit) matches, by family name, ``count`` a page.

    Paging is the FHIR search's own (``_cursor``: a position in the order, not an offset), so a patient
    registered meanwhile neither shifts nor repeats the rows of the next page; the id breaks ties between
    equal family names, so the order is total.  A cursor that is not the search's own is a ``FhirError``.
    """
    query = [("_sort", "family"), ("_count", str(count)), ("_total", "none")]
    text = text.strip()[:100]
    if text:
        query.append(("identifier" if any(ch.isdigit() for ch in text) else "name", text))
    if cursor:
        query.append(("_cursor", cursor))
    result = fhir.search(conn, view, "Patient", query)
    rows = []
    for stored in result.matches:
        p = resource_of(stored)
        mrn = next((str(i.get("value", "")) for i in p.get("identifier") or [] if i.get("type")), "")
        rows.append(
            {
                "id": p["id"],
                "name": human_name(p),
                "sex": p.get("gender", ""),
                "birth_date": p.get("birthDate", ""),
                "mrn": mrn,
            }
        )
    return PatientPage(
        rows,
        result.next_cursor.encode() if result.next_cursor else None,
        result.previous_cursor.encode() if result.previous_cursor else None,
    )


def draft_order(resource: dict[str, Any]) -> dict[str, str]:
    """What the page of a draft order (a MedicationRequest or ServiceRequest waiting to be signed) shows of it."""
    if resource.get("resourceType") == "MedicationRequest":
        what = concept_text(resource.get("medicationCodeableConcept"))
        details = "; ".join(_dosage_text(d) for d in resource.get("dosageInstruction") or [])
    else:
        what = concept_text(resource.get("code"))
        details = ", ".join(filter(None, [concepts_text(resource.get("category")), resource.get("priority", "")]))
    return {
        "what": what or "(not named)",
        "details": details,
        "intent": str(resource.get("intent", "")),
        "reason": "; ".join(reference_text(r) for r in resource.get("reasonReference") or [])
        or concepts_text(resource.get("reasonCode")),
        "authored": when(resource.get("authoredOn")),
    }


# ---- helpers -------------------------------------------------------------------------------------------


def _dosage_text(dosage: dict[str, Any]) -> str:
    if dosage.get("text"):
        return str(dosage["text"])
    parts = []
    for dr in dosage.get("doseAndRate") or []:
        parts.append(quantity_text(dr.get("doseQuantity")))
    parts.append(concept_text(dosage.get("route")))
    repeat = (dosage.get("timing") or {}).get("repeat") or {}
    if repeat.get("frequency"):
        period = number_text(repeat.get("period", 1))
        parts.append(f"{repeat['frequency']}x per {period} {repeat.get('periodUnit', '')}")
    bounds = repeat.get("boundsDuration")
    if bounds:
        parts.append(f"for {quantity_text(bounds)}")
    return " ".join(p for p in parts if p)


def _reference_range(o: dict[str, Any]) -> tuple[float | None, float | None]:
    for r in o.get("referenceRange") or []:
        low, high = (r.get("low") or {}).get("value"), (r.get("high") or {}).get("value")
        if low is not None or high is not None:
            return low, high
    # The generator's normal ranges, for results that do not carry their own.
    for system, code in codes_of(o.get("code")):
        if system == LOINC and code in LABS:
            return LABS[code].low, LABS[code].high
    return None, None


def _range_text(low: float | None, high: float | None) -> str:
    if low is None and high is None:
        return ""
    if low is None:
        return f"≤ {number_text(high)}"
    if high is None:
        return f"≥ {number_text(low)}"
    return f"{number_text(low)}–{number_text(high)}"


def _effective(o: dict[str, Any]) -> str:
    return str(o.get("effectiveDateTime") or o.get("issued") or "")


def _interpretation(o: dict[str, Any]) -> str:
    for concept in o.get("interpretation") or []:
        for coding in concept.get("coding") or []:
            if coding.get("code") in ("H", "HH", "L", "LL", "A", "AA"):
                return str(coding["code"])
    return ""


def _flag(value: Any, low: float | None, high: float | None) -> str:
    if not isinstance(value, int | float):
        return ""
    if high is not None and value > high:
        return "H"
    if low is not None and value < low:
        return "L"
    return ""
