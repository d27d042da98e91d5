"""A vendor's CDS service on a real local port: registering it by discovery URL through the admin API,
signed hook calls over HTTP, and what happens when the service or its discovery document misbehaves."""

from __future__ import annotations

from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select

from sandbox.cdshooks import log
from sandbox.cdshooks.client import CdsError
from sandbox.store.schema import resources
from tests.sandbox.cdshooks.conftest import ANA, CHEST_PAIN, ROOT, SANDBOX, run


def register(client: Any, headers: dict[str, str], url: str, **extra: Any) -> Any:
    return client.post(
        f"/admin/sandboxes/{SANDBOX}/cds-services", json={"discovery_url": url, **extra}, headers=headers
    )


def test_a_service_registered_by_discovery_url_is_called_with_a_signed_jwt(cases_app, client, admin_headers, vendor):
    r = register(client, admin_headers, vendor.base + "/cds-services")
    assert r.status_code == 201, r.text
    registration = r.json()
    assert registration["id"] == f"127-0-0-1-{vendor.port}" and registration["builtin"] is False
    assert registration["services"][0]["endpoint"] == vendor.base + "/cds-services/greeter"
    assert vendor.received[0][0] == "discovery"

    result = run(cases_app.state.cds.patient_view(SANDBOX, ANA, CHEST_PAIN, root=ROOT))
    calls = {c.service_id: c for c in result.calls}
    assert set(calls) == {"ai-risk-model", "greeter"}
    greeter = calls["greeter"]
    assert greeter.status == "ok" and [c["summary"] for c in greeter.cards] == ["Hello from the vendor"]
    assert "cards[1] dropped: indicator must be one of info, warning, critical" in greeter.error

    name, headers, body = vendor.received[-1]
    assert name == "greeter"
    assert body["prefetch"]["patient"]["id"] == CHEST_PAIN
    assert body["prefetch"]["allergies"]["entry"][0]["resource"]["resourceType"] == "AllergyIntolerance"
    assert body["prefetch"]["nothing"] is None  # a search that finds nothing is null
    assert "user" not in body["prefetch"]  # a token this call cannot fill: the key is left out

    keys = KeySet.import_key_set(client.get("/cds-hooks/jwks.json").json())
    token = jwt.decode(headers["authorization"].removeprefix("Bearer "), keys, algorithms=["ES384"])
    assert token.header["typ"] == "JWT" and token.header["kid"] == keys.keys[0].kid
    assert token.header["jku"] == ROOT + "/cds-hooks/jwks.json"
    claims = token.claims
    assert claims["iss"] == ROOT and claims["aud"] == vendor.base + "/cds-services/greeter"
    assert claims["exp"] > claims["iat"] and len(claims["jti"]) >= 32
    discovery_token = jwt.decode(
        vendor.received[0][1]["authorization"].removeprefix("Bearer "), keys, algorithms=["ES384"]
    )
    assert discovery_token.claims["aud"] == vendor.base + "/cds-services"
    assert discovery_token.claims["jti"] != claims["jti"]


def test_the_signing_key_persists_in_the_database(cases_app, settings, db):
    from sandbox.app import create_app

    first = cases_app.state.cds.signer.jwks()
    again = create_app(settings, db=db).state.cds.signer.jwks()
    assert first == again and first["keys"][0]["alg"] == "ES384" and "d" not in first["keys"][0]


@pytest.mark.parametrize("behaviour", ["garbage", "500", "slow", "drip", "huge"])
def test_a_failing_service_is_logged_and_gives_no_cards(cases_app, client, admin_headers, vendor, behaviour):
    register(client, admin_headers, vendor.base + "/cds-services")
    vendor.behaviour["greeter"] = behaviour
    cds = cases_app.state.cds
    cds.timeout = 0.5 if behaviour in ("slow", "drip") else 10  # the others must not time out on a busy machine
    result = run(cds.patient_view(SANDBOX, ANA, CHEST_PAIN, root=ROOT))
    greeter = next(c for c in result.calls if c.service_id == "greeter")
    expected = {"garbage": "invalid", "500": "http-error", "slow": "timeout", "drip": "timeout", "huge": "invalid"}
    expected = expected[behaviour]
    assert greeter.status == expected and greeter.cards == []
    assert [c["service"] for c in result.cards] == ["ai-risk-model"]  # the other service still answers
    entries = client.get(f"/admin/sandboxes/{SANDBOX}/cds-log?kind=hook", headers=admin_headers).json()["calls"]
    logged = next(e for e in entries if e["service"] == "greeter")
    assert logged["status"] == expected and logged["card_count"] == 0 and logged["error"]
    if behaviour == "500":
        assert logged["http_status"] == 500
        full = client.get(f"/admin/sandboxes/{SANDBOX}/cds-log/{logged['id']}", headers=admin_headers).json()
        assert full["response"] == '{"error":"boom"}' and full["request"]["hook"] == "patient-view"


