"""Launches that a person approves: a signed-in web user sees the app and its scopes, picks a patient for a
standalone launch, and allows or denies; the consent form is CSRF-protected like every web form."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from sandbox.accounts.users import User, create_user
from sandbox.store.database import Database
from tests.sandbox.auth.smart import (
    REDIRECT,
    Chart,
    auth_base,
    authorize_params,
    bearer,
    fhir_base,
    launch,
    make_chart,
    pkce,
    redirected,
    register,
)
from tests.web.test_signin import PASSWORD, sign_in

SCOPES = "launch/patient openid fhirUser patient/*.rs"


@pytest.fixture
def chart(client: TestClient) -> Chart:
    return make_chart(client, "default")


@pytest.fixture
def nurse(db: Database) -> User:
    with db.write() as conn:  # the chart's Practitioner has this email: it becomes the fhirUser
        return create_user(conn, "Nora Nurse", "nurse@example.org", "trainee", password=PASSWORD)


def _consent(client: TestClient, params: dict[str, str], **query: str) -> str:
    page = client.get(f"{auth_base('default')}/authorize", params={**params, **query})
    assert page.status_code == 200, page.text
    return page.text


def _form(page: str) -> dict[str, str]:
    """The consent form's hidden fields (the decision form is the last form of the page)."""
    form = page[page.rindex("<form") :]
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form))


def test_standalone_launch_with_the_patient_picker(client: TestClient, chart: Chart, nurse: User) -> None:
    register(client, "picker-app", SCOPES)
    verifier, challenge = pkce()
    params = authorize_params("picker-app", "default", SCOPES, challenge)
    # Not signed in: off to sign in, and back to the same request afterwards.
    first = client.get(f"{auth_base('default')}/authorize", params=params, follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"].startswith("/login?next=%2Fauth%2Fauthorize")
    assert sign_in(client, nurse.email).status_code == 303
    page = _consent(client, params)
    assert "picker-app" in page and "patient/*.rs" in page
    assert "Ann Ames" in page and "Bob Baker" in page
    only_bob = _consent(client, params, q="Baker")
    assert "Bob Baker" in only_bob and "Ann Ames" not in only_bob
    form = {**_form(page), "decision": "approve", "patient": chart.bob}
    answer = redirected(client.post(f"{auth_base('default')}/authorize/decision", data=form, follow_redirects=False))
    assert answer["state"] == "st-123"
    token = client.post(
        f"{auth_base('default')}/token",
        data={
            "grant_type": "authorization_code",
            "code": answer["code"],
            "redirect_uri": REDIRECT,
            "client_id": "picker-app",
            "code_verifier": verifier,
        },
    ).json()
    assert token["patient"] == chart.bob
    assert token["fhirUser"] == f"{fhir_base('default')}/Practitioner/{chart.practitioner}"
    headers = bearer(token["access_token"])
    assert client.get(f"/fhir/Observation/{chart.bob_vital}", headers=headers).status_code == 200
    assert client.get(f"/fhir/Observation/{chart.ann_vital}", headers=headers).status_code == 403
    # Writes by this token are the client's and the approving user's.
    info = client.post(
        f"{auth_base('default')}/introspect", data={"token": token["access_token"]}, headers=headers
    ).json()
    assert info["sub"] == nurse.id


def test_the_user_may_deny(client: TestClient, chart: Chart, nurse: User) -> None:
    register(client, "picker-app", SCOPES)
    params = authorize_params("picker-app", "default", SCOPES, pkce()[1])
    sign_in(client, nurse.email)
    form = {**_form(_consent(client, params)), "decision": "deny"}
    answer = redirected(client.post(f"{auth_base('default')}/authorize/decision", data=form, follow_redirects=False))
    assert answer == {"error": "access_denied", "error_description": "The user denied the request", "state": "st-123"}


def test_approving_needs_the_csrf_token_and_a_real_patient(client: TestClient, chart: Chart, nurse: User) -> None:
    register(client, "picker-app", SCOPES)
    params = authorize_params("picker-app", "default", SCOPES, pkce()[1])
    sign_in(client, nurse.email)
    form = {**_form(_consent(client, params)), "decision": "approve", "patient": chart.ann}
    url = f"{auth_base('default')}/authorize/decision"
    forged = client.post(url, data={**form, "csrf_token": "forged"}, follow_redirects=False)
    assert forged.status_code == 403 and "location" not in forged.headers
    nobody = client.post(url, data={**form, "patient": "nobody"}, follow_redirects=False)
    assert nobody.status_code == 400 and "Pick a patient" in nobody.text


def test_an_ehr_launch_shows_its_patient_and_needs_no_picker(client: TestClient, chart: Chart, nurse: User) -> None:
    register(client, "ehr-app", "launch patient/*.rs")
    value = launch(client, "ehr-app", "default", chart.ann)["launch"]
    params = authorize_params("ehr-app", "default", "launch patient/*.rs", pkce()[1], launch=value)
    sign_in(client, nurse.email)
    page = _consent(client, params)
    assert f"Patient/{chart.ann}" in page and 'name="patient"' not in page
    # The consent page lets its form lead to the app's redirect URI (browsers check form-action on redirects).
    headers = client.get(f"{auth_base('default')}/authorize", params=params).headers
    assert "form-action 'self' https://app.example.org" in headers["content-security-policy"]


def test_users_approve_only_in_sandboxes_they_can_reach(client: TestClient, db: Database, nurse: User) -> None:
    chart = make_chart(client, "smart")
    register(client, "ehr-app", "launch patient/*.rs")
    value = launch(client, "ehr-app", "smart", chart.ann)["launch"]
    params = authorize_params("ehr-app", "smart", "launch patient/*.rs", pkce()[1], launch=value)
    sign_in(client, nurse.email)
    page = client.get(f"{auth_base('smart')}/authorize", params=params)
    assert page.status_code == 403 and "cannot use sandbox" in page.text
