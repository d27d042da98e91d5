"""CDS Hooks in the chart: patient-view cards when a chart opens, order-select on "Check order" and order-sign on
"Sign order", a critical card that must be accepted or overridden before the order is written, suggestions
accepted through the one write path with feedback to the service, stored drafts signed, SMART and absolute
links, and services that fail without breaking the chart."""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from starlette.responses import JSONResponse, Response

from sandbox.accounts.users import find_by_email
from sandbox.cdshooks import log
from sandbox.cdshooks.client import CdsClient
from sandbox.demo import Demo
from sandbox.store.schema import cds_calls, resource_versions, smart_launches
from tests.sandbox.auth.smart import REDIRECT, auth_base, authorize_params, pkce, redirected, register
from tests.web.chart.browser_form import form_values
from tests.web.chart.conftest import sign_in

CHEST_PAIN, DIABETES = "chest-pain-cardiology", "diabetes-uncontrolled"
AMOXICILLIN = {"medication": "308182", "dose": "250", "dose_unit": "mg", "route": "26643006", "frequency": "3"}


def chart(sandbox: str, patient: str = CHEST_PAIN) -> str:
    return f"/chart/{sandbox}/patients/{patient}"


def order_form(sandbox: str, form: str = "med-order") -> str:
    return f"{chart(sandbox)}/forms/{form}"


def cards(html: str) -> list[dict[str, str]]:
    """Each card on the page: indicator, service, hook, key, and the call its buttons name."""
    found = []
    for m in re.finditer(
        r'<article class="cds-card cds-(\w+)[^"]*" id="card-([^"]+)" data-indicator="\w+" '
        r'data-service="([^"]+)" data-hook="([^"]+)"(.*?)</article>',
        html,
        re.S,
    ):
        body = m.group(5)
        call = re.search(r'value="(?:accept|override):([^:]+):', body)
        found.append(
            {"indicator": m.group(1), "key": m.group(2), "service": m.group(3), "hook": m.group(4), "body": body}
            | ({"call": call.group(1)} if call else {})
        )
    return found


def post_order(client: TestClient, url: str, page: str, **extra: str) -> Any:
    """Post the order form again as the browser would: what the page holds, plus the fields and button given."""
    return client.post(url, data=form_values(page) | AMOXICILLIN | extra, follow_redirects=False)


def writes(app: FastAPI, sandbox: str, rtype: str = "MedicationRequest") -> list[tuple[str, dict[str, Any], str, str]]:
    """(id, the resource, actor, route) of each version of the type written in the sandbox, oldest first."""
    v = resource_versions.c
    with app.state.db.read() as conn:
        rows = conn.execute(
            select(v.id, v.content, v.actor, v.route)
            .where(v.layer_id == sandbox, v.resource_type == rtype)
            .order_by(v.last_updated, v.version_id)
        ).all()
    return [(r.id, orjson.loads(r.content) if r.content else {}, r.actor, r.route) for r in rows]


def hook_calls(app: FastAPI, sandbox: str, hook: str) -> int:
    c = cds_calls.c
    with app.state.db.read() as conn:
        query = select(func.count()).where(c.layer_id == sandbox, c.kind == "hook", c.hook == hook)
        return conn.execute(query).scalar_one()


def decisions(app: FastAPI, sandbox: str) -> list[log.Decision]:
    with app.state.db.read() as conn:
        return log.decisions(conn, sandbox)


def user_id(app: FastAPI, email: str) -> str:
    with app.state.db.read() as conn:
        found = find_by_email(conn, email)
    assert found is not None
    return found.id


