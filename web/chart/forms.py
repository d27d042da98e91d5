"""The chart's entry forms: what each asks, how its input is checked, and the FHIR resources it makes.

A form is a list of fields and a ``build`` function.  ``read_form`` turns the posted strings into typed
values and an error per field; ``build`` turns clean values into writes (it may still find errors that
need several fields, and raises ``FormErrors`` for them).  Nothing here writes: the route hands the writes
to ``Interactions`` in one transaction, so an entry is saved whole or not at all.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from synthetic_data.codes import CODE_STATUS_VALUES, code_status_code, code_status_value
from web.chart.value_sets import Concept, value_set

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
MRN_SYSTEM = "urn:ehr-sandbox:mrn"

Choices = tuple[tuple[str, str], ...]


class FormErrors(Exception):
    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    kind: str = "text"  # text, textarea, integer, number, date, datetime, select, choice, code, checkbox
    required: bool = False
    options: Choices = ()  # select: (value, label)
    source: str = ""  # choice: the chart's list to pick from (encounters, reasons, performers, payors, orders)
    value_set: str = ""  # code: the picker's value set
    minimum: float | None = None
    maximum: float | None = None
    max_length: int = 200
    default: str = ""
    help: str = ""


@dataclass(frozen=True)
class Write:
    """One resource to create (``previous`` None) or to update (``previous`` is the id it replaces)."""

    resource_type: str
    id: str
    resource: dict[str, Any]
    update: bool = False


@dataclass
class Context:
    """What a form's ``build`` may know besides the fields: who the patient is, the time, and lookups."""

    patient_ref: str
    now: datetime
    read: Callable[[str, str], dict[str, Any]] = field(default=lambda _t, _i: {})
    search: Callable[[str, list[tuple[str, str]]], list[dict[str, Any]]] = field(default=lambda _t, _q: [])
    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # source -> reference -> label

    @property
    def instant(self) -> str:
        return self.now.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Form:
    id: str
    title: str
    section: str  # the chart section the saved entry shows in
    fields: tuple[Field, ...]
    build: Callable[[dict[str, Any], Context], list[Write]]
    patient: bool = True  # about a patient (else: registration)
    intro: str = ""
    # The type of the one order the form makes (MedicationRequest, ServiceRequest), for an order form: decision
    # support sees that order as a draft (CDS Hooks order-select, order-sign) before it is signed and written.
    order: str = ""


# ---- reading posted values -----------------------------------------------------------------------------


