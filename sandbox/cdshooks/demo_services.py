"""The built-in demo CDS services, served by this app at ``/cds-services`` (CDS Hooks 2.0 discovery, service
and feedback endpoints), so that cards show up in the chart without a vendor.

- ``penicillin-allergy-order-select`` / ``penicillin-allergy-order-sign``: a critical card when a drafted
  (order-select: selected) medication order is a penicillin and the patient has an active penicillin allergy
  (read from the ``allergies`` prefetch); it suggests replacing the order with azithromycin, or removing it.
- ``duplicate-order``: order-select; a warning when a selected draft order has the same code as an active
  order the patient already has (``medications`` / ``services`` prefetch); it suggests removing the new one.
- ``ai-risk-model``: patient-view; a **demo AI model**: a transparent points score for 10-year cardiovascular
  risk over age, sex, conditions, smoking and the latest labs and blood pressure (the points are in
  ``RISK_POINTS`` and on the card).  A high score suggests starting atorvastatin.  Like many real models it
  has blind spots, said on the card: it does not read the medication list or check the age range it was
  made for.  The trainee's job is to review it, not to trust it.

The services answer from the request alone (context and prefetch): no database, no state.  The app calls
them in-process through the same client code as any vendor's service (``client.py``), and anyone can call
them over HTTP.  Every card and suggestion has a uuid, so feedback can name them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import JSONResponse, Response

from sandbox.cdshooks.hooks import ORDER_SELECT, ORDER_SIGN, PATIENT_VIEW
from sandbox.cdshooks.services import ServiceDef

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
OVERRIDE_SYSTEM = "urn:ehr-sandbox:cds-override-reason"
SOURCE = "ehr-sandbox demo services"

ALLERGIES = "AllergyIntolerance?patient={{context.patientId}}"
SERVICES = [
    ServiceDef(
        "penicillin-allergy-order-select",
        ORDER_SELECT,
        "Warns when a selected medication order is a penicillin and the patient is allergic to penicillin.",
        "Penicillin allergy check (order-select)",
        {"allergies": ALLERGIES},
    ),
    ServiceDef(
        "penicillin-allergy-order-sign",
        ORDER_SIGN,
        "Warns before signing when a medication order is a penicillin and the patient is allergic to penicillin.",
        "Penicillin allergy check (order-sign)",
        {"allergies": ALLERGIES},
    ),
    ServiceDef(
        "duplicate-order",
        ORDER_SELECT,
        "Warns when a selected order has the same code as an active order the patient already has.",
        "Duplicate order check",
        {
            "medications": "MedicationRequest?patient={{context.patientId}}&status=active",
            "services": "ServiceRequest?patient={{context.patientId}}&status=active",
        },
    ),
    ServiceDef(
        "ai-risk-model",
        PATIENT_VIEW,
        "DEMO AI MODEL: a transparent points score for 10-year cardiovascular risk, with a suggestion to review.",
        "AI risk model (demo)",
        {
            "patient": "Patient/{{context.patientId}}",
            "conditions": "Condition?patient={{context.patientId}}",
            "observations": (
                "Observation?patient={{context.patientId}}"
                "&code=http://loinc.org|85354-9,http://loinc.org|8480-6,http://loinc.org|4548-4,"
                "http://loinc.org|72166-2&_sort=-date"
            ),
        },
    ),
]

# ---- penicillins ------------------------------------------------------------------------------------------

# RxNorm ingredients and products of the penicillin class (penicillin G and V, amoxicillin, ampicillin,
# amoxicillin-clavulanate, and the products the synthetic data uses), and the names that give one away.
PENICILLIN_CODES = frozenset({"70618", "7980", "7984", "723", "733", "19711", "308182", "308191"})
PENICILLIN_NAMES = ("penicillin", "amoxicillin", "ampicillin", "piperacillin", "nafcillin", "oxacillin", "cloxacillin")
AZITHROMYCIN = {
    "coding": [{"system": RXNORM, "code": "141918", "display": "Azithromycin 250 MG Oral Tablet"}],
    "text": "Azithromycin 250 MG Oral Tablet",
}


def _codings(concept: Any) -> list[dict[str, Any]]:
    return [c for c in (concept or {}).get("coding", []) if isinstance(c, dict)] if isinstance(concept, dict) else []


def _names(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    texts = [concept.get("text") or ""] + [c.get("display") or "" for c in _codings(concept)]
    return " ".join(t for t in texts if isinstance(t, str)).lower()


def is_penicillin(concept: Any) -> bool:
    if any(c.get("system") == RXNORM and c.get("code") in PENICILLIN_CODES for c in _codings(concept)):
        return True
    return any(name in _names(concept) for name in PENICILLIN_NAMES)


def _display(concept: Any) -> str:
    if isinstance(concept, dict):
        if isinstance(concept.get("text"), str):
            return concept["text"]
        for c in _codings(concept):
            if isinstance(c.get("display"), str):
                return c["display"]
            if isinstance(c.get("code"), str):
                return c["code"]
    return "this order"


def _resources(bundle: Any) -> list[dict[str, Any]]:
    if not isinstance(bundle, dict):
        return []
    if bundle.get("resourceType") != "Bundle":
        return [bundle]
    return [
        e["resource"] for e in bundle.get("entry", []) if isinstance(e, dict) and isinstance(e.get("resource"), dict)
    ]


def _active_allergy(allergy: dict[str, Any]) -> bool:
    clinical = {c.get("code") for c in _codings(allergy.get("clinicalStatus"))}
    verification = {c.get("code") for c in _codings(allergy.get("verificationStatus"))}
    return not clinical & {"inactive", "resolved"} and not verification & {"refuted", "entered-in-error"}


def _orders(request: dict[str, Any], *, selected_only: bool) -> list[dict[str, Any]]:
    context = request.get("context") or {}
    orders = _resources(context.get("draftOrders"))
    if selected_only:
        chosen = set(context.get("selections") or [])
        orders = [o for o in orders if f"{o.get('resourceType')}/{o.get('id')}" in chosen]
    return orders


def _remove(order: dict[str, Any], what: str) -> list[dict[str, Any]]:
    if not order.get("id"):
        return []
    return [
        {
            "type": "delete",
            "description": f"Remove the {what} order",
            "resourceId": f"{order['resourceType']}/{order['id']}",
        }
    ]


def _reasons(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"system": OVERRIDE_SYSTEM, "code": code, "display": display} for code, display in pairs]


def penicillin_allergy(request: dict[str, Any], *, selected_only: bool) -> list[dict[str, Any]]:
    prefetch = request.get("prefetch") or {}
    allergies = [
        a for a in _resources(prefetch.get("allergies")) if is_penicillin(a.get("code")) and _active_allergy(a)
    ]
    if not allergies:
        return []
    allergy = allergies[0]
    reactions = [_display(m) for r in allergy.get("reaction", []) for m in r.get("manifestation", [])]
    cards = []
    for order in _orders(request, selected_only=selected_only):
        if order.get("resourceType") != "MedicationRequest" or not is_penicillin(
            order.get("medicationCodeableConcept")
        ):
            continue
        drug = _display(order.get("medicationCodeableConcept"))
        replacement = {k: v for k, v in order.items() if k not in ("id", "meta", "medicationCodeableConcept")}
        replacement["medicationCodeableConcept"] = AZITHROMYCIN
        replacement.pop("dosageInstruction", None)
        replacement["dosageInstruction"] = [{"text": "500 mg by mouth on day 1, then 250 mg once daily on days 2 to 5"}]
        cards.append(
            {
                "uuid": str(uuid.uuid4()),
                "summary": f"Penicillin allergy: {drug} is a penicillin"[:140],
                "indicator": "critical",
                "detail": (
                    f"The patient has an active allergy to **{_display(allergy.get('code'))}**"
                    + (f" (reaction: {', '.join(reactions)})" if reactions else "")
                    + f". {drug} belongs to the penicillin class. Choose a drug of another class, such as a "
                    "macrolide, unless the allergy has been ruled out."
                ),
                "source": {
                    "label": SOURCE,
                    "topic": {"system": OVERRIDE_SYSTEM, "code": "drug-allergy", "display": "Drug allergy"},
                },
                "selectionBehavior": "at-most-one",
                "suggestions": [
                    {
                        "label": "Replace with azithromycin 250 mg tablets (a macrolide)",
                        "uuid": str(uuid.uuid4()),
                        "isRecommended": True,
                        "actions": [
                            *_remove(order, drug),
                            {"type": "create", "description": "Order azithromycin instead", "resource": replacement},
                        ],
                    },
                    *(
                        [
                            {
                                "label": f"Remove the {drug} order",
                                "uuid": str(uuid.uuid4()),
                                "actions": _remove(order, drug),
                            }
                        ]
                        if order.get("id")
                        else []
                    ),
                ],
                "overrideReasons": _reasons(
                    ("tolerated-before", "Patient has taken this drug before without a reaction"),
                    ("allergy-ruled-out", "The allergy has been ruled out (e.g. negative skin test)"),
                    ("benefit-outweighs-risk", "Benefit outweighs the risk; will monitor"),
                ),
            }
        )
    return cards


# ---- duplicates ---------------------------------------------------------------------------------------------


def _codes(order: dict[str, Any]) -> set[tuple[str, str]]:
    concept = (
        order.get("medicationCodeableConcept")
        if order.get("resourceType") == "MedicationRequest"
        else order.get("code")
    )
    return {(c.get("system", ""), c["code"]) for c in _codings(concept) if isinstance(c.get("code"), str)}


def duplicate_order(request: dict[str, Any]) -> list[dict[str, Any]]:
    prefetch = request.get("prefetch") or {}
    active = _resources(prefetch.get("medications")) + _resources(prefetch.get("services"))
    cards = []
    for order in _orders(request, selected_only=True):
        codes = _codes(order)
        same = [
            a
            for a in active
            if a.get("resourceType") == order.get("resourceType")
            and a.get("id") != order.get("id")
            and _codes(a) & codes
        ]
        if not codes or not same:
            continue
        concept = order.get("medicationCodeableConcept") or order.get("code")
        what = _display(concept)
        if not _names(concept).strip():  # a draft coded without a display: name it as the existing order does
            what = _display(same[0].get("medicationCodeableConcept") or same[0].get("code"))
        since = same[0].get("authoredOn")
        cards.append(
            {
                "uuid": str(uuid.uuid4()),
                "summary": f"Duplicate order: {what} is already ordered"[:140],
                "indicator": "warning",
                "detail": (
                    f"{order['resourceType']}/{same[0].get('id')} orders {what} and is active"
                    + (f" (since {since})" if since else "")
                    + ". Ordering it again may double the dose or repeat the test."
                ),
                "source": {"label": SOURCE},
                **(
                    {
                        "selectionBehavior": "at-most-one",
                        "suggestions": [
                            {
                                "label": "Remove the new duplicate order",
                                "uuid": str(uuid.uuid4()),
                                "actions": _remove(order, what),
                            }
                        ],
                    }
                    if order.get("id")
                    else {}
                ),
                "overrideReasons": _reasons(
                    ("intended-additional", "An additional order is intended"),
                    ("replacing-existing", "The existing order is being replaced"),
                ),
            }
        )
    return cards


# ---- the demo AI risk model ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Points:
    what: str
    points: int


# The whole model: each finding and what it adds.  Published on the card, so a trainee can check every input.
RISK_POINTS = {
    "age 40-49": 1,
    "age 50-59": 2,
    "age 60-69": 3,
    "age 70 or over": 4,
    "male sex": 1,
    "hypertension": 2,
    "diabetes": 2,
    "hyperlipidemia": 1,
    "chronic kidney disease": 1,
    "obesity": 1,
    "current smoker": 2,
    "former smoker": 1,
    "latest systolic blood pressure 140 mmHg or more": 1,
    "latest HbA1c 8% or more": 1,
}
CONDITION_FINDINGS = {
    "38341003": "hypertension",
    "44054006": "diabetes",
    "55822004": "hyperlipidemia",
    "433144002": "chronic kidney disease",
    "414916001": "obesity",
}
HIGH_RISK = 7
MODERATE_RISK = 4
ATORVASTATIN = {
    "coding": [{"system": RXNORM, "code": "617310", "display": "atorvastatin 20 MG Oral Tablet"}],
    "text": "atorvastatin 20 MG Oral Tablet",
}


def _age(birth: Any, today: date) -> int | None:
    if not isinstance(birth, str) or len(birth) < 10:
        return None
    try:
        born = date.fromisoformat(birth[:10])
    except ValueError:
        return None
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def _latest(observations: list[dict[str, Any]], code: str) -> dict[str, Any] | None:
    """The newest value for a LOINC code: the Observation's own, or a component's (blood pressure panels)."""
    found: list[tuple[str, dict[str, Any]]] = []
    for obs in observations:
        when = str(obs.get("effectiveDateTime") or obs.get("issued") or "")
        if any(c.get("code") == code for c in _codings(obs.get("code"))):
            found.append((when, obs))
        for component in obs.get("component", []) if isinstance(obs.get("component"), list) else []:
            if isinstance(component, dict) and any(c.get("code") == code for c in _codings(component.get("code"))):
                found.append((when, component))
    return max(found, key=lambda f: f[0])[1] if found else None


def _number(value: Any) -> float | None:
    quantity = value.get("valueQuantity") if isinstance(value, dict) else None
    number = quantity.get("value") if isinstance(quantity, dict) else None
    return float(number) if isinstance(number, int | float) and not isinstance(number, bool) else None


def risk_score(prefetch: dict[str, Any], today: date) -> tuple[int, list[Points]]:
    """The model: the points each finding in the prefetched data earns (see ``RISK_POINTS``)."""
    found: list[Points] = []
    patient = prefetch.get("patient") if isinstance(prefetch.get("patient"), dict) else {}
    age = _age(patient.get("birthDate"), today)
    if age is not None and age >= 40:
        band = "age 70 or over" if age >= 70 else f"age {age // 10 * 10}-{age // 10 * 10 + 9}"
        found.append(Points(band, RISK_POINTS[band]))
    if patient.get("gender") == "male":
        found.append(Points("male sex", RISK_POINTS["male sex"]))
    seen: set[str] = set()
    for condition in _resources(prefetch.get("conditions")):
        status = {c.get("code") for c in _codings(condition.get("clinicalStatus"))}
        if status & {"resolved", "inactive", "remission"}:
            continue
        for coding in _codings(condition.get("code")):
            finding = CONDITION_FINDINGS.get(str(coding.get("code")))
            if finding and finding not in seen:
                seen.add(finding)
                found.append(Points(finding, RISK_POINTS[finding]))
    observations = _resources(prefetch.get("observations"))
    smoking = _latest(observations, "72166-2")
    smoking_codes = {c.get("code") for c in _codings((smoking or {}).get("valueCodeableConcept"))}
    if smoking_codes & {"449868002", "77176002", "428041000124106", "428071000124103"}:
        found.append(Points("current smoker", RISK_POINTS["current smoker"]))
    elif smoking_codes & {"8517006"}:
        found.append(Points("former smoker", RISK_POINTS["former smoker"]))
    systolic = _number(_latest(observations, "8480-6"))
    if systolic is not None and systolic >= 140:
        found.append(Points("latest systolic blood pressure 140 mmHg or more", 1))
    hba1c = _number(_latest(observations, "4548-4"))
    if hba1c is not None and hba1c >= 8:
        found.append(Points("latest HbA1c 8% or more", 1))
    return sum(p.points for p in found), found


def ai_risk_model(request: dict[str, Any], today: date | None = None) -> list[dict[str, Any]]:
    prefetch = request.get("prefetch") or {}
    if not isinstance(prefetch.get("patient"), dict):
        return []  # the patient was not prefetched: nothing to score (a real service would read the FHIR server)
    context = request.get("context") or {}
    score, found = risk_score(prefetch, today or date.today())
    level = "high" if score >= HIGH_RISK else "moderate" if score >= MODERATE_RISK else "low"
    inputs = "\n".join(f"| {p.what} | +{p.points} |" for p in found) or "| (no risk findings) | 0 |"
    card: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "summary": f"Demo AI risk model: {level} 10-year cardiovascular risk (score {score})",
        "indicator": "warning" if level == "high" else "info",
        "detail": (
            "**Demo AI model: not a validated clinical tool. Review it before acting on it.**\n\n"
            f"Points score {score} (low under {MODERATE_RISK}, moderate {MODERATE_RISK}-{HIGH_RISK - 1}, "
            f"high {HIGH_RISK} or more), from:\n\n| finding | points |\n|---|---|\n{inputs}\n\n"
            "What this model does not look at: the current medication list, allergies, pregnancy, and whether "
            "the patient is in the age range (40-79) it was made for."
        ),
        "source": {
            "label": "Demo AI risk model (ehr-sandbox)",
            "topic": {"system": OVERRIDE_SYSTEM, "code": "ai-risk", "display": "AI-generated risk estimate"},
        },
        "overrideReasons": _reasons(
            ("already-treated", "Patient is already on this therapy"),
            ("inputs-wrong", "The model's inputs are wrong or out of date"),
            ("not-appropriate", "Not appropriate for this patient"),
            ("discuss-first", "Will discuss with the patient first"),
        ),
    }
    if level == "high":
        order: dict[str, Any] = {
            "resourceType": "MedicationRequest",
            "status": "draft",
            "intent": "order",
            "medicationCodeableConcept": ATORVASTATIN,
            "subject": {"reference": f"Patient/{context.get('patientId')}"},
            "dosageInstruction": [{"text": "Take 1 tablet by mouth at bedtime"}],
        }
        if context.get("encounterId"):
            order["encounter"] = {"reference": f"Encounter/{context['encounterId']}"}
        card["selectionBehavior"] = "at-most-one"
        card["suggestions"] = [
            {
                "label": "Start atorvastatin 20 mg daily (draft order)",
                "uuid": str(uuid.uuid4()),
                "isRecommended": True,
                "actions": [{"type": "create", "description": "Draft an atorvastatin 20 mg order", "resource": order}],
            }
        ]
    return [card]


# ---- HTTP ----------------------------------------------------------------------------------------------------

router = APIRouter()
_BY_ID = {s.id: s for s in SERVICES}


def answer(service_id: str, request: dict[str, Any]) -> list[dict[str, Any]]:
    if service_id == "penicillin-allergy-order-select":
        return penicillin_allergy(request, selected_only=True)
    if service_id == "penicillin-allergy-order-sign":
        return penicillin_allergy(request, selected_only=False)
    if service_id == "duplicate-order":
        return duplicate_order(request)
    return ai_risk_model(request)


async def _json(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        return None


@router.get("/cds-services")
async def discovery() -> Response:
    return JSONResponse({"services": [s.to_json() for s in SERVICES]})


@router.post("/cds-services/{service_id}")
async def call_service(service_id: str, request: Request) -> Response:
    service = _BY_ID.get(service_id)
    if service is None:
        return JSONResponse({"error": f"No CDS service '{service_id}'"}, 404)
    body = await _json(request)
    if not isinstance(body, dict) or body.get("hook") != service.hook or not isinstance(body.get("context"), dict):
        return JSONResponse({"error": f"Expected a {service.hook} hook request (JSON with hook and context)"}, 400)
    return JSONResponse({"cards": answer(service_id, body)})


@router.post("/cds-services/{service_id}/feedback")
async def feedback(service_id: str, request: Request) -> Response:
    if service_id not in _BY_ID:
        return JSONResponse({"error": f"No CDS service '{service_id}'"}, 404)
    body = await _json(request)
    items = body.get("feedback") if isinstance(body, dict) else None
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and i.get("card") and i.get("outcome") in ("accepted", "overridden") for i in items
    ):
        return JSONResponse({"error": "Expected {feedback: [{card, outcome, outcomeTimestamp, ...}]}"}, 400)
    return JSONResponse({})


def demo_app() -> FastAPI:
    """The demo services as an ASGI app of their own: what the client calls in-process."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.include_router(router)
    return app