def test_opening_the_chart_shows_the_patient_view_cards_and_its_sections_keep_them(
    client: TestClient, app: FastAPI, ada: str, ada_sandbox: str
) -> None:
    page = client.get(chart(ada_sandbox))
    assert page.status_code == 200
    shown = cards(page.text)
    assert [(c["service"], c["indicator"], c["hook"]) for c in shown] == [("ai-risk-model", "warning", "patient-view")]
    body = shown[0]["body"]
    assert "Demo AI risk model: high 10-year cardiovascular risk" in body
    assert '<p class="cds-badge">Warning' in body
    assert "<table>" in body and "<strong>Demo AI model" in body  # the detail's Markdown, rendered
    assert "Source: Demo AI risk model (ehr-sandbox)" in body
    assert "Accept: Start atorvastatin 20 mg daily (draft order)" in body
    assert '<option value="already-treated">Patient is already on this therapy</option>' in body
    assert hook_calls(app, ada_sandbox, "patient-view") == 1

    # The chart's sections show the same card (the newest patient-view) without calling the services again.
    medications = client.get(f"{chart(ada_sandbox)}/medications").text
    assert [c["key"] for c in cards(medications)] == [shown[0]["key"]]
    assert hook_calls(app, ada_sandbox, "patient-view") == 1


def test_an_amoxicillin_order_for_an_allergic_patient_needs_the_critical_card_decided_before_it_is_signed(
    client: TestClient, app: FastAPI, ada: str, ada_sandbox: str
) -> None:
    url = order_form(ada_sandbox)
    blank = client.get(url).text
    assert 'name="draft_id"' in blank and "Sign order" in blank and "Check order" in blank
    before = writes(app, ada_sandbox)

    # Check order: order-select on the draft; the critical card shows on the form, nothing is written.
    checked = post_order(client, url, blank, step="check")
    assert checked.status_code == 200
    (select_card,) = cards(checked.text)
    assert (select_card["service"], select_card["indicator"]) == ("penicillin-allergy-order-select", "critical")
    assert (
        'role="alert"' in select_card["body"]
        and "Penicillin allergy: amoxicillin 250 mg oral capsule is a penicillin" in checked.text
    )
    assert writes(app, ada_sandbox) == before

    # Sign order: order-sign's critical card stops the signing.
    stopped = post_order(client, url, checked.text, step="sign")
    assert stopped.status_code == 409
    assert "Not signed: accept a suggestion of each critical alert" in stopped.text
    sign_card = next(c for c in cards(stopped.text) if c["service"] == "penicillin-allergy-order-sign")
    assert writes(app, ada_sandbox) == before

    # An override of a critical card needs a reason: refused, shown on the card, nothing recorded.
    decide = f"override:{sign_card['call']}:{sign_card['key']}"
    refused = post_order(client, url, stopped.text, cds_decide=decide)
    assert refused.status_code == 400
    assert f'id="card-{sign_card["key"]}-error" role="alert">Say why you override a critical alert' in refused.text
    assert refused.text.count("Say why you override") == 1
    assert decisions(app, ada_sandbox) == [] and writes(app, ada_sandbox) == before

    overridden = post_order(
        client, url, refused.text, cds_decide=decide, **{f"cds_reason_{sign_card['key']}": "tolerated-before"}
    )
    assert overridden.status_code == 200
    assert "Overridden: Patient has taken this drug before without a reaction" in overridden.text
    (decision,) = decisions(app, ada_sandbox)
    assert (decision.outcome, decision.service_id, decision.feedback) == (
        "overridden",
        "penicillin-allergy-order-sign",
        "sent",
    )
    assert decision.actor == f"user:{user_id(app, 'ada@demo.invalid')}"
    with app.state.db.read() as conn:
        (feedback,) = log.calls(conn, ada_sandbox, kind="feedback")
    assert feedback.status == "ok" and feedback.request["feedback"][0]["outcome"] == "overridden"
    assert feedback.request["feedback"][0]["overrideReason"]["reason"]["code"] == "tolerated-before"

    # Deciding the same card twice is refused.
    again = post_order(client, url, overridden.text, cds_decide=decide)
    assert again.status_code == 409 and "accepted or overridden already" in again.text

    # Signed again, unchanged: no service is asked again, and the order is written with the draft's id.
    draft_id = form_values(overridden.text)["draft_id"]
    signed = post_order(client, url, overridden.text, step="sign")
    assert signed.status_code == 303, signed.text
    assert signed.headers["location"].startswith(f"{chart(ada_sandbox)}/medications?saved=")
    assert hook_calls(app, ada_sandbox, "order-sign") == 1
    rid, order, actor, route = writes(app, ada_sandbox)[-1]
    assert (rid, order["status"], route) == (draft_id, "active", "web-ui")
    assert actor == f"user:{user_id(app, 'ada@demo.invalid')}"

    # The same draft cannot be signed twice (a double submit).
    twice = post_order(client, url, overridden.text, step="sign")
    assert twice.status_code == 422 and "signed already" in twice.text
    assert len(writes(app, ada_sandbox)) == len(before) + 1