def read_form(
    form: Form, data: Mapping[str, str], choices: Mapping[str, Choices]
) -> tuple[dict[str, Any], dict[str, str]]:
    """(clean values, errors by field name) for the posted strings.  Empty optional fields are None."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for f in form.fields:
        raw = data.get(f.name, "")
        raw = raw.strip() if isinstance(raw, str) else ""
        try:
            values[f.name] = _clean(f, raw, choices)
        except ValueError as exc:
            errors[f.name] = str(exc)
    return values, errors


def _clean(f: Field, raw: str, choices: Mapping[str, Choices]) -> Any:
    if f.kind == "checkbox":
        return raw in ("on", "true", "1", "yes")
    if not raw:
        if f.required:
            raise ValueError(f"{f.label} is required.")
        return None
    limit = 20_000 if f.kind == "textarea" else f.max_length
    if len(raw) > limit:
        raise ValueError(f"{f.label} is too long (at most {limit} characters).")
    if f.kind in ("text", "textarea"):
        return raw
    if f.kind in ("integer", "number"):
        try:
            number: float = int(raw) if f.kind == "integer" else float(raw)
        except ValueError:
            raise ValueError(f"{f.label} must be a {'whole ' if f.kind == 'integer' else ''}number.") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError(f"{f.label} must be a number.")
        if f.minimum is not None and number < f.minimum or f.maximum is not None and number > f.maximum:
            raise ValueError(f"{f.label} must be between {_n(f.minimum)} and {_n(f.maximum)}.")
        return number
    if f.kind == "date":
        try:
            return date.fromisoformat(raw).isoformat()
        except ValueError:
            raise ValueError(f"{f.label} must be a date (YYYY-MM-DD).") from None
    if f.kind == "datetime":
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            raise ValueError(f"{f.label} must be a date and time (YYYY-MM-DDTHH:MM).") from None
        return moment.replace(tzinfo=None).strftime("%Y-%m-%dT%H:%M:00Z")
    if f.kind == "select":
        if raw not in {v for v, _ in f.options}:
            raise ValueError(f"Choose one of the listed {f.label.lower()} options.")
        return raw
    if f.kind == "choice":
        if raw not in {v for v, _ in choices.get(f.source, ())}:
            raise ValueError(f"Choose one of the listed options for {f.label.lower()}.")
        return raw
    if f.kind == "code":
        code = raw.split()[0]
        concept = value_set(f.value_set).find(code)
        if concept is None:
            raise ValueError(f"'{raw[:40]}' is not in the list for {f.label.lower()}: pick a code from the list.")
        return concept
    raise AssertionError(f"unknown field kind {f.kind}")


def _n(value: float | None) -> str:
    return "" if value is None else (str(int(value)) if float(value).is_integer() else str(value))


# ---- building resources -----------------------------------------------------------------------------


def new_id() -> str:
    return str(uuid.uuid4())


def _ref(reference: str | None, labels: Mapping[str, str] | None = None) -> dict[str, str]:
    out = {"reference": str(reference)}
    if labels and reference in labels:
        out["display"] = labels[reference].replace(" · ", ", ")
    return out


def _quantity(value: float, unit: str, code: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": code}


def _concept(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _label(options: Choices, value: str) -> str:
    return next((label for v, label in options if v == value), value)


def _encounter(values: dict[str, Any], resource: dict[str, Any], key: str = "encounter") -> None:
    if values.get("encounter"):
        resource[key] = _ref(values["encounter"])


ENCOUNTER = Field("encounter", "Encounter", "choice", source="encounters", help="The visit this belongs to.")
REASON = Field("reason", "Reason (condition)", "choice", source="reasons", help="Links the entry to the problem.")
PRIORITIES: Choices = (("routine", "Routine"), ("urgent", "Urgent"), ("asap", "ASAP"), ("stat", "STAT"))

# ---- vitals --------------------------------------------------------------------------------------------

TEMP_UNITS: Choices = (("Cel", "°C"), ("[degF]", "°F"))
_VITALS = (  # field, LOINC, display, UCUM code, unit shown
    ("heart_rate", "8867-4", "Heart rate", "/min", "beats/min"),
    ("resp_rate", "9279-1", "Respiratory rate", "/min", "breaths/min"),
    ("spo2", "59408-5", "Oxygen saturation by pulse oximetry", "%", "%"),
)


def build_vitals(v: dict[str, Any], ctx: Context) -> list[Write]:
    errors: dict[str, str] = {}
    if (v["systolic"] is None) != (v["diastolic"] is None):
        errors["systolic" if v["systolic"] is None else "diastolic"] = "Blood pressure needs both numbers."
    elif v["systolic"] is not None and v["systolic"] <= v["diastolic"]:
        errors["systolic"] = "Systolic must be higher than diastolic."
    if v["temperature"] is not None:
        low, high = (25, 45) if v["temp_unit"] == "Cel" else (77, 113)
        if not low <= v["temperature"] <= high:
            errors["temperature"] = (
                f"Temperature must be between {low} and {high} {_label(TEMP_UNITS, v['temp_unit'])}."
            )
    measured = [k for k in ("systolic", "temperature", "heart_rate", "resp_rate", "spo2", "pain") if v[k] is not None]
    if not measured and not errors:
        errors["systolic"] = "Enter at least one measurement."
    if errors:
        raise FormErrors(errors)

    def observation(code: str, display: str, category: str = "vital-signs") -> dict[str, Any]:
        o: dict[str, Any] = {
            "resourceType": "Observation",
            "status": "final",
            "category": [{"coding": [{"system": OBS_CATEGORY, "code": category}]}],
            "code": _concept(LOINC, code, display),
            "subject": _ref(ctx.patient_ref),
            "effectiveDateTime": ctx.instant,
        }
        _encounter(v, o)
        return o

    writes = []
    if v["systolic"] is not None:
        bp = observation("85354-9", "Blood pressure panel")
        bp["component"] = [
            {
                "code": _concept(LOINC, "8480-6", "Systolic blood pressure"),
                "valueQuantity": _quantity(v["systolic"], "mmHg", "mm[Hg]"),
            },
            {
                "code": _concept(LOINC, "8462-4", "Diastolic blood pressure"),
                "valueQuantity": _quantity(v["diastolic"], "mmHg", "mm[Hg]"),
            },
        ]
        writes.append(bp)
    for name, code, display, ucum, unit in _VITALS:
        if v[name] is not None:
            o = observation(code, display)
            o["valueQuantity"] = _quantity(v[name], unit, ucum)
            writes.append(o)
    if v["temperature"] is not None:
        o = observation("8310-5", "Body temperature")
        o["valueQuantity"] = _quantity(v["temperature"], _label(TEMP_UNITS, v["temp_unit"]), v["temp_unit"])
        writes.append(o)
    if v["pain"] is not None:
        o = observation("72514-3", "Pain severity 0-10 (reported)", "survey")
        o["valueInteger"] = int(v["pain"])
        writes.append(o)
    return [Write("Observation", new_id(), o) for o in writes]


VITALS = Form(
    "vitals",
    "Chart vital signs",
    "vitals",
    (
        ENCOUNTER,
        Field("systolic", "Systolic BP (mm Hg)", "integer", minimum=40, maximum=300),
        Field("diastolic", "Diastolic BP (mm Hg)", "integer", minimum=20, maximum=200),
        Field("heart_rate", "Heart rate (/min)", "integer", minimum=20, maximum=250),
        Field("resp_rate", "Respiratory rate (/min)", "integer", minimum=4, maximum=80),
        Field("spo2", "Oxygen saturation (%)", "integer", minimum=50, maximum=100),
        Field("temperature", "Temperature", "number", minimum=25, maximum=113),
        Field("temp_unit", "Temperature unit", "select", True, TEMP_UNITS, default="Cel"),
        Field("pain", "Pain score (0-10)", "integer", minimum=0, maximum=10),
    ),
    build_vitals,
    intro="Leave blank what you did not measure. Each measurement is saved as its own coded Observation.",
)

# ---- code status ---------------------------------------------------------------------------------------

CODE_STATUSES: Choices = tuple((key, words) for key, (_code, _display, words) in CODE_STATUS_VALUES.items())
DISCUSSED_WITH: Choices = (
    ("the patient", "The patient"),
    ("the patient's health care agent", "The health care agent (proxy)"),
    ("the patient's family", "The family"),
)


def build_code_status(v: dict[str, Any], ctx: Context) -> list[Write]:
    """A new code status Observation: the latest one is the patient's code status, the earlier ones its history."""
    if v["status"] == "dnr" and not v["discussed_with"]:
        raise FormErrors({"discussed_with": "A DNR is documented with whom it was discussed."})
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": code_status_code(),
        "subject": _ref(ctx.patient_ref),
        "effectiveDateTime": ctx.instant,
        "valueCodeableConcept": code_status_value(v["status"]),
    }
    _encounter(v, observation)
    notes = [f"Discussed with {v['discussed_with']}." if v["discussed_with"] else "", v["note"] or ""]
    if any(notes):
        observation["note"] = [{"text": " ".join(n for n in notes if n)}]
    return [Write("Observation", new_id(), observation)]


