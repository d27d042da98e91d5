"""The chart's service layer with the built-in demo services, on the training cases: hook calls, cards,
accepting suggestions through the one write path, overriding with a reason, feedback, and the log."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from sqlalchemy import select

from sandbox.cdshooks import log
from sandbox.cdshooks.client import CdsError
from sandbox.cdshooks.hooks import HookError, HookUser
from sandbox.store.schema import resource_versions
from tests.sandbox.cdshooks.conftest import (
    AMOXICILLIN,
    ANA,
    CHEST_PAIN,
    CHILD,
    DIABETES,
    ROOT,
    SANDBOX,
    draft,
    run,
)


def _layer_log(app: Any, **filters: Any) -> list[log.Call]:
    with app.state.db.read() as conn:
        return log.calls(conn, SANDBOX, **filters)


def test_patient_view_scores_the_demo_ai_model_from_the_chart(cases_app):
    cds = cases_app.state.cds
    result = run(cds.patient_view(SANDBOX, ANA, CHEST_PAIN, root=ROOT))
    assert [(c.service_id, c.status) for c in result.calls] == [("ai-risk-model", "ok")]
    [card] = result.cards
    # 58 (2) + male (1) + hypertension (2) + hyperlipidemia (1) + former smoker (1) + systolic 152 (1)
    assert card["summary"] == "Demo AI risk model: high 10-year cardiovascular risk (score 8)"
    assert card["indicator"] == "warning"
    assert "Demo AI model: not a validated clinical tool" in card["detail"]
    assert "| former smoker | +1 |" in card["detail"]
    assert (
        card["suggestions"][0]["actions"][0]["resource"]["medicationCodeableConcept"]["coding"][0]["code"] == "617310"
    )
    assert card["call"] == result.calls[0].call_id and card["key"]

    child = run(cds.patient_view(SANDBOX, ANA, CHILD, root=ROOT)).cards
    assert [(c["indicator"], "suggestions" in c) for c in child] == [("info", False)]
    assert "score 0" in child[0]["summary"]


def test_the_request_carries_hook_instance_fhir_server_context_and_filled_prefetch(cases_app):
    cds = cases_app.state.cds
    result = run(cds.patient_view(SANDBOX, HookUser("ana", "Practitioner/p1"), CHEST_PAIN, "enc-1", root=ROOT))
    [entry] = _layer_log(cases_app, kind="hook")
    request = entry.request
    assert request["hook"] == "patient-view" and request["hookInstance"] == result.hook_instance
    assert request["fhirServer"] == f"{ROOT}/sandboxes/{SANDBOX}/fhir"
    assert request["context"] == {"userId": "Practitioner/p1", "patientId": CHEST_PAIN, "encounterId": "enc-1"}
    assert "fhirAuthorization" not in request  # no token issuer wired
    assert request["prefetch"]["patient"]["id"] == CHEST_PAIN
    observations = request["prefetch"]["observations"]
    assert observations["type"] == "searchset" and "next" not in {link["relation"] for link in observations["link"]}
    assert entry.actor == "user:ana" and entry.patient_id == CHEST_PAIN and entry.duration_ms > 0


def test_order_select_on_amoxicillin_for_the_penicillin_allergic_patient_is_a_critical_card(cases_app):
    cds = cases_app.state.cds
    result = run(cds.order_select(SANDBOX, ANA, CHEST_PAIN, None, [AMOXICILLIN], root=ROOT))
    assert {c.service_id for c in result.calls} == {"penicillin-allergy-order-select", "duplicate-order"}
    [card] = result.cards
    assert card["indicator"] == "critical"
    assert card["summary"] == "Penicillin allergy: Amoxicillin 250 MG Oral Capsule is a penicillin"
    assert "hives" in card["detail"].lower() or "wheal" in card["detail"].lower()
    assert card["selectionBehavior"] == "at-most-one"

    signed = run(cds.order_sign(SANDBOX, ANA, CHEST_PAIN, None, [AMOXICILLIN], root=ROOT))
    assert [c["service"] for c in signed.cards] == ["penicillin-allergy-order-sign"]
    # The same order for a patient without the allergy: no card.
    other = run(cds.order_select(SANDBOX, ANA, DIABETES, None, [draft("308182", "Amoxicillin", DIABETES)], root=ROOT))
    assert other.cards == []


def test_a_duplicate_of_an_active_order_is_a_warning(cases_app):
    statin = draft("617310", "atorvastatin 20 MG Oral Tablet")  # Mr Okafor takes atorvastatin already
    result = run(cases_app.state.cds.order_select(SANDBOX, ANA, CHEST_PAIN, None, [statin], root=ROOT))
    [card] = result.cards
    assert card["indicator"] == "warning" and card["summary"].startswith("Duplicate order: atorvastatin")
    assert card["suggestions"][0]["actions"] == [
        {
            "type": "delete",
            "description": "Remove the atorvastatin 20 MG Oral Tablet order",
            "resourceId": "MedicationRequest/draft-1",
        }
    ]


def test_accepting_a_suggestion_writes_through_the_one_write_path_as_the_user(cases_app):
    app = cases_app
    cds = app.state.cds
    [card] = run(cds.order_select(SANDBOX, ANA, CHEST_PAIN, None, [AMOXICILLIN], root=ROOT)).cards
    replace = card["suggestions"][0]
    decision = run(cds.accept(SANDBOX, ANA, card["call"], card["key"], [replace["uuid"]], root=ROOT))
    assert decision.outcome == "accepted" and decision.suggestions == [replace["uuid"]]
    assert decision.resources[0] == "MedicationRequest/draft-1"  # the draft was never stored: nothing to delete
    created = decision.resources[1].split("/_history")[0]
    with app.state.db.read() as conn:
        v = resource_versions.c
        row = conn.execute(
            select(v.actor, v.route, v.content).where(v.layer_id == SANDBOX, v.id == created.split("/")[1])
        ).one()
    assert (row.actor, row.route) == ("user:ana", "cds-hooks")
    written = orjson.loads(row.content)
    assert written["medicationCodeableConcept"]["coding"][0]["code"] == "141918"  # azithromycin
    assert written["status"] == "draft" and written["subject"] == {"reference": f"Patient/{CHEST_PAIN}"}
    assert decision.feedback == "sent"
    [feedback] = _layer_log(app, kind="feedback")
    assert feedback.status == "ok" and feedback.url.endswith("/cds-services/penicillin-allergy-order-select/feedback")
    sent = feedback.request["feedback"][0]
    assert sent["card"] == card["uuid"] and sent["outcome"] == "accepted"
    assert sent["acceptedSuggestions"] == [{"id": replace["uuid"]}] and sent["outcomeTimestamp"].endswith("Z")


def test_overriding_with_one_of_the_cards_reasons_sends_feedback(cases_app):
    cds = cases_app.state.cds
    [card] = run(cds.patient_view(SANDBOX, ANA, CHEST_PAIN, root=ROOT)).cards
    decision = run(cds.override(SANDBOX, ANA, card["call"], card["key"], "already-treated", " on it ", root=ROOT))
    assert decision.outcome == "overridden" and decision.has_reason
    assert decision.override_reason == {
        "reason": {
            "system": "urn:ehr-sandbox:cds-override-reason",
            "code": "already-treated",
            "display": "Patient is already on this therapy",
        },
        "userComment": "on it",
    }
    [feedback] = _layer_log(cases_app, kind="feedback")
    assert feedback.request["feedback"][0]["overrideReason"] == decision.override_reason


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ({"card_key": "nope"}, 404, "has no card"),
        ({"call_id": "nope"}, 404, "No hook call"),
        ({"user": HookUser("ben")}, 403, "Only the user"),
        ({"suggestions": []}, 400, "at least one"),
        ({"suggestions": ["a", "b"]}, 400, "at most one"),
        ({"suggestions": ["unknown"]}, 422, "no suggestion 'unknown'"),
    ],
)
def test_a_bad_accept_is_refused_and_writes_nothing(cases_app, change, status, message):
    cds = cases_app.state.cds
    [card] = run(cds.order_select(SANDBOX, ANA, CHEST_PAIN, None, [AMOXICILLIN], root=ROOT)).cards
    args = {
        "call_id": card["call"],
        "card_key": card["key"],
        "user": ANA,
        "suggestions": [card["suggestions"][0]["uuid"]],
    }
    args.update(change)
    with pytest.raises(CdsError) as caught:
        run(cds.accept(SANDBOX, args["user"], args["call_id"], args["card_key"], args["suggestions"], root=ROOT))
    assert caught.value.status == status and message in caught.value.message
    with cases_app.state.db.read() as conn:
        assert log.decisions(conn, SANDBOX) == []
        assert conn.execute(select(resource_versions.c.id).where(resource_versions.c.layer_id == SANDBOX)).all() == []


def test_a_card_is_decided_once_and_override_reasons_must_be_the_cards(cases_app):
    cds = cases_app.state.cds
    [card] = run(cds.patient_view(SANDBOX, ANA, CHEST_PAIN, root=ROOT)).cards
    with pytest.raises(CdsError, match="not one of this card's override reasons"):
        run(cds.override(SANDBOX, ANA, card["call"], card["key"], "because", root=ROOT))
    run(cds.override(SANDBOX, ANA, card["call"], card["key"], root=ROOT))
    with pytest.raises(CdsError) as caught:
        run(cds.accept(SANDBOX, ANA, card["call"], card["key"], [card["suggestions"][0]["uuid"]], root=ROOT))
    assert caught.value.status == 409


def test_bad_hook_input_from_the_chart_is_a_hook_error(cases_app):
    cds = cases_app.state.cds
    with pytest.raises(HookError, match="at least one draft order"):
        run(cds.order_sign(SANDBOX, ANA, CHEST_PAIN, None, [], root=ROOT))
    with pytest.raises(HookError, match="selections"):
        run(cds.order_select(SANDBOX, ANA, CHEST_PAIN, None, [AMOXICILLIN], ["MedicationRequest/other"], root=ROOT))
    with pytest.raises(HookError, match="FHIR resource"):
        run(cds.order_sign(SANDBOX, ANA, CHEST_PAIN, None, ["not a resource"], root=ROOT))  # type: ignore[list-item]


def test_removing_the_builtin_services_from_a_sandbox_stops_their_cards(cases_app, client, admin_headers):
    r = client.delete(f"/admin/sandboxes/{SANDBOX}/cds-services/builtin", headers=admin_headers)
    assert r.status_code == 204
    assert run(cases_app.state.cds.patient_view(SANDBOX, ANA, CHEST_PAIN, root=ROOT)).calls == []
    r = client.post(f"/admin/sandboxes/{SANDBOX}/cds-services", json={"builtin": True}, headers=admin_headers)
    assert r.status_code == 201 and r.json()["builtin"] is True
    assert len(run(cases_app.state.cds.patient_view(SANDBOX, ANA, CHEST_PAIN, root=ROOT)).cards) == 1


def test_a_token_issuer_adds_fhir_authorization_and_the_log_masks_the_token(cases_app):
    cds = cases_app.state.cds
    asked = []

    def issue(request):  # what the SMART authorization server will do; here a fixed token
        asked.append(request)
        return {
            "access_token": "secret-token-1234",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": request.scope,
            "subject": request.service_id,
        }

    cds.token_issuer = issue
    run(cds.patient_view(SANDBOX, ANA, CHEST_PAIN, root=ROOT))
    assert asked[0].scope == "patient/Condition.rs patient/Observation.rs patient/Patient.rs"
    [entry] = _layer_log(cases_app, kind="hook")
    assert entry.request["fhirAuthorization"]["access_token"] == "...1234"
    assert entry.request["fhirAuthorization"]["subject"] == "ai-risk-model"


def test_the_default_sandbox_is_served_at_fhir_and_an_unknown_patient_prefetches_null(app):
    result = run(app.state.cds.patient_view("default", ANA, "nobody", root=ROOT))
    assert [(c.service_id, c.status, c.cards) for c in result.calls] == [("ai-risk-model", "ok", [])]
    with app.state.db.read() as conn:
        [entry] = log.calls(conn, "default", kind="hook")
    assert entry.request["fhirServer"] == f"{ROOT}/fhir"
    assert entry.request["prefetch"] == {"patient": None, "conditions": None, "observations": None}
