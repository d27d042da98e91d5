"""Card validation (CDS Hooks 2.0 response rules), prefetch tokens, and the demo AI model's points."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from sandbox.cdshooks.cards import check_response
from sandbox.cdshooks.demo_services import ai_risk_model, penicillin_allergy, risk_score
from sandbox.cdshooks.hooks import HookUser, build_context, token_values
from sandbox.cdshooks.prefetch import fill

GOOD: dict[str, Any] = {
    "uuid": "c1",
    "summary": "Check this",
    "indicator": "warning",
    "source": {"label": "Vendor", "url": "https://vendor.example", "topic": {"code": "t", "display": "Topic"}},
    "selectionBehavior": "any",
    "suggestions": [
        {
            "label": "Fix it",
            "uuid": "s1",
            "actions": [
                {"type": "create", "description": "Add", "resource": {"resourceType": "Condition"}},
                {"type": "update", "description": "Change", "resource": {"resourceType": "Condition", "id": "c"}},
                {"type": "delete", "description": "Remove", "resourceId": "MedicationRequest/m1"},
            ],
        }
    ],
    "overrideReasons": [{"code": "r", "system": "urn:x", "display": "Reason"}],
    "links": [
        {"label": "Docs", "url": "https://vendor.example/docs", "type": "absolute"},
        {"label": "App", "url": "https://vendor.example/launch", "type": "smart", "appContext": "{}"},
    ],
}


def test_a_valid_card_is_kept_with_a_key_of_ours() -> None:
    checked = check_response({"cards": [GOOD], "systemActions": [{"type": "delete", "resourceId": "Task/1"}]})
    assert checked.problems == []
    [card] = checked.cards
    assert card["key"] and card["uuid"] == "c1" and card["summary"] == "Check this"
    assert checked.system_actions == [{"type": "delete", "resourceId": "Task/1"}]


def _broken(**changes: Any) -> dict[str, Any]:
    card = {**GOOD, **changes}
    return {k: v for k, v in card.items() if v is not None}


@pytest.mark.parametrize(
    ("card", "problem"),
    [
        (_broken(summary="x" * 141), "summary is 141 characters; at most 140"),
        (_broken(summary=None), "summary is required"),
        (_broken(indicator="hard-stop"), "indicator must be one of info, warning, critical"),
        (_broken(source=None), "source is required"),
        (_broken(source={"label": "x", "url": "/relative"}), "source.url must be an absolute"),
        (_broken(selectionBehavior=None), "needs selectionBehavior"),
        (_broken(suggestions=[{"uuid": "s"}]), "suggestions[0].label is required"),
        (
            _broken(suggestions=[{"label": "x", "actions": [{"type": "upsert", "description": "d"}]}]),
            "suggestions[0].actions[0].type must be create, update or delete",
        ),
        (
            _broken(
                suggestions=[
                    {
                        "label": "x",
                        "actions": [{"type": "update", "description": "d", "resource": {"resourceType": "Condition"}}],
                    }
                ]
            ),
            "an update action's resource needs its id",
        ),
        (
            _broken(suggestions=[{"label": "x", "actions": [{"type": "delete", "description": "d"}]}]),
            "a delete action needs resourceId as Type/id",
        ),
        (
            _broken(suggestions=[{"label": "x", "actions": [{"type": "create", "resource": {"resourceType": "X"}}]}]),
            "description is required",
        ),
        (_broken(suggestions=[{"label": "a", "uuid": "u"}, {"label": "b", "uuid": "u"}]), "repeats"),
        (_broken(overrideReasons=[{"code": "r"}]), "overrideReasons[0].display is required"),
        (_broken(links=[{"label": "x", "url": "https://a.example", "type": "iframe"}]), "absolute or smart"),
        (
            _broken(links=[{"label": "x", "url": "https://a.example", "type": "absolute", "appContext": "{}"}]),
            "appContext is only for smart links",
        ),
    ],
)
def test_a_card_that_breaks_a_rule_is_dropped_and_the_reason_kept(card: dict[str, Any], problem: str) -> None:
    checked = check_response({"cards": [card, {**GOOD, "uuid": "c2"}]})
    assert [c["uuid"] for c in checked.cards] == ["c2"]
    assert len(checked.problems) == 1 and problem in checked.problems[0], checked.problems


@pytest.mark.parametrize("body", [None, [], "cards", {"card": []}, {"cards": {}}])
def test_a_response_without_a_cards_array_gives_no_cards(body: Any) -> None:
    checked = check_response(body)
    assert checked.cards == [] and checked.problems == ['The response is not a JSON object with a "cards" array']


def test_cards_come_critical_first() -> None:
    cards = [{**GOOD, "indicator": i, "uuid": i} for i in ("info", "critical", "warning")]
    assert [c["indicator"] for c in check_response({"cards": cards}).cards] == ["critical", "warning", "info"]


def test_prefetch_tokens_are_root_level_context_fields_and_the_users_ids() -> None:
    user = HookUser("ana", "PractitionerRole/r1")
    context = build_context("patient-view", user, "p1", "e1")
    tokens = token_values(context, user)
    assert tokens == {
        "context.userId": "PractitionerRole/r1",
        "context.patientId": "p1",
        "context.encounterId": "e1",
        "userPractitionerRoleId": "r1",
    }
    assert fill("Observation?patient={{context.patientId}}&encounter={{ context.encounterId }}", tokens) == (
        "Observation?patient=p1&encounter=e1"
    )
    with pytest.raises(KeyError):
        fill("Patient/{{userPatientId}}", tokens)


def _bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def test_the_demo_ai_model_is_a_published_points_score() -> None:
    condition = lambda code: {"resourceType": "Condition", "code": {"coding": [{"code": code}]}}  # noqa: E731
    prefetch = {
        "patient": {"resourceType": "Patient", "gender": "male", "birthDate": "1960-06-30"},
        "conditions": _bundle(condition("38341003"), condition("44054006"), condition("38341003")),
        "observations": _bundle(
            {"resourceType": "Observation", "code": {"coding": [{"code": "4548-4"}]}, "valueQuantity": {"value": 8.2}},
            {
                "resourceType": "Observation",
                "code": {"coding": [{"code": "72166-2"}]},
                "valueCodeableConcept": {"coding": [{"code": "449868002"}]},
            },
        ),
    }
    score, found = risk_score(prefetch, date(2026, 6, 1))
    # age 65 (3) + male (1) + hypertension once (2) + diabetes (2) + HbA1c 8.2 (1) + current smoker (2)
    assert score == 11
    assert [p.what for p in found] == [
        "age 60-69",
        "male sex",
        "hypertension",
        "diabetes",
        "current smoker",
        "latest HbA1c 8% or more",
    ]
    [card] = ai_risk_model({"context": {"patientId": "p1"}, "prefetch": prefetch}, date(2026, 6, 1))
    assert card["indicator"] == "warning" and "score 11" in card["summary"]
    assert ai_risk_model({"context": {"patientId": "p1"}, "prefetch": {}}) == []  # nothing prefetched


def test_the_penicillin_check_ignores_a_resolved_allergy_and_other_drugs() -> None:
    allergy = {
        "resourceType": "AllergyIntolerance",
        "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "70618"}]},
    }
    order = {
        "resourceType": "MedicationRequest",
        "id": "o1",
        "medicationCodeableConcept": {"text": "Ampicillin 500 mg"},
    }
    request = {
        "context": {"draftOrders": _bundle(order), "selections": ["MedicationRequest/o1"]},
        "prefetch": {"allergies": _bundle(allergy)},
    }
    assert len(penicillin_allergy(request, selected_only=True)) == 1
    resolved = {**allergy, "clinicalStatus": {"coding": [{"code": "resolved"}]}}
    assert penicillin_allergy({**request, "prefetch": {"allergies": _bundle(resolved)}}, selected_only=True) == []
    request["context"]["selections"] = []
    assert penicillin_allergy(request, selected_only=True) == []
    assert len(penicillin_allergy(request, selected_only=False)) == 1