CODE_STATUS = Form(
    "code-status",
    "Document code status",
    "summary",
    (
        Field("status", "Code status", "select", True, CODE_STATUSES),
        Field("discussed_with", "Discussed with", "select", options=DISCUSSED_WITH, help="Needed for a DNR."),
        Field("note", "Note", "text", max_length=500),
        ENCOUNTER,
    ),
    build_code_status,
    intro="Saved as a new Observation; the banner shows the latest, and the earlier ones stay in the record.",
)

# ---- allergy -------------------------------------------------------------------------------------------

ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"


def build_allergy(v: dict[str, Any], ctx: Context) -> list[Write]:
    if v["severity"] and not v["reaction"]:
        raise FormErrors({"reaction": "A severity describes a reaction: pick the reaction too."})
    substance: Concept = v["substance"]
    allergy: dict[str, Any] = {
        "resourceType": "AllergyIntolerance",
        "clinicalStatus": {"coding": [{"system": ALLERGY_CLINICAL, "code": v["clinical_status"]}]},
        "verificationStatus": {"coding": [{"system": ALLERGY_VERIFICATION, "code": v["verification"]}]},
        "type": "allergy",
        "category": ["medication"],
        "code": substance.concept(),
        "patient": _ref(ctx.patient_ref),
        "recordedDate": ctx.instant,
    }
    if v["criticality"]:
        allergy["criticality"] = v["criticality"]
    if v["reaction"]:
        reaction: dict[str, Any] = {"manifestation": [v["reaction"].concept()]}
        if v["severity"]:
            reaction["severity"] = v["severity"]
        allergy["reaction"] = [reaction]
    if v["note"]:
        allergy["note"] = [{"text": v["note"]}]
    return [Write("AllergyIntolerance", new_id(), allergy)]