def test_a_changed_draft_is_asked_about_again_at_signing(
    client: TestClient, app: FastAPI, ada: str, ada_sandbox: str
) -> None:
    url = order_form(ada_sandbox)
    stopped = post_order(client, url, client.get(url).text, step="sign")
    assert stopped.status_code == 409
    # The dose changed after the card: order-sign runs again for the new draft, and stops it again.
    changed = post_order(client, url, stopped.text, step="sign", dose="500")
    assert changed.status_code == 409
    assert hook_calls(app, ada_sandbox, "order-sign") == 2


def override_at_check(client: TestClient, url: str) -> Any:
    """Check order on an amoxicillin draft, then override its allergy card with a reason and a comment."""
    checked = post_order(client, url, client.get(url).text, step="check")
    (card,) = cards(checked.text)
    overridden = post_order(
        client,
        url,
        checked.text,
        cds_decide=f"override:{card['call']}:{card['key']}",
        **{f"cds_reason_{card['key']}": "tolerated-before", f"cds_comment_{card['key']}": "took it in 2020"},
    )
    assert overridden.status_code == 200 and "Overridden: Patient has taken this drug before" in overridden.text
    return overridden


@pytest.mark.parametrize("changed", [{}, {"dose": "500"}], ids=["unchanged", "dose changed"])
def test_an_alert_overridden_at_check_order_holds_through_signing_that_order(
    client: TestClient, app: FastAPI, ada: str, ada_sandbox: str, changed: dict[str, str]
) -> None:
    url = order_form(ada_sandbox)
    overridden = override_at_check(client, url)

    # Signing asks order-sign, whose card is the same alert about the same order: the documented override holds
    # (recorded on that card too, with its feedback), and the order is signed without asking again.
    signed = post_order(client, url, overridden.text, step="sign", **changed)
    assert signed.status_code == 303, signed.text
    assert hook_calls(app, ada_sandbox, "order-sign") == 1
    rid, order, _actor, _route = writes(app, ada_sandbox)[-1]
    assert (rid, order["status"]) == (form_values(overridden.text)["draft_id"], "active")
    assert order["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] == float(changed.get("dose", 250))
    by_service = {d.service_id: d for d in decisions(app, ada_sandbox)}
    assert sorted(by_service) == ["penicillin-allergy-order-select", "penicillin-allergy-order-sign"]
    first, carried = by_service["penicillin-allergy-order-select"], by_service["penicillin-allergy-order-sign"]
    assert carried.outcome == "overridden" and carried.override_reason == first.override_reason
    assert carried.override_reason == {
        "reason": {
            "system": "urn:ehr-sandbox:cds-override-reason",
            "code": "tolerated-before",
            "display": "Patient has taken this drug before without a reaction",
        },
        "userComment": "took it in 2020",
    }
    assert carried.actor == first.actor == f"user:{user_id(app, 'ada@demo.invalid')}"
    assert carried.feedback == "sent"


def test_an_override_at_check_order_does_not_hold_for_another_alert_or_another_order(
    client: TestClient, app: FastAPI, ada: str, ada_sandbox: str
) -> None:
    url = order_form(ada_sandbox)
    overridden = override_at_check(client, url)

    # Another drug after the override: the alert at signing is about that drug, so it must be decided anew.
    stopped = post_order(client, url, overridden.text, step="sign", medication="308191")
    assert stopped.status_code == 409 and "Not signed: accept a suggestion of each critical alert" in stopped.text
    sign_card = next(c for c in cards(stopped.text) if c["service"] == "penicillin-allergy-order-sign")
    assert "amoxicillin 500 mg oral capsule is a penicillin" in sign_card["body"] and "call" in sign_card
    assert [d.service_id for d in decisions(app, ada_sandbox)] == ["penicillin-allergy-order-select"]

    # Another order (a new form's draft) carrying the first form's overridden order-select call: not its override.
    other = form_values(client.get(url).text) | {"cds_select": form_values(overridden.text)["cds_select"]}
    elsewhere = client.post(url, data=other | AMOXICILLIN | {"step": "sign"}, follow_redirects=False)
    assert elsewhere.status_code == 409
    assert [d.service_id for d in decisions(app, ada_sandbox)] == ["penicillin-allergy-order-select"]
    assert [w for w in writes(app, ada_sandbox) if w[1].get("status") == "active"] == []


def test_a_draft_order_without_cards_is_signed_at_once(
    client: TestClient, app: FastAPI, ada: str, ada_sandbox: str
) -> None:
    url = order_form(ada_sandbox)
    aspirin = form_values(client.get(url).text) | AMOXICILLIN | {"medication": "243670", "dose": "81"}
    signed = client.post(url, data=aspirin, follow_redirects=False)  # no step: Enter in a field signs
    assert signed.status_code == 303
    assert writes(app, ada_sandbox)[-1][1]["medicationCodeableConcept"]["coding"][0]["code"] == "243670"
    assert hook_calls(app, ada_sandbox, "order-sign") == 1


def test_bad_decisions_are_refused_and_change_nothing(
    client: TestClient, app: FastAPI, demo: Demo, ada: str, ada_sandbox: str
) -> None:
    url = order_form(ada_sandbox)
    checked = post_order(client, url, client.get(url).text, step="check")
    (card,) = cards(checked.text)
    malformed = post_order(client, url, checked.text, cds_decide="accept:")
    assert malformed.status_code == 400 and "cannot be read" in malformed.text
    unknown = post_order(client, url, checked.text, cds_decide=f"override:no-such-call:{card['key']}")
    assert unknown.status_code == 404 and "not shown here" in unknown.text
    no_pick = post_order(client, url, checked.text, cds_decide=f"accept:{card['call']}:{card['key']}")
    assert no_pick.status_code == 400 and "Choose a suggestion" in no_pick.text
    bad_suggestion = post_order(client, url, checked.text, cds_decide=f"accept:{card['call']}:{card['key']}:nope")
    assert bad_suggestion.status_code == 422
    # A card on the chart: not the patient's, or of another user, cannot be acted on.
    chart_post = f"{chart(ada_sandbox, DIABETES)}/cds"
    other_patient = client.post(
        chart_post, data={"csrf_token": ada, "cds_decide": f"override:{card['call']}:{card['key']}"}
    )
    assert other_patient.status_code == 404
    assert decisions(app, ada_sandbox) == [] and writes(app, ada_sandbox, "MedicationRequest") == []

    client.cookies.clear()
    trainer = sign_in(client, demo, "trainer@demo.invalid")  # may open Ada's charts, but the card was shown to Ada
    data = {"csrf_token": trainer, "cds_decide": f"override:{card['call']}:{card['key']}", "cds_comment_x": "no"}
    not_theirs = client.post(f"{chart(ada_sandbox)}/cds", data=data)
    assert not_theirs.status_code == 404 and "not shown here" in not_theirs.text
    client.cookies.clear()
    ben = sign_in(client, demo, "ben@demo.invalid")
    not_his_sandbox = client.post(f"{chart(ada_sandbox)}/cds", data=data | {"csrf_token": ben})
    assert not_his_sandbox.status_code == 403
    assert decisions(app, ada_sandbox) == []


@pytest.mark.parametrize(
    "task", ["penicillin-alert-change-order", "ai-risk-card-right", "ai-risk-card-wrong"], ids=lambda t: t
)
def test_the_decision_support_tasks_pass_through_the_chart(
    client: TestClient, app: FastAPI, ada: str, ada_sandbox: str, task: str
) -> None:
    ref = f"cds-and-ai-review/{task}"
    started = client.post(
        "/assignments/start", data={"csrf_token": ada, "sandbox": ada_sandbox, "task": ref}, follow_redirects=False
    )
    assert started.status_code == 303
    opened = client.get(started.headers["location"])  # the chart opens: patient-view
    patient = CHEST_PAIN if task != "ai-risk-card-right" else DIABETES
    base = chart(ada_sandbox, patient)

    if task == "penicillin-alert-change-order":
        url = f"{base}/forms/med-order"
        checked = post_order(client, url, client.get(url, params={"task": ref}).text, step="check")
        (card,) = cards(checked.text)
        switch = re.search(r'value="(accept:[^"]+)">Accept: Replace with azithromycin', card["body"])
        assert switch is not None
        accepted = post_order(client, url, checked.text, cds_decide=switch.group(1))
        assert accepted.status_code == 303  # the suggestion removed the draft: the form is done
        section = client.get(accepted.headers["location"]).text
        assert 'id="saved">Saved: Accepted: Replace with azithromycin' in section
        (draft,) = [w for w in writes(app, ada_sandbox) if w[1].get("status") == "draft"]
        assert draft[3] == "cds-hooks" and draft[1]["medicationCodeableConcept"]["coding"][0]["code"] == "141918"
    elif task == "ai-risk-card-right":
        (card,) = cards(opened.text)
        accept = re.search(r'value="(accept:[^"]+)">Accept: Start atorvastatin', card["body"])
        assert accept is not None
        accepted = client.post(
            f"{base}/cds",
            data={"csrf_token": ada, "task": ref, "section": "summary", "cds_decide": accept.group(1)},
            follow_redirects=False,
        )
        assert accepted.status_code == 303 and f"{base}/medications?" in accepted.headers["location"]
        section = client.get(accepted.headers["location"]).text
        assert "Accepted: Start atorvastatin 20 mg daily (draft order)" in section  # the card shows its outcome
        (draft,) = [w for w in writes(app, ada_sandbox) if w[1].get("status") == "draft"]
    else:
        (card,) = cards(opened.text)
        overridden = client.post(
            f"{base}/cds",
            data={
                "csrf_token": ada,
                "task": ref,
                "section": "summary",
                "cds_decide": f"override:{card['call']}:{card['key']}",
                f"cds_reason_{card['key']}": "already-treated",
                f"cds_comment_{card['key']}": "takes atorvastatin 20 mg",
            },
            follow_redirects=False,
        )
        assert overridden.status_code == 303
        summary = client.get(overridden.headers["location"]).text
        assert "Overridden: Patient is already on this therapy (takes atorvastatin 20 mg)" in summary
        draft = None

    if draft is not None:  # the draft the suggestion made is signed from the chart
        link = f"{base}/drafts/MedicationRequest/{draft[0]}"
        assert f'href="{link}?task=' in section
        review = client.get(link, params={"task": ref})
        assert review.status_code == 200 and "Draft order:" in review.text
        signed = client.post(link, data={"csrf_token": ada, "task": ref, "step": "sign"}, follow_redirects=False)
        assert signed.status_code == 303, signed.text
        rid, order, _actor, route = writes(app, ada_sandbox)[-1]
        assert (rid, order["status"], route) == (draft[0], "active", "web-ui")
        assert client.get(link).status_code == 404  # signed: no longer a draft

    submitted = client.post(
        f"/chart/{ada_sandbox}/task/submit", data={"csrf_token": ada, "task": ref}, follow_redirects=False
    )
    result = client.get(submitted.headers["location"]).text
    assert ">Passed" in result.replace("\n", ""), result


def test_a_stored_draft_can_be_discarded_and_only_drafts_of_the_patient_are_shown(
    client: TestClient, app: FastAPI, ada: str, ada_sandbox: str
) -> None:
    (card,) = cards(client.get(chart(ada_sandbox, DIABETES)).text)
    accept = re.search(r'value="(accept:[^"]+)">Accept: Start atorvastatin', card["body"])
    assert accept is not None
    client.post(f"{chart(ada_sandbox, DIABETES)}/cds", data={"csrf_token": ada, "cds_decide": accept.group(1)})
    rid = writes(app, ada_sandbox)[-1][0]
    assert client.get(f"{chart(ada_sandbox)}/drafts/MedicationRequest/{rid}").status_code == 404  # another patient
    assert client.get(f"{chart(ada_sandbox, DIABETES)}/drafts/Patient/{rid}").status_code == 404
    link = f"{chart(ada_sandbox, DIABETES)}/drafts/MedicationRequest/{rid}"
    gone = client.post(link, data={"csrf_token": ada, "step": "discard"}, follow_redirects=False)
    assert gone.status_code == 303
    assert client.get(link).status_code == 404
    assert "Review and sign" not in client.get(f"{chart(ada_sandbox, DIABETES)}/medications").text


# ---- services of our own making: links, indicators, a suggestion with several actions, failures ----------------


def local_services(answers: dict[str, Any]) -> FastAPI:
    """Stands in for the built-in services (what CdsClient calls in-process): each service id answers as given:
    a list of cards, ``"500"``, ``"slow"`` or ``"boom"`` (an exception)."""
    services = FastAPI()

    @services.post("/cds-services/{service_id}")
    async def call(service_id: str, request: Request) -> Response:
        answer = answers.get(service_id, [])
        if answer == "500":
            return JSONResponse({"error": "down"}, 500)
        if answer == "slow":
            await asyncio.sleep(2)
        if answer == "boom":
            raise RuntimeError("the service broke")
        return JSONResponse({"cards": answer if isinstance(answer, list) else []})

    @services.post("/cds-services/{service_id}/feedback")
    async def feedback(service_id: str) -> Response:
        return JSONResponse({})

    return services


def use_services(app: FastAPI, answers: dict[str, Any], timeout: float = 5.0) -> None:
    state = app.state
    state.cds = CdsClient(state.db, state.fhir, state.views, local=local_services(answers), timeout=timeout)


def card(indicator: str, summary: str, **extra: Any) -> dict[str, Any]:
    return {"uuid": f"{indicator}-card", "summary": summary, "indicator": indicator, "source": {"label": "Vendor"}} | (
        extra
    )


def test_cards_show_by_indicator_with_links_that_launch_smart_apps(
    client: TestClient, app: FastAPI, ada: str, ada_sandbox: str
) -> None:
    register(client, "acme", "launch openid fhirUser patient/*.rs", launch_url="https://app.acme.example/launch")
    links = [
        {"label": "Open the risk app", "url": "https://app.acme.example/launch?from=cds", "type": "smart"},
        {"label": "Guideline", "url": "https://guidelines.example/statins", "type": "absolute"},
        {"label": "Unknown app", "url": "https://other.example/launch", "type": "smart"},
    ]
    detail = "Read <script>alert(1)</script> and [this](javascript:alert(1))."
    use_services(
        app,
        {
            "ai-risk-model": [
                card("info", "For your information", links=links, detail=detail),
                card("critical", "Stop and think"),
                card("warning", "Be careful", source={"label": "Vendor", "url": "https://vendor.example/about"}),
            ]
        },
    )
    page = client.get(chart(ada_sandbox)).text
    shown = cards(page)
    assert [c["indicator"] for c in shown] == ["critical", "warning", "info"]  # critical first
    assert [re.search(r'class="cds-badge">(\w+)', c["body"]).group(1) for c in shown] == [  # type: ignore[union-attr]
        "Critical",
        "Warning",
        "Info",
    ]
    assert 'role="alert"' in shown[0]["body"] and 'role="alert"' not in shown[2]["body"]
    assert '<a href="https://vendor.example/about" target="_blank" rel="noopener noreferrer">Vendor</a>' in page
    info = shown[2]["body"]
    assert "&lt;script&gt;" in info and "<script>alert" not in info and 'href="javascript' not in info
    launch = f"/chart/{ada_sandbox}/patients/{CHEST_PAIN}/launch/acme"
    assert re.search(
        rf'formaction="{launch}" formtarget="_blank" name="cds_link" value="[^"]+">Open the risk app', info
    )
    assert '<a href="https://guidelines.example/statins" target="_blank" rel="noopener noreferrer">Guideline' in info
    assert "Unknown app <small" in info and "cannot be launched here" in info

    # Overriding the critical card without a reason is refused: the chart again, the reason on the card.
    critical = shown[0]
    decide = {"csrf_token": ada, "section": "vitals", "cds_decide": f"override:{critical['call']}:{critical['key']}"}
    refused = client.post(f"{chart(ada_sandbox)}/cds", data=decide)
    assert refused.status_code == 400 and 'aria-current="page">Vitals</a>' in refused.text
    assert f'id="card-{critical["key"]}-error" role="alert">Say why' in refused.text
    assert decisions(app, ada_sandbox) == []
    done = client.post(f"{chart(ada_sandbox)}/cds", data=decide | {f"cds_comment_{critical['key']}": "seen"})
    assert done.status_code == 200 and "Overridden: seen" in done.text  # back to the section it was on

    # The SMART link's button posts the card's form to the chart's Launch app: an EHR launch of that app.
    launched = client.post(launch, data={"csrf_token": ada, "task": ""})
    assert launched.status_code == 200
    assert re.search(r'<iframe id="app-frame" src="https://app\.acme\.example/launch\?[^"]*launch=', launched.text)


def token_response(client: TestClient, sandbox: str, launched: Any) -> dict[str, Any]:
    """The token response an auto-approved app gets for the launch the chart redirected it to."""
    assert launched.status_code == 303, launched.text
    launch = parse_qs(urlsplit(launched.headers["location"]).query)["launch"][0]
    verifier, challenge = pkce()
    params = authorize_params("acme", sandbox, "launch patient/*.rs", challenge, launch=launch)
    code = redirected(client.get(f"{auth_base(sandbox)}/authorize", params=params, follow_redirects=False))["code"]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": "acme"}
    answer = client.post(f"{auth_base(sandbox)}/token", data=form | {"code_verifier": verifier})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_smart_links_app_context_reaches_the_token_response_of_that_launch_only(
    client: TestClient, app: FastAPI, demo: Demo, ada: str, ada_sandbox: str
) -> None:
    acme = "https://app.acme.example/launch"
    register(client, "acme", "launch patient/*.rs", launch_url=acme, auto_approve=True)
    register(client, "other", "launch patient/*.rs", launch_url="https://other.example/launch", auto_approve=True)
    context = '{"riskScore": 8, "why": "<b>as the card gave it</b>"}'
    links = [
        {"label": "Open with context", "url": acme, "type": "smart", "appContext": context},
        {"label": "Open without", "url": acme + "?from=cds", "type": "smart"},
        {"label": "Other app", "url": "https://other.example/launch", "type": "smart", "appContext": "not yours"},
    ]
    use_services(app, {"ai-risk-model": [card("info", "Risk", links=links)]})
    (shown,) = cards(client.get(chart(ada_sandbox)).text)
    refs = re.findall(r'name="cds_link" value="([^"]+)"', shown["body"])
    assert len(refs) == 3 and context not in shown["body"].replace("&#34;", '"')  # the page never carries it
    launch = f"{chart(ada_sandbox)}/launch/acme"

    def launched(**fields: str) -> Any:
        return client.post(launch, data={"csrf_token": ada, "mode": "tab"} | fields, follow_redirects=False)

    assert token_response(client, ada_sandbox, launched(cds_link=refs[0]))["appContext"] == context
    assert "appContext" not in token_response(client, ada_sandbox, launched(cds_link=refs[1]))
    assert "appContext" not in token_response(client, ada_sandbox, launched())  # the chart's own Launch app

    # A link the chart did not show this user for this patient, or that opens another app, launches nothing.
    call_id, key, _n = refs[0].split(":")
    with app.state.db.read() as conn:
        before = conn.execute(select(func.count()).select_from(smart_launches)).scalar_one()
    for bad in (f"{call_id}:{key}:7", f"{call_id}:{key}:x", f"{call_id}:nokey:0", f"nocall:{key}:0", "junk", refs[2]):
        assert launched(cds_link=bad).status_code == 404, bad
    other_app = client.post(
        f"{chart(ada_sandbox)}/launch/other", data={"csrf_token": ada, "cds_link": refs[0]}, follow_redirects=False
    )
    assert other_app.status_code == 404
    other_patient = client.post(
        f"{chart(ada_sandbox, DIABETES)}/launch/acme", data={"csrf_token": ada, "cds_link": refs[0]}
    )
    assert other_patient.status_code == 404
    with TestClient(app, base_url="http://testserver") as trainer:  # may open Ada's chart; the card was not his
        token = sign_in(trainer, demo, "trainer@demo.invalid")
        assert trainer.post(launch, data={"csrf_token": token, "cds_link": refs[0]}).status_code == 404
    with app.state.db.read() as conn:
        assert conn.execute(select(func.count()).select_from(smart_launches)).scalar_one() == before


def test_a_card_whose_suggestions_may_all_be_accepted_writes_each_as_the_user(
    client: TestClient, app: FastAPI, ada: str, ada_sandbox: str
) -> None:
    def problem(text: str) -> dict[str, Any]:
        condition = {"resourceType": "Condition", "subject": {"reference": f"Patient/{CHEST_PAIN}"}}
        resource = condition | {"code": {"text": text}}
        return {"type": "create", "description": f"Add {text}", "resource": resource}

    suggestions = [
        {"label": "Add obesity", "uuid": "s-obesity", "actions": [problem("Obesity")]},
        {"label": "Add prediabetes", "uuid": "s-prediabetes", "actions": [problem("Prediabetes")]},
    ]
    use_services(
        app, {"ai-risk-model": [card("info", "Problems to add", selectionBehavior="any", suggestions=suggestions)]}
    )
    (shown,) = cards(client.get(chart(ada_sandbox)).text)
    assert 'name="cds_pick_' in shown["body"]
    accepted = client.post(
        f"{chart(ada_sandbox)}/cds",
        data={
            "csrf_token": ada,
            "section": "problems",
            "cds_decide": f"accept:{shown['call']}:{shown['key']}",
            f"cds_pick_{shown['key']}": ["s-obesity", "s-prediabetes"],
        },
        follow_redirects=False,
    )
    assert accepted.status_code == 303 and "/problems?" in accepted.headers["location"]
    added = writes(app, ada_sandbox, "Condition")
    assert sorted(w[1]["code"]["text"] for w in added) == ["Obesity", "Prediabetes"]
    assert {(w[2], w[3]) for w in added} == {(f"user:{user_id(app, 'ada@demo.invalid')}", "cds-hooks")}
    (decision,) = decisions(app, ada_sandbox)
    assert decision.suggestions == ["s-obesity", "s-prediabetes"] and decision.feedback == "sent"


def test_a_warning_at_signing_is_shown_once_then_the_order_is_signed(
    client: TestClient, app: FastAPI, ada: str, ada_sandbox: str
) -> None:
    use_services(app, {"penicillin-allergy-order-sign": [card("warning", "Check the dose")]})
    url = order_form(ada_sandbox, "lab-order")
    page = client.get(url).text
    data = form_values(page) | {"test": "58410-2"}
    shown = client.post(url, data=data | {"step": "sign"}, follow_redirects=False)
    assert shown.status_code == 409 and "Not signed yet" in shown.text
    assert [c["indicator"] for c in cards(shown.text)] == ["warning"]
    signed = client.post(
        url, data=form_values(shown.text) | {"test": "58410-2", "step": "sign"}, follow_redirects=False
    )
    assert signed.status_code == 303
    assert writes(app, ada_sandbox, "ServiceRequest")[-1][1]["status"] == "active"


@pytest.mark.parametrize("failure", ["500", "slow", "boom"])
def test_a_failing_service_leaves_a_quiet_notice_and_the_chart_works(
    client: TestClient, app: FastAPI, ada: str, ada_sandbox: str, failure: str
) -> None:
    use_services(app, {"ai-risk-model": failure, "penicillin-allergy-order-sign": failure}, timeout=0.3)
    page = client.get(chart(ada_sandbox))
    assert page.status_code == 200 and 'id="banner"' in page.text
    expected = {"500": "answered with an error", "slow": "did not answer in time", "boom": "answered with an error"}
    notice = f"Decision support: the service ai-risk-model {expected[failure]}; the chart works without it."
    assert f'<p class="cds-notice" role="status">{notice}</p>' in page.text
    assert cards(page.text) == []
    # Signing does not wait on a service that fails: the order is written.
    url = order_form(ada_sandbox)
    signed = post_order(client, url, client.get(url).text, step="sign", medication="243670")
    assert signed.status_code == 303


def test_a_failure_of_the_client_itself_leaves_the_chart_working(
    client: TestClient, app: FastAPI, ada: str, ada_sandbox: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(app.state.cds, "patient_view", broken)
    page = client.get(chart(ada_sandbox))
    assert page.status_code == 200
    assert "Decision support could not be reached just now; the chart works without it." in page.text
