"""SMART App Launch with a real HTTP client against the app: configuration, EHR launch for an auto-approved app,
the token response and its id_token, FHIR calls within and outside scope, refresh, introspection, revocation,
and the errors of each step."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import KeySet

from sandbox.app import create_app
from sandbox.auth.launches import MAX_APP_CONTEXT
from sandbox.auth.tokens import Grant
from sandbox.config import Settings
from sandbox.store.database import Database
from tests.sandbox.auth.smart import (
    ADMIN,
    REDIRECT,
    Chart,
    auth_base,
    authorize_params,
    bearer,
    ehr_launch_token,
    fhir_base,
    launch,
    make_chart,
    pkce,
    redirected,
    register,
)

SCOPES = "launch openid fhirUser offline_access patient/*.rs"


@pytest.fixture
def chart(client: TestClient) -> Chart:
    return make_chart(client)


@pytest.fixture
def app_client(client: TestClient) -> dict:
    return register(client, "growth-chart", SCOPES + " patient/Observation.cruds", auto_approve=True)


# ---- discovery -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", ["/fhir", "/sandboxes/smart/fhir"])
def test_each_fhir_base_publishes_its_smart_configuration(client: TestClient, chart: Chart, base: str) -> None:
    config = client.get(f"{base}/.well-known/smart-configuration").json()
    auth = "/auth" if base == "/fhir" else "/sandboxes/smart/auth"
    assert config["authorization_endpoint"] == f"http://testserver{auth}/authorize"
    assert config["token_endpoint"] == f"http://testserver{auth}/token"
    assert config["introspection_endpoint"].endswith(f"{auth}/introspect")
    assert config["revocation_endpoint"].endswith(f"{auth}/revoke")
    assert config["jwks_uri"] == "http://testserver/auth/jwks"
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert {"launch-ehr", "launch-standalone", "permission-v2", "client-confidential-asymmetric"} <= set(
        config["capabilities"]
    )
    assert set(config["grant_types_supported"]) == {"authorization_code", "refresh_token", "client_credentials"}
    security = client.get(f"{base}/metadata").json()["rest"][0]["security"]
    uris = {e["url"]: e["valueUri"] for e in security["extension"][0]["extension"]}
    assert uris["authorize"] == config["authorization_endpoint"] and uris["token"] == config["token_endpoint"]


def test_an_unknown_sandbox_has_no_configuration(client: TestClient) -> None:
    r = client.get("/sandboxes/nowhere/fhir/.well-known/smart-configuration")
    assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"


def test_the_signing_key_is_shared_by_every_worker_and_survives_restarts(db: Database, settings: Settings) -> None:
    with TestClient(create_app(settings, db=db)) as first:
        keys = first.get("/auth/jwks").json()["keys"]
    with TestClient(create_app(settings, db=db)) as second:
        assert second.get("/auth/jwks").json()["keys"] == keys
    assert keys[0]["kty"] == "RSA" and keys[0]["alg"] == "RS256" and "d" not in keys[0]


# ---- the registration and launch contract --------------------------------------------------------------------


def test_registering_clients(client: TestClient) -> None:
    public = register(client, "pub", "launch patient/*.rs")
    assert public["type"] == "public" and "client_secret" not in public
    r = client.post(
        "/admin/clients",
        json={"client_id": "conf", "redirect_uris": [REDIRECT], "scopes": "user/*.rs", "public": False},
        headers=ADMIN,
    )
    assert r.status_code == 201 and r.json()["type"] == "confidential-symmetric"
    assert len(r.json()["client_secret"]) > 30
    listed = client.get("/admin/clients", headers=ADMIN).json()["clients"]
    assert [c["client_id"] for c in listed] == ["conf", "pub"]
    assert all("client_secret" not in c for c in listed)
    assert client.delete("/admin/clients/pub", headers=ADMIN).status_code == 204
    assert client.get("/admin/clients/pub", headers=ADMIN).status_code == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"client_id": "a b", "redirect_uris": [REDIRECT], "scopes": "launch", "public": True}, "client_id"),
        ({"client_id": "a", "redirect_uris": ["not a url"], "scopes": "launch", "public": True}, "redirect URI"),
        ({"client_id": "a", "redirect_uris": [REDIRECT], "scopes": "patient/Nope.rs", "public": True}, "Nope"),
        ({"client_id": "a", "redirect_uris": [REDIRECT], "scopes": "patient/*.rx", "public": True}, "cruds"),
        ({"client_id": "a", "redirect_uris": [REDIRECT], "scopes": "launch", "public": "yes"}, "public"),
        (
            {
                "client_id": "a",
                "redirect_uris": [REDIRECT],
                "scopes": "launch",
                "public": True,
                "jwks_url": "https://k",
            },
            "public client has no keys",
        ),
        (
            {"client_id": "a", "redirect_uris": [REDIRECT], "scopes": "launch", "public": True, "faults": ["boom"]},
            "Unknown faults",
        ),
        ({"client_id": "a", "redirect_uris": [], "scopes": "launch", "public": True}, "at least one"),
        ({"client_id": "a", "redirect_uris": [REDIRECT], "scopes": "launch", "public": True, "colour": 1}, "Unknown"),
    ],
)
def test_bad_registrations_are_refused(client: TestClient, body: dict, message: str) -> None:
    r = client.post("/admin/clients", json=body, headers=ADMIN)
    assert r.status_code == 400 and message in r.json()["detail"]
    assert client.get("/admin/clients", headers=ADMIN).json()["clients"] == []


def test_registration_needs_the_admin_token_and_a_free_client_id(client: TestClient) -> None:
    body = {"client_id": "a", "redirect_uris": [REDIRECT], "scopes": "launch", "public": True}
    assert client.post("/admin/clients", json=body).status_code == 401
    assert client.post("/admin/clients", json=body, headers=ADMIN).status_code == 201
    assert client.post("/admin/clients", json=body, headers=ADMIN).status_code == 409


def test_launches_name_a_real_client_sandbox_patient_and_encounter(client: TestClient, chart: Chart) -> None:
    register(client, "app", SCOPES, launch_url="https://app.example.org/launch")
    made = launch(
        client, "app", "smart", chart.ann, encounter=chart.encounter, user=f"Practitioner/{chart.practitioner}"
    )
    assert made["iss"] == "http://testserver/sandboxes/smart/fhir"
    query = parse_qs(urlsplit(made["launch_url"]).query)
    assert query == {"launch": [made["launch"]], "iss": [made["iss"]]}
    for body, status in [
        ({"client_id": "nope", "sandbox": "smart", "patient": chart.ann}, 404),
        ({"client_id": "app", "sandbox": "nowhere", "patient": chart.ann}, 404),
        ({"client_id": "app", "sandbox": "smart", "patient": "missing"}, 400),
        ({"client_id": "app", "sandbox": "smart", "patient": chart.ann, "encounter": "missing"}, 400),
        ({"client_id": "app", "sandbox": "smart", "patient": chart.ann, "user": "Device/1"}, 400),
        ({"client_id": "app", "sandbox": "smart"}, 400),
        ({"client_id": "app", "sandbox": "default", "patient": chart.ann}, 400),  # Ann lives in another sandbox
    ]:
        r = client.post("/admin/launches", json=body, headers=ADMIN)
        assert r.status_code == status, (body, r.text)


# ---- the EHR launch, end to end -------------------------------------------------------------------------------


def test_ehr_launch_of_an_auto_approved_app(client: TestClient, chart: Chart, app_client: dict) -> None:
    token = ehr_launch_token(
        client, chart, "growth-chart", SCOPES, encounter=chart.encounter, user=f"Practitioner/{chart.practitioner}"
    )
    assert token["token_type"] == "Bearer" and token["expires_in"] == 3600
    assert token["patient"] == chart.ann and token["encounter"] == chart.encounter
    assert token["scope"] == SCOPES
    assert token["fhirUser"] == f"{fhir_base('smart')}/Practitioner/{chart.practitioner}"
    assert token["refresh_token"]
    # The id_token verifies against the published JWKS.
    keys = KeySet.import_key_set(client.get("/auth/jwks").json())
    claims = jwt.decode(token["id_token"], keys, algorithms=["RS256"]).claims
    assert claims["aud"] == "growth-chart" and claims["iss"] == fhir_base("smart")
    assert claims["fhirUser"] == token["fhirUser"]
    headers = bearer(token["access_token"])
    base = fhir_base("smart")
    # Within scope: Ann's chart.
    assert client.get(f"{base}/Patient/{chart.ann}", headers=headers).status_code == 200
    found = client.get(f"{base}/Observation", headers=headers).json()
    assert {e["resource"]["id"] for e in found["entry"]} == {chart.ann_vital, chart.ann_lab}
    # Outside: Bob, writes (patient/*.rs is read-only), and the same token on another sandbox.
    bob = client.get(f"{base}/Patient/{chart.bob}", headers=headers)
    assert bob.status_code == 403 and bob.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"{base}/Observation/{chart.bob_vital}", headers=headers).status_code == 403
    new = {"resourceType": "Condition", "subject": {"reference": f"Patient/{chart.ann}"}, "code": {"text": "x"}}
    assert client.post(f"{base}/Condition", json=new, headers=headers).status_code == 403
    assert client.get(f"/fhir/Patient/{chart.ann}", headers=headers).status_code == 401


def test_a_launchs_app_context_reaches_its_token_response_and_no_other(
    client: TestClient, chart: Chart, app_client: dict
) -> None:
    context = '{"riskScore": 8, "note": "<b>as the card gave it</b>"}'
    token = ehr_launch_token(client, chart, "growth-chart", SCOPES, appContext=context)
    assert token["appContext"] == context and token["patient"] == chart.ann
    refreshed = client.post(
        f"{auth_base('smart')}/token",
        data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"], "client_id": "growth-chart"},
    ).json()
    assert refreshed["appContext"] == context  # the same launch, refreshed
    assert "appContext" not in ehr_launch_token(client, chart, "growth-chart", SCOPES)  # the next launch has none
    for bad in ("", 42, {"a": 1}, "x" * (MAX_APP_CONTEXT + 1)):
        body = {"client_id": "growth-chart", "sandbox": "smart", "patient": chart.ann, "appContext": bad}
        r = client.post("/admin/launches", json=body, headers=ADMIN)
        assert r.status_code == 400 and "appContext" in r.json()["detail"], (bad, r.text)
    # Stored grants without a context are written as before, so the release before can still read them.
    assert "app_context" not in Grant(client_id="a", scopes=("launch",)).dumps()
    assert Grant.loads(Grant(client_id="a", scopes=("launch",), app_context="x").dumps()).app_context == "x"


def test_refresh_introspection_and_revocation(client: TestClient, chart: Chart, app_client: dict) -> None:
    token = ehr_launch_token(client, chart, "growth-chart", SCOPES)
    token_url = f"{auth_base('smart')}/token"
    refreshed = client.post(
        token_url,
        data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"], "client_id": "growth-chart"},
    )
    assert refreshed.status_code == 200, refreshed.text
    access = refreshed.json()["access_token"]
    assert access != token["access_token"] and refreshed.json()["patient"] == chart.ann
    assert client.get(f"{fhir_base('smart')}/Patient/{chart.ann}", headers=bearer(access)).status_code == 200
    # A refresh may narrow the scopes, never widen them.
    narrowed = client.post(
        token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": token["refresh_token"],
            "client_id": "growth-chart",
            "scope": "patient/Patient.rs",
        },
    ).json()
    assert narrowed.get("scope") == "patient/Patient.rs", narrowed
    obs = client.get(f"{fhir_base('smart')}/Observation", headers=bearer(narrowed["access_token"]))
    assert obs.status_code == 403
    wider = client.post(
        token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": token["refresh_token"],
            "client_id": "growth-chart",
            "scope": "user/*.cruds",
        },
    )
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"
    # Introspection: by the admin token, and by the token itself as a resource server would.
    info = client.post(f"{auth_base('smart')}/introspect", data={"token": access}, headers=ADMIN).json()
    assert info["active"] and info["client_id"] == "growth-chart" and info["patient"] == chart.ann
    assert info["scope"] == SCOPES and info["aud"] == fhir_base("smart")
    unknown = client.post(f"{auth_base('smart')}/introspect", data={"token": "nope"}, headers=ADMIN).json()
    assert unknown == {"active": False}
    assert client.post(f"{auth_base('smart')}/introspect", data={"token": access}).status_code == 401
    # Revoking the refresh token ends every token of the grant.
    r = client.post(f"{auth_base('smart')}/revoke", data={"token": token["refresh_token"], "client_id": "growth-chart"})
    assert r.status_code == 200
    assert client.get(f"{fhir_base('smart')}/Patient/{chart.ann}", headers=bearer(access)).status_code == 401
    again = client.post(
        token_url,
        data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"], "client_id": "growth-chart"},
    )
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert client.post(f"{auth_base('smart')}/introspect", data={"token": access}, headers=ADMIN).json() == {
        "active": False
    }


def test_online_access_and_no_refresh_scope(client: TestClient, chart: Chart) -> None:
    register(client, "online", "launch online_access patient/*.rs", auto_approve=True)
    assert "refresh_token" in ehr_launch_token(client, chart, "online", "launch online_access patient/*.rs")
    assert "refresh_token" not in ehr_launch_token(client, chart, "online", "launch patient/*.rs")


def test_expired_access_tokens_get_401_with_a_challenge(
    app, client: TestClient, chart: Chart, app_client: dict
) -> None:
    token = ehr_launch_token(client, chart, "growth-chart", SCOPES)
    policy = app.state.smart.policy
    now = policy.clock()
    policy.clock = lambda: now + timedelta(hours=2)
    r = client.get(f"{fhir_base('smart')}/Patient/{chart.ann}", headers=bearer(token["access_token"]))
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    assert r.json()["resourceType"] == "OperationOutcome"


# ---- what the token endpoint refuses ---------------------------------------------------------------------------


def _code(client: TestClient, chart: Chart, client_id: str = "growth-chart") -> tuple[str, str]:
    value = launch(client, client_id, chart.sandbox, chart.ann)["launch"]
    verifier, challenge = pkce()
    params = authorize_params(client_id, chart.sandbox, SCOPES, challenge, launch=value)
    answer = redirected(client.get(f"{auth_base('smart')}/authorize", params=params, follow_redirects=False))
    return answer["code"], verifier


def test_codes_need_the_right_verifier_and_work_once(client: TestClient, chart: Chart, app_client: dict) -> None:
    code, verifier = _code(client, chart)
    url = f"{auth_base('smart')}/token"
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": "growth-chart"}
    wrong = client.post(url, data={**form, "code_verifier": pkce()[0]})
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    assert wrong.headers["cache-control"] == "no-store"
    assert client.post(url, data=form).json()["error"] == "invalid_grant"  # no verifier
    assert client.post(url, data={**form, "code_verifier": verifier, "redirect_uri": REDIRECT + "x"}).status_code == 400
    first = client.post(url, data={**form, "code_verifier": verifier})
    assert first.status_code == 200
    replay = client.post(url, data={**form, "code_verifier": verifier})
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    # A replayed code may have been stolen: what it produced is revoked.
    access = first.json()["access_token"]
    assert client.get(f"{fhir_base('smart')}/Patient/{chart.ann}", headers=bearer(access)).status_code == 401


def test_token_endpoint_errors(client: TestClient, chart: Chart, app_client: dict) -> None:
    code, verifier = _code(client, chart)
    url = f"{auth_base('smart')}/token"
    assert client.post(url, data={"grant_type": "password", "client_id": "growth-chart"}).json()["error"] == (
        "unsupported_grant_type"
    )
    unknown = client.post(url, data={"grant_type": "authorization_code", "code": code, "client_id": "who"})
    assert unknown.status_code == 401 and unknown.json()["error"] == "invalid_client"
    assert client.post(url, json={"grant_type": "x"}).json()["error"] == "invalid_request"
    # A code is bound to its sandbox: the default sandbox's token endpoint does not know it.
    other = client.post(
        f"{auth_base('default')}/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": "growth-chart",
            "code_verifier": verifier,
        },
    )
    assert other.status_code == 400 and other.json()["error"] == "invalid_grant"


def test_confidential_clients_authenticate_with_their_secret(client: TestClient, chart: Chart) -> None:
    secret = client.post(
        "/admin/clients",
        json={
            "client_id": "conf",
            "redirect_uris": [REDIRECT],
            "scopes": SCOPES,
            "public": False,
            "auto_approve": True,
        },
        headers=ADMIN,
    ).json()["client_secret"]
    code, verifier = _code(client, chart, "conf")
    url = f"{auth_base('smart')}/token"
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
    assert client.post(url, data={**form, "client_id": "conf"}).status_code == 401
    assert client.post(url, data=form, auth=("conf", "wrong")).status_code == 401
    ok = client.post(url, data=form, auth=("conf", secret))
    assert ok.status_code == 200, ok.text
    # The client introspects its own token with its credentials.
    info = client.post(
        f"{auth_base('smart')}/introspect", data={"token": ok.json()["access_token"]}, auth=("conf", secret)
    ).json()
    assert info["active"] and info["client_id"] == "conf"


# ---- what the authorization endpoint refuses -------------------------------------------------------------------


def test_unknown_clients_and_redirect_uris_get_an_error_page_not_a_redirect(
    client: TestClient, chart: Chart, app_client: dict
) -> None:
    _, challenge = pkce()
    url = f"{auth_base('smart')}/authorize"
    for changed in ({"client_id": "nobody"}, {"redirect_uri": "https://evil.example.org/cb"}):
        params = {**authorize_params("growth-chart", "smart", SCOPES, challenge), **changed}
        r = client.get(url, params=params, follow_redirects=False)
        assert r.status_code == 400 and "location" not in r.headers
        assert r.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": ""}, "invalid_request"),
        ({"aud": "http://testserver/fhir"}, "invalid_request"),  # another sandbox's base
        ({"scope": "launch user/*.cruds"}, "invalid_scope"),  # not registered for this client
        ({"scope": "launch patient/Observation.xyz"}, "invalid_scope"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"launch": "not-a-launch"}, "invalid_request"),
    ],
)
def test_invalid_requests_redirect_back_with_an_error_and_the_state(
    client: TestClient, chart: Chart, app_client: dict, change: dict, error: str
) -> None:
    value = launch(client, "growth-chart", "smart", chart.ann)["launch"]
    _, challenge = pkce()
    params = {**authorize_params("growth-chart", "smart", SCOPES, challenge, launch=value), **change}
    answer = redirected(client.get(f"{auth_base('smart')}/authorize", params=params, follow_redirects=False))
    assert answer["error"] == error and answer["state"] == "st-123" and "code" not in answer


def test_a_launch_belongs_to_its_client(client: TestClient, chart: Chart, app_client: dict) -> None:
    register(client, "other", SCOPES, auto_approve=True)
    value = launch(client, "other", "smart", chart.ann)["launch"]
    _, challenge = pkce()
    params = authorize_params("growth-chart", "smart", SCOPES, challenge, launch=value)
    answer = redirected(client.get(f"{auth_base('smart')}/authorize", params=params, follow_redirects=False))
    assert answer["error"] == "invalid_request"


# ---- fault injection --------------------------------------------------------------------------------------------


def test_faults_simulate_failures_an_app_must_handle(client: TestClient, chart: Chart, app_client: dict) -> None:
    def set_faults(*faults: str) -> None:
        r = client.put("/admin/clients/growth-chart/faults", json={"faults": list(faults)}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["faults"] == sorted(faults)

    set_faults("denied_consent")
    value = launch(client, "growth-chart", "smart", chart.ann)["launch"]
    _, challenge = pkce()
    params = authorize_params("growth-chart", "smart", SCOPES, challenge, launch=value)
    answer = redirected(client.get(f"{auth_base('smart')}/authorize", params=params, follow_redirects=False))
    assert answer["error"] == "access_denied" and answer["state"] == "st-123"

    set_faults("invalid_client")
    set_faults()
    code, verifier = _code(client, chart)
    set_faults("invalid_client")
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": "growth-chart",
        "code_verifier": verifier,
    }
    r = client.post(f"{auth_base('smart')}/token", data=form)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"

    set_faults("expired_token")
    token = ehr_launch_token(client, chart, "growth-chart", SCOPES)
    r = client.get(f"{fhir_base('smart')}/Patient/{chart.ann}", headers=bearer(token["access_token"]))
    assert r.status_code == 401 and "expired" in r.headers["www-authenticate"]
    assert client.put("/admin/clients/growth-chart/faults", json={"faults": ["x"]}, headers=ADMIN).status_code == 400