ALLERGY = Form(
    "allergy",
    "Record an allergy",
    "allergies",
    (
        Field("substance", "Substance", "code", True, value_set="allergens"),
        Field(
            "clinical_status",
            "Clinical status",
            "select",
            True,
            (("active", "Active"), ("inactive", "Inactive"), ("resolved", "Resolved")),
            default="active",
        ),
        Field(
            "verification",
            "Verification",
            "select",
            True,
            (("confirmed", "Confirmed"), ("unconfirmed", "Unconfirmed"), ("refuted", "Refuted")),
            default="confirmed",
        ),
        Field(
            "criticality",
            "Criticality",
            "select",
            options=(("low", "Low"), ("high", "High"), ("unable-to-assess", "Unable to assess")),
        ),
        Field("reaction", "Reaction", "code", value_set="reactions"),
        Field(
            "severity",
            "Reaction severity",
            "select",
            options=(("mild", "Mild"), ("moderate", "Moderate"), ("severe", "Severe")),
        ),
        Field("note", "Note", "text", max_length=500),
    ),
    build_allergy,
)

# ---- problem -------------------------------------------------------------------------------------------


def build_problem(v: dict[str, Any], ctx: Context) -> list[Write]:
    if v["onset"] and v["onset"] > ctx.now.date().isoformat():
        raise FormErrors({"onset": "The onset cannot be in the future."})
    condition: dict[str, Any] = {
        "resourceType": "Condition",
        "clinicalStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": v["clinical_status"]}
            ]
        },
        "verificationStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": v["verification"]}
            ]
        },
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": v["category"]}]}
        ],
        "code": v["problem"].concept(),
        "subject": _ref(ctx.patient_ref),
        "recordedDate": ctx.instant,
    }
    if v["onset"]:
        condition["onsetDateTime"] = v["onset"]
    _encounter(v, condition)
    return [Write("Condition", new_id(), condition)]


PROBLEM = Form(
    "problem",
    "Add a problem",
    "problems",
    (
        Field("problem", "Problem", "code", True, value_set="problems"),
        Field(
            "category",
            "List",
            "select",
            True,
            (("problem-list-item", "Problem list"), ("encounter-diagnosis", "Encounter diagnosis")),
            default="problem-list-item",
        ),
        Field(
            "clinical_status",
            "Clinical status",
            "select",
            True,
            (("active", "Active"), ("recurrence", "Recurrence"), ("inactive", "Inactive"), ("resolved", "Resolved")),
            default="active",
        ),
        Field(
            "verification",
            "Verification",
            "select",
            True,
            (
                ("confirmed", "Confirmed"),
                ("provisional", "Provisional"),
                ("unconfirmed", "Unconfirmed"),
                ("differential", "Differential"),
            ),
            default="confirmed",
        ),
        Field("onset", "Onset date", "date"),
        ENCOUNTER,
    ),
    build_problem,
)

# ---- note ----------------------------------------------------------------------------------------------

NOTE_TYPES: Choices = (
    ("11506-3", "Progress note"),
    ("34117-2", "History and physical note"),
    ("11488-4", "Consult note"),
    ("18842-5", "Discharge summary"),
)


def build_note(v: dict[str, Any], ctx: Context) -> list[Write]:
    note: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": _concept(LOINC, v["type"], _label(NOTE_TYPES, v["type"])),
        "subject": _ref(ctx.patient_ref),
        "date": ctx.instant,
        "content": [
            {"attachment": {"contentType": "text/plain", "data": base64.b64encode(v["text"].encode()).decode()}}
        ],
    }
    if v["title"]:
        note["description"] = v["title"]
    if v["encounter"]:
        note["context"] = {"encounter": [_ref(v["encounter"])]}
    return [Write("DocumentReference", new_id(), note)]


NOTE = Form(
    "note",
    "Write a note",
    "notes",
    (
        Field("type", "Note type", "select", True, NOTE_TYPES, default="11506-3"),
        ENCOUNTER,
        Field("title", "Title", "text"),
        Field("text", "Note", "textarea", True),
    ),
    build_note,
)

# ---- medication reconciliation -------------------------------------------------------------------------

MEDREC_ROWS = 5
STATEMENT_STATUSES: Choices = (
    ("active", "Taking"),
    ("stopped", "Stopped"),
    ("completed", "Finished the course"),
    ("on-hold", "On hold"),
    ("not-taken", "Not taking"),
)


