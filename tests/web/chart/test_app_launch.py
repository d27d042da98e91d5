"""The chart's "Launch app" buttons: an EHR launch of a registered SMART app for the open patient, in an iframe
under the banner or in a new tab, with the page's Content-Security-Policy widened for that app only."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from sandbox.auth.launches import find_launch
from sandbox.demo import Demo
from sandbox.store.repository import Actor
from sandbox.store.schema import smart_launches
from tests.sandbox.auth.smart import auth_base, authorize_params, fhir_base, pkce, redirected, register
from tests.web.chart.conftest import sign_in

PATIENT = "chest-pain-cardiology"
APP = "https://app.acme.example/smart/launch"
SCOPES = "launch openid fhirUser patient/*.rs"


def chart(sandbox: str) -> str:
    return f"/chart/{sandbox}/patients/{PATIENT}"


def launch_path(sandbox: str, client_id: str = "acme") -> str:
    return f"{chart(sandbox)}/launch/{client_id}"


def launches(app: FastAPI) -> int:
    with app.state.db.read() as conn:
        return conn.execute(select(func.count()).select_from(smart_launches)).scalar_one()


def test_without_apps_the_chart_has_no_launch_buttons_and_the_usual_policy(
    client: TestClient, ada: str, ada_sandbox: str
) -> None:
    page = client.get(chart(ada_sandbox))
    assert page.status_code == 200 and 'id="apps"' not in page.text
    assert "form-action 'self';" in page.headers["content-security-policy"]
    assert "frame-src" not in page.headers["content-security-policy"]


def test_the_chart_offers_each_app_with_a_launch_url(client: TestClient, ada: str, ada_sandbox: str) -> None:
    register(client, "acme", SCOPES, launch_url=APP, auto_approve=True)
    register(client, "no-launch-url", SCOPES)
    page = client.get(chart(ada_sandbox))
    assert f'action="{launch_path(ada_sandbox)}"' in page.text and 'target="_blank"' in page.text
    assert "no-launch-url" not in page.text
    # the new-tab launch is answered by a redirect to the app, which form-action must allow
    assert "form-action 'self' https://app.acme.example;" in page.headers["content-security-policy"]


def test_a_new_tab_launch_redirects_to_the_app_with_launch_and_iss(
    client: TestClient, app: FastAPI, ada: str, ada_sandbox: str
) -> None:
    register(client, "acme", SCOPES, launch_url=APP, auto_approve=True)
    answer = client.post(launch_path(ada_sandbox), data={"csrf_token": ada, "mode": "tab"}, follow_redirects=False)
    assert answer.status_code == 303
    location = answer.headers["location"]
    assert location.startswith(APP + "?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert query["iss"] == fhir_base(ada_sandbox)
    with app.state.db.read() as conn:
        context = find_launch(conn, ada_sandbox, query["launch"], app.state.smart.policy)
    assert context is not None and (context.client_id, context.patient) == ("acme", PATIENT)
    assert context.fhir_user is None  # Ada has no Practitioner in her sandbox

    # the app completes the EHR launch with what it was given (auto-approved: no consent page)
    _verifier, challenge = pkce()
    params = authorize_params("acme", ada_sandbox, SCOPES, challenge, launch=query["launch"])
    params["aud"] = query["iss"]
    code = redirected(client.get(f"{auth_base(ada_sandbox)}/authorize", params=params, follow_redirects=False))
    assert "code" in code and code["state"] == "st-123"


def test_an_embedded_launch_shows_the_app_under_the_banner_and_allows_only_its_origin(
    client: TestClient, app: FastAPI, ada: str, ada_sandbox: str
) -> None:
    register(client, "acme", SCOPES, launch_url=APP)
    page = client.post(launch_path(ada_sandbox), data={"csrf_token": ada, "mode": "embedded"})
    assert page.status_code == 200
    assert 'id="banner"' in page.text and 'id="app-frame"' in page.text
    src = page.text.split('id="app-frame" src="')[1].split('"')[0].replace("&amp;", "&")
    assert src.startswith(APP + "?launch=") and "iss=" in src
    policy = page.headers["content-security-policy"]
    assert policy.endswith("; frame-src https://app.acme.example") and "frame-ancestors 'none'" in policy
    assert page.headers["x-frame-options"] == "DENY"  # the chart itself is still never framed
    assert launches(app) == 1

    # inside the frame, the app asks for authorization: the consent page may be framed by the chart, by no one else
    query = {k: v[0] for k, v in parse_qs(urlsplit(src).query).items()}
    _verifier, challenge = pkce()
    params = authorize_params("acme", ada_sandbox, SCOPES, challenge, launch=query["launch"])
    consent = client.get(f"{auth_base(ada_sandbox)}/authorize", params=params)
    assert consent.status_code == 200 and "acme" in consent.text
    assert "frame-ancestors 'self'" in consent.headers["content-security-policy"]
    assert consent.headers["x-frame-options"] == "SAMEORIGIN"


def test_the_launch_names_the_users_practitioner_when_the_sandbox_has_one(
    client: TestClient, app: FastAPI, demo: Demo, ada_sandbox: str
) -> None:
    trainer_csrf = sign_in(client, demo, "trainer@demo.invalid")
    with app.state.db.write() as conn:
        doctor = {
            "resourceType": "Practitioner",
            "id": "the-trainer",
            "telecom": [{"system": "email", "value": "trainer@demo.invalid"}],
        }
        app.state.fhir.update(
            conn, app.state.views.get(ada_sandbox), "Practitioner", "the-trainer", doctor, Actor("system:test", "test")
        )
    register(client, "acme", SCOPES, launch_url=APP)
    answer = client.post(
        launch_path(ada_sandbox), data={"csrf_token": trainer_csrf, "mode": "tab"}, follow_redirects=False
    )
    launch = parse_qs(urlsplit(answer.headers["location"]).query)["launch"][0]
    with app.state.db.read() as conn:
        context = find_launch(conn, ada_sandbox, launch, app.state.smart.policy)
    assert context is not None and context.fhir_user == "Practitioner/the-trainer"


def test_bad_launches_are_refused_and_create_nothing(
    client: TestClient, app: FastAPI, demo: Demo, ada: str, ada_sandbox: str
) -> None:
    register(client, "acme", SCOPES, launch_url=APP)
    register(client, "no-launch-url", SCOPES)
    assert client.post(launch_path(ada_sandbox), data={"mode": "tab"}).status_code == 403  # no CSRF token
    assert client.post(launch_path(ada_sandbox, "unknown"), data={"csrf_token": ada}).status_code == 404
    assert client.post(launch_path(ada_sandbox, "no-launch-url"), data={"csrf_token": ada}).status_code == 404
    other_patient = f"/chart/{ada_sandbox}/patients/nobody/launch/acme"
    assert client.post(other_patient, data={"csrf_token": ada}).status_code == 404
    bens = demo.sandboxes["ben@demo.invalid"]
    assert client.post(launch_path(bens), data={"csrf_token": ada}).status_code == 403  # not her sandbox
    assert launches(app) == 0