def test_an_unreachable_service_is_logged(cases_app, client, admin_headers, vendor):
    register(client, admin_headers, vendor.base + "/cds-services")
    with cases_app.state.db.write() as conn:
        from sandbox.cdshooks.services import cds_registrations

        conn.execute(cds_registrations.update().values(discovery_url="http://127.0.0.1:9/cds-services"))
    result = run(cases_app.state.cds.patient_view(SANDBOX, ANA, CHEST_PAIN, root=ROOT))
    greeter = next(c for c in result.calls if c.service_id == "greeter")
    assert greeter.status == "unreachable" and greeter.cards == []


def test_a_malformed_suggestion_drops_the_card(cases_app, client, admin_headers, vendor):
    register(client, admin_headers, vendor.base + "/cds-services")
    vendor.behaviour["greeter"] = "bad-suggestion"
    result = run(cases_app.state.cds.patient_view(SANDBOX, ANA, CHEST_PAIN, root=ROOT))
    greeter = next(c for c in result.calls if c.service_id == "greeter")
    assert greeter.cards == [] and "actions[0].type must be create, update or delete" in greeter.error


def test_a_suggestion_that_writes_into_another_patients_chart_is_refused(cases_app, client, admin_headers, vendor):
    register(client, admin_headers, vendor.base + "/cds-services")
    vendor.behaviour["greeter"] = "write-other-patient"
    cds = cases_app.state.cds
    card = next(
        c for c in run(cds.patient_view(SANDBOX, ANA, CHEST_PAIN, root=ROOT)).cards if c["service"] == "greeter"
    )
    with pytest.raises(CdsError, match="of Patient/diabetes-uncontrolled, not of Patient/chest-pain-cardiology"):
        run(cds.accept(SANDBOX, ANA, card["call"], card["key"], ["s-1"], root=ROOT))
    with cases_app.state.db.read() as conn:
        assert conn.execute(select(resources.c.id).where(resources.c.layer_id == SANDBOX)).all() == []


def test_feedback_goes_to_the_vendor_and_without_a_suggestion_uuid_is_not_sent(
    cases_app, client, admin_headers, vendor
):
    register(client, admin_headers, vendor.base + "/cds-services")
    cds = cases_app.state.cds
    card = next(
        c for c in run(cds.patient_view(SANDBOX, ANA, CHEST_PAIN, root=ROOT)).cards if c["service"] == "greeter"
    )
    decision = run(cds.override(SANDBOX, ANA, card["call"], card["key"], comment="not now", root=ROOT))
    assert decision.feedback == "sent"
    name, headers, body = vendor.received[-1]
    assert name == "greeter/feedback"
    assert body["feedback"][0] == {
        "card": "card-1",
        "outcome": "overridden",
        "overrideReason": {"userComment": "not now"},
        "outcomeTimestamp": body["feedback"][0]["outcomeTimestamp"],
    }
    keys = KeySet.import_key_set(client.get("/cds-hooks/jwks.json").json())
    claims = jwt.decode(headers["authorization"].removeprefix("Bearer "), keys, algorithms=["ES384"]).claims
    assert claims["aud"] == vendor.base + "/cds-services/greeter/feedback"


# ---- the admin API ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({}, 400, "'discovery_url' is required"),
        ({"discovery_url": "ftp://x/cds-services"}, 400, "not an absolute http(s) URL"),
        ({"discovery_url": "http://127.0.0.1:1/somewhere"}, 400, "not a discovery URL"),
        (
            {"discovery_url": "http://127.0.0.1:9/cds-services"},
            502,
            "Discovery at http://127.0.0.1:9/cds-services failed",
        ),
    ],
)
def test_bad_discovery_urls_are_refused(cases_app, client, admin_headers, body, status, detail):
    r = client.post(f"/admin/sandboxes/{SANDBOX}/cds-services", json=body, headers=admin_headers)
    assert r.status_code == status and detail in r.json()["detail"]
    listed = client.get(f"/admin/sandboxes/{SANDBOX}/cds-services", headers=admin_headers).json()
    assert [r["id"] for r in listed["registrations"]] == ["builtin"]


@pytest.mark.parametrize(
    ("document", "detail"),
    [
        ("garbage", "The answer is not JSON"),
        ({"services": "x"}, '"services" array'),
        ({"services": [{"id": "a", "hook": "patient-view"}]}, "services[0].description is required"),
        ({"services": [{"id": "a/b", "hook": "x", "description": "d"}]}, "one URL path segment"),
    ],
)
def test_a_bad_discovery_document_is_refused_and_logged(cases_app, client, admin_headers, vendor, document, detail):
    vendor.discovery = document
    r = register(client, admin_headers, vendor.base + "/cds-services")
    assert r.status_code == 502 and detail in r.json()["detail"]
    [logged] = client.get(f"/admin/sandboxes/{SANDBOX}/cds-log?kind=discovery", headers=admin_headers).json()["calls"]
    assert logged["status"] == "invalid"