def build_medrec(v: dict[str, Any], ctx: Context) -> list[Write]:
    writes, errors = [], {}
    for i in range(1, MEDREC_ROWS + 1):
        med, status = v[f"med{i}"], v[f"status{i}"]
        if med is None:
            if status and status != "active":
                errors[f"med{i}"] = "Pick the medication this status is for."
            continue
        statement: dict[str, Any] = {
            "resourceType": "MedicationStatement",
            "status": status or "active",
            "medicationCodeableConcept": med.concept(),
            "subject": _ref(ctx.patient_ref),
            "informationSource": _ref(ctx.patient_ref),
            "dateAsserted": ctx.instant,
        }
        if v[f"note{i}"]:
            statement["note"] = [{"text": v[f"note{i}"]}]
        writes.append(Write("MedicationStatement", new_id(), statement))
    if not writes and not errors:
        errors["med1"] = "Enter at least one medication."
    if errors:
        raise FormErrors(errors)
    return writes


MEDREC = Form(
    "medrec",
    "Reconcile medications",
    "medications",
    tuple(
        f
        for i in range(1, MEDREC_ROWS + 1)
        for f in (
            Field(f"med{i}", f"Medication {i}", "code", value_set="medications"),
            Field(f"status{i}", f"Status of medication {i}", "select", options=STATEMENT_STATUSES, default="active"),
            Field(f"note{i}", f"Note on medication {i}", "text"),
        )
    ),
    build_medrec,
    intro="One line per medication the patient tells you about; each is saved as a MedicationStatement.",
)

# ---- immunization --------------------------------------------------------------------------------------

SITES: Choices = (("LA", "Left arm"), ("RA", "Right arm"), ("LT", "Left thigh"), ("RT", "Right thigh"))
ROUTES_V3: Choices = (
    ("IM", "Injection, intramuscular"),
    ("SQ", "Injection, subcutaneous"),
    ("IDINJ", "Injection, intradermal"),
    ("NASINHLC", "Inhalation, nasal"),
    ("PO", "Swallow, oral"),
)


def build_immunization(v: dict[str, Any], ctx: Context) -> list[Write]:
    if v["occurrence"] > ctx.now.date().isoformat():
        raise FormErrors({"occurrence": "The date given cannot be in the future."})
    given = ctx.instant if v["occurrence"] == ctx.now.date().isoformat() else v["occurrence"]
    immunization: dict[str, Any] = {
        "resourceType": "Immunization",
        "status": v["status"],
        "vaccineCode": v["vaccine"].concept(),
        "patient": _ref(ctx.patient_ref),
        "occurrenceDateTime": given,
        "primarySource": True,
    }
    _encounter(v, immunization)
    if v["lot"]:
        immunization["lotNumber"] = v["lot"]
    if v["site"]:
        immunization["site"] = _concept(
            "http://terminology.hl7.org/CodeSystem/v3-ActSite", v["site"], _label(SITES, v["site"])
        )
    if v["route"]:
        immunization["route"] = _concept(
            "http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration", v["route"], _label(ROUTES_V3, v["route"])
        )
    if v["dose"] is not None:
        immunization["doseQuantity"] = _quantity(v["dose"], "mL", "mL")
    return [Write("Immunization", new_id(), immunization)]


IMMUNIZATION = Form(
    "immunization",
    "Record an immunization",
    "immunizations",
    (
        Field("vaccine", "Vaccine", "code", True, value_set="vaccines"),
        Field(
            "status", "Status", "select", True, (("completed", "Given"), ("not-done", "Not given")), default="completed"
        ),
        Field("occurrence", "Date given", "date", True),
        Field("lot", "Lot number", "text", max_length=40),
        Field("site", "Site", "select", options=SITES),
        Field("route", "Route", "select", options=ROUTES_V3),
        Field("dose", "Dose (mL)", "number", minimum=0.05, maximum=5),
        ENCOUNTER,
    ),
    build_immunization,
)

# ---- lab and imaging orders ----------------------------------------------------------------------------


def _order_builder(category: tuple[str, str]) -> Callable[[dict[str, Any], Context], list[Write]]:
    def build(v: dict[str, Any], ctx: Context) -> list[Write]:
        order: dict[str, Any] = {
            "resourceType": "ServiceRequest",
            "status": "active",
            "intent": "order",
            "priority": v["priority"],
            "category": [_concept(SNOMED, *category)],
            "code": v["test"].concept(),
            "subject": _ref(ctx.patient_ref),
            "authoredOn": ctx.instant,
        }
        _encounter(v, order)
        if v["reason"]:
            order["reasonReference"] = [_ref(v["reason"], ctx.labels.get("reasons"))]
        if v["reason_text"]:
            order["reasonCode"] = [{"text": v["reason_text"]}]
        if v["note"]:
            order["note"] = [{"text": v["note"]}]
        return [Write("ServiceRequest", new_id(), order)]

    return build


def _order_fields(value_set_name: str, label: str) -> tuple[Field, ...]:
    return (
        Field("test", label, "code", True, value_set=value_set_name),
        Field("priority", "Priority", "select", True, PRIORITIES, default="routine"),
        REASON,
        Field("reason_text", "Reason (free text)", "text"),
        ENCOUNTER,
        Field("note", "Note to the performer", "text", max_length=500),
    )


LAB_ORDER = Form(
    "lab-order",
    "Order a lab test",
    "orders",
    _order_fields("lab-orders", "Test"),
    _order_builder(("108252007", "Laboratory procedure")),
    order="ServiceRequest",
)
IMAGING_ORDER = Form(
    "imaging-order",
    "Order imaging",
    "orders",
    _order_fields("imaging-orders", "Study"),
    _order_builder(("363679005", "Imaging")),
    order="ServiceRequest",
)

# ---- medication order and discontinuation --------------------------------------------------------------

ROUTES_SNOMED: Choices = (
    ("26643006", "Oral"),
    ("47625008", "Intravenous"),
    ("78421000", "Intramuscular"),
    ("34206005", "Subcutaneous"),
)
DOSE_UNITS: Choices = (("mg", "mg"), ("{tbl}", "tablet(s)"), ("mL", "mL"))
FREQUENCIES: Choices = (
    ("1", "Once a day"),
    ("2", "Twice a day"),
    ("3", "Three times a day"),
    ("4", "Four times a day"),
)


def build_med_order(v: dict[str, Any], ctx: Context) -> list[Write]:
    repeat: dict[str, Any] = {"frequency": int(v["frequency"]), "period": 1, "periodUnit": "d"}
    if v["days"] is not None:
        repeat["boundsDuration"] = {"value": int(v["days"]), "unit": "days", "system": UCUM, "code": "d"}
    unit_label = _label(DOSE_UNITS, v["dose_unit"])
    dosage: dict[str, Any] = {
        "text": f"{_n(v['dose'])} {unit_label} {_label(ROUTES_SNOMED, v['route']).lower()}, "
        f"{_label(FREQUENCIES, v['frequency']).lower()}"
        + (f" for {int(v['days'])} days" if v["days"] is not None else ""),
        "timing": {"repeat": repeat},
        "route": _concept(SNOMED, v["route"], _label(ROUTES_SNOMED, v["route"])),
        "doseAndRate": [{"doseQuantity": _quantity(v["dose"], unit_label, v["dose_unit"])}],
    }
    if v["instructions"]:
        dosage["patientInstruction"] = v["instructions"]
    order: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": v["medication"].concept(),
        "subject": _ref(ctx.patient_ref),
        "authoredOn": ctx.instant,
        "dosageInstruction": [dosage],
    }
    _encounter(v, order)
    if v["reason"]:
        order["reasonReference"] = [_ref(v["reason"], ctx.labels.get("reasons"))]
    return [Write("MedicationRequest", new_id(), order)]


MED_ORDER = Form(
    "med-order",
    "Order a medication",
    "medications",
    (
        Field("medication", "Medication", "code", True, value_set="medications"),
        Field("dose", "Dose", "number", True, minimum=0.001, maximum=10_000),
        Field("dose_unit", "Dose unit", "select", True, DOSE_UNITS, default="mg"),
        Field("route", "Route", "select", True, ROUTES_SNOMED, default="26643006"),
        Field("frequency", "Frequency", "select", True, FREQUENCIES, default="1"),
        Field("days", "Duration (days)", "integer", minimum=1, maximum=365),
        REASON,
        ENCOUNTER,
        Field("instructions", "Instructions for the patient", "text", max_length=500),
    ),
    build_med_order,
    order="MedicationRequest",
)


def build_discontinue(v: dict[str, Any], ctx: Context) -> list[Write]:
    if not v["stop_reason"] and not v["reason_text"]:
        raise FormErrors({"stop_reason": "Say why the medication is stopped (a coded reason or text)."})
    rid = v["order"].split("/", 1)[1]
    current = ctx.read("MedicationRequest", rid)
    current.pop("meta", None)
    reason: dict[str, Any] = {}
    if v["stop_reason"]:
        reason["coding"] = [v["stop_reason"].coding()]
    reason["text"] = v["reason_text"] or v["stop_reason"].display
    return [Write("MedicationRequest", rid, {**current, "status": "stopped", "statusReason": reason}, update=True)]


DISCONTINUE = Form(
    "discontinue",
    "Discontinue a medication",
    "medications",
    (
        Field("order", "Medication order", "choice", True, source="active_orders"),
        Field("stop_reason", "Reason", "code", value_set="stop-reasons"),
        Field("reason_text", "Reason (free text)", "text"),
    ),
    build_discontinue,
)