def test_list_refresh_and_delete_a_registration(cases_app, client, admin_headers, vendor):
    url = vendor.base + "/cds-services"
    assert register(client, admin_headers, url, id="acme").status_code == 201
    assert register(client, admin_headers, url).status_code == 409
    vendor.discovery["services"].append({"id": "second", "hook": "order-sign", "description": "More"})
    r = client.post(f"/admin/sandboxes/{SANDBOX}/cds-services/acme/refresh", headers=admin_headers)
    assert [s["id"] for s in r.json()["services"]] == ["greeter", "second"]
    listed = client.get(f"/admin/sandboxes/{SANDBOX}/cds-services", headers=admin_headers).json()["registrations"]
    assert [r["id"] for r in listed] == ["builtin", "acme"]
    assert [s["id"] for s in listed[0]["services"]] == [
        "penicillin-allergy-order-select",
        "penicillin-allergy-order-sign",
        "duplicate-order",
        "ai-risk-model",
    ]
    assert client.delete(f"/admin/sandboxes/{SANDBOX}/cds-services/acme", headers=admin_headers).status_code == 204
    assert client.get(f"/admin/sandboxes/{SANDBOX}/cds-services/acme", headers=admin_headers).status_code == 404
    assert client.get("/admin/sandboxes/nowhere/cds-services", headers=admin_headers).status_code == 404


def _user(client: Any, headers: dict[str, str], role: str, email: str) -> dict[str, str]:
    user = client.post("/admin/users", json={"name": role, "email": email, "role": role}, headers=headers).json()
    token = client.post(f"/admin/users/{user['id']}/tokens", json={}, headers=headers).json()["token"]
    return {"id": user["id"], "Authorization": f"Bearer {token}"}


def test_a_vendor_member_manages_the_sandboxs_services_and_others_may_not(cases_app, client, admin_headers):
    vendor_user = _user(client, admin_headers, "vendor", "v@example.org")
    outsider = _user(client, admin_headers, "vendor", "o@example.org")
    trainee = _user(client, admin_headers, "trainee", "t@example.org")
    trainer = _user(client, admin_headers, "trainer", "tr@example.org")
    r = client.post(
        "/admin/cohorts",
        json={
            "name": "Vendors",
            "trainer": trainer["id"],
            "baseline": "cases",
            "members": [{"name": "v", "email": "v@example.org", "role": "vendor"}],
        },
        headers=admin_headers,
    )
    assert r.status_code == 201, r.text
    own = r.json()["members"][0]["sandbox"]

    def headers_of(who: dict[str, str]) -> dict[str, str]:
        return {"Authorization": who["Authorization"]}

    path = f"/admin/sandboxes/{own}/cds-services"
    assert client.get(path, headers=headers_of(vendor_user)).status_code == 200
    assert client.delete(f"{path}/builtin", headers=headers_of(vendor_user)).status_code == 204
    assert client.get(f"/admin/sandboxes/{own}/cds-log", headers=headers_of(vendor_user)).status_code == 200
    assert client.get(path, headers=headers_of(outsider)).status_code == 403
    assert client.get(path, headers=headers_of(trainee)).status_code == 403
    assert client.get(path, headers=headers_of(trainer)).status_code == 200
    assert client.post(path, json={"builtin": True}, headers=headers_of(trainer)).status_code == 403
    assert client.get(path).status_code == 401
    default = "/admin/sandboxes/default/cds-services"
    assert client.get(default, headers=headers_of(outsider)).status_code == 200
    assert client.delete(f"{default}/builtin", headers=headers_of(outsider)).status_code == 403


def test_the_log_lists_hook_calls_with_their_decisions(cases_app, client, admin_headers):
    cds = cases_app.state.cds
    [card] = run(cds.patient_view(SANDBOX, ANA, CHEST_PAIN, root=ROOT)).cards
    run(cds.override(SANDBOX, ANA, card["call"], card["key"], "already-treated", root=ROOT))
    calls = client.get(f"/admin/sandboxes/{SANDBOX}/cds-log", headers=admin_headers).json()["calls"]
    assert [c["kind"] for c in calls] == ["feedback", "hook"]
    full = client.get(f"/admin/sandboxes/{SANDBOX}/cds-log/{card['call']}", headers=admin_headers).json()
    assert full["cards"][0]["key"] == card["key"]
    assert [d["outcome"] for d in full["decisions"]] == ["overridden"]
    decisions = client.get(f"/admin/sandboxes/{SANDBOX}/cds-decisions", headers=admin_headers).json()["decisions"]
    assert decisions[0]["overrideReason"]["reason"]["code"] == "already-treated"
    assert client.get(f"/admin/sandboxes/{SANDBOX}/cds-log?limit=0", headers=admin_headers).status_code == 400
    assert client.get(f"/admin/sandboxes/{SANDBOX}/cds-log/nope", headers=admin_headers).status_code == 404
    with cases_app.state.db.read() as conn:
        assert len(log.calls(conn, SANDBOX)) == 2