# ---- referral ------------------------------------------------------------------------------------------


def build_referral(v: dict[str, Any], ctx: Context) -> list[Write]:
    if v["notify"] and not v["message"]:
        raise FormErrors({"message": "Write the message for the specialist, or untick 'Notify the specialist'."})
    performers = ctx.labels.get("performers")
    referral_id = new_id()
    referral: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "priority": v["priority"],
        "category": [_concept(SNOMED, "3457005", "Patient referral")],
        "code": v["service"].concept(),
        "subject": _ref(ctx.patient_ref),
        "authoredOn": ctx.instant,
        "performer": [_ref(v["performer"], performers)],
    }
    _encounter(v, referral)
    if v["reason"]:
        referral["reasonReference"] = [_ref(v["reason"], ctx.labels.get("reasons"))]
    if v["reason_text"]:
        referral["reasonCode"] = [{"text": v["reason_text"]}]
    if v["note"]:
        referral["note"] = [{"text": v["note"]}]
    writes = [Write("ServiceRequest", referral_id, referral)]
    target = f"ServiceRequest/{referral_id}"
    if v["track"]:
        task = {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "description": "Track the referral until the consult note comes back",
            "focus": {"reference": target},
            "for": _ref(ctx.patient_ref),
            "authoredOn": ctx.instant,
            "owner": _ref(v["performer"], performers),
        }
        writes.append(Write("Task", new_id(), task))
    if v["notify"]:
        message = {
            "resourceType": "Communication",
            "status": "completed",
            "basedOn": [{"reference": target}],
            "subject": _ref(ctx.patient_ref),
            "recipient": [_ref(v["performer"], performers)],
            "sent": ctx.instant,
            "payload": [{"contentString": v["message"]}],
        }
        writes.append(Write("Communication", new_id(), message))
    return writes


REFERRAL = Form(
    "referral",
    "Refer",
    "referrals",
    (
        Field("service", "Service", "code", True, value_set="referral-services", default="306206005"),
        Field(
            "performer", "Refer to", "choice", True, source="performers", help="The specialist's role and specialty."
        ),
        REASON,
        Field("reason_text", "Reason (free text)", "text"),
        Field("priority", "Priority", "select", True, PRIORITIES, default="routine"),
        ENCOUNTER,
        Field("note", "Note", "text", max_length=500),
        Field("track", "Track the referral with a task", "checkbox"),
        Field("notify", "Notify the specialist", "checkbox"),
        Field("message", "Message to the specialist", "textarea"),
    ),
    build_referral,
)


def build_close_referral(v: dict[str, Any], ctx: Context) -> list[Write]:
    """Closing the loop: the tracking Task completed with the consult note as its output, and the referral
    (the Task's focus) completed, as FHIR's referral workflow has it."""
    task_id = v["tracking_task"].split("/", 1)[1]
    task = ctx.read("Task", task_id)
    task.pop("meta", None)
    focus = str((task.get("focus") or {}).get("reference", ""))
    if not focus.startswith("ServiceRequest/"):
        raise FormErrors({"tracking_task": "This task does not track a referral."})
    output = {
        "type": {"text": "Consult note"},
        "valueReference": _ref(v["note"], ctx.labels.get("consult_notes")),
    }
    closed: dict[str, Any] = {**task, "status": "completed", "lastModified": ctx.instant, "output": [output]}
    if v["comment"]:
        closed["note"] = [*task.get("note", []), {"text": v["comment"], "time": ctx.instant}]
    writes = [Write("Task", task_id, closed, update=True)]
    if v["complete_referral"]:
        referral_id = focus.split("/", 1)[1]
        referral = ctx.read("ServiceRequest", referral_id)
        referral.pop("meta", None)
        writes.append(Write("ServiceRequest", referral_id, {**referral, "status": "completed"}, update=True))
    return writes


CLOSE_REFERRAL = Form(
    "close-referral",
    "Close a referral loop",
    "referrals",
    (
        Field("tracking_task", "Referral being tracked", "choice", True, source="open_referral_tasks"),
        Field("note", "Consult note received", "choice", True, source="consult_notes"),
        Field("complete_referral", "Mark the referral completed", "checkbox", default="on"),
        Field("comment", "Comment", "text", max_length=500),
    ),
    build_close_referral,
    intro="When the specialist's consult note has arrived: link it to the referral's tracking task and close both.",
)

# ---- registration and scheduling -----------------------------------------------------------------------

GENDERS: Choices = (("female", "Female"), ("male", "Male"), ("other", "Other"), ("unknown", "Unknown"))
_MRN = re.compile(r"^[A-Za-z0-9-]{3,40}$")
_PHONE = re.compile(r"^[0-9()+ .-]{7,30}$")


def build_registration(v: dict[str, Any], ctx: Context) -> list[Write]:
    errors = {}
    if v["birth_date"] > ctx.now.date().isoformat():
        errors["birth_date"] = "The birth date cannot be in the future."
    if not _MRN.match(v["mrn"]):
        errors["mrn"] = "An MRN is 3 to 40 letters, digits or dashes."
    elif ctx.search("Patient", [("identifier", f"{MRN_SYSTEM}|{v['mrn']}")]):
        errors["mrn"] = f"MRN {v['mrn']} already belongs to a patient."
    if v["phone"] and not _PHONE.match(v["phone"]):
        errors["phone"] = "A phone number is 7 to 30 digits, spaces and + ( ) . -"
    if v["subscriber_id"] and not v["payor"]:
        errors["payor"] = "Choose the insurer the member id belongs to."
    if errors:
        raise FormErrors(errors)
    patient_id = new_id()
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [
            {
                "use": "usual",
                "type": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}],
                    "text": "Medical record number",
                },
                "system": MRN_SYSTEM,
                "value": v["mrn"],
            }
        ],
        "active": True,
        "name": [{"use": "official", "family": v["family"], "given": v["given"].split()}],
        "gender": v["gender"],
        "birthDate": v["birth_date"],
    }
    if v["phone"]:
        patient["telecom"] = [{"system": "phone", "value": v["phone"], "use": "mobile"}]
    writes = [Write("Patient", patient_id, patient)]
    if v["payor"]:
        coverage: dict[str, Any] = {
            "resourceType": "Coverage",
            "status": "active",
            "beneficiary": {"reference": f"Patient/{patient_id}"},
            "payor": [_ref(v["payor"], ctx.labels.get("payors"))],
        }
        if v["subscriber_id"]:
            coverage["subscriberId"] = v["subscriber_id"]
        writes.append(Write("Coverage", new_id(), coverage))
    return writes


REGISTER = Form(
    "register",
    "Register a new patient",
    "summary",
    (
        Field("given", "Given name(s)", "text", True, max_length=100),
        Field("family", "Family name", "text", True, max_length=100),
        Field("gender", "Sex", "select", True, GENDERS),
        Field("birth_date", "Birth date", "date", True),
        Field("phone", "Phone", "text", max_length=30),
        Field("mrn", "Medical record number (MRN)", "text", True, max_length=40),
        Field("payor", "Insurance", "choice", source="payors"),
        Field("subscriber_id", "Member id", "text", max_length=60),
    ),
    build_registration,
    patient=False,
)


def build_appointment(v: dict[str, Any], ctx: Context) -> list[Write]:
    start = datetime.strptime(v["start"], "%Y-%m-%dT%H:%M:00Z")
    if start <= ctx.now.replace(tzinfo=None):
        raise FormErrors({"start": "An appointment is booked for a time in the future."})
    minutes = int(v["minutes"])
    appointment: dict[str, Any] = {
        "resourceType": "Appointment",
        "status": "booked",
        "start": v["start"],
        "end": (start + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:00Z"),
        "minutesDuration": minutes,
        "participant": [
            {"actor": _ref(ctx.patient_ref), "status": "accepted"},
            {"actor": _ref(v["clinician"], ctx.labels.get("performers")), "status": "accepted"},
        ],
    }
    if v["service"]:
        appointment["serviceType"] = [{"text": v["service"]}]
    if v["reason"]:
        appointment["reasonReference"] = [_ref(v["reason"], ctx.labels.get("reasons"))]
    return [Write("Appointment", new_id(), appointment)]


APPOINTMENT = Form(
    "appointment",
    "Book an appointment",
    "encounters",
    (
        Field("start", "Start (UTC)", "datetime", True),
        Field("minutes", "Length (minutes)", "integer", True, minimum=5, maximum=240, default="30"),
        Field("clinician", "With", "choice", True, source="performers"),
        REASON,
        Field("service", "Visit type", "text", max_length=100),
    ),
    build_appointment,
)

FORMS: dict[str, Form] = {
    f.id: f
    for f in (
        VITALS,
        CODE_STATUS,
        ALLERGY,
        PROBLEM,
        NOTE,
        MEDREC,
        IMMUNIZATION,
        LAB_ORDER,
        IMAGING_ORDER,
        MED_ORDER,
        DISCONTINUE,
        REFERRAL,
        CLOSE_REFERRAL,
        APPOINTMENT,
        REGISTER,
    )
}
