"""A published SMART client library against a live server: the ``fhirclient`` package (SMART on FHIR's Python
client) discovers the authorization server from the CapabilityStatement, sends the authorization request with
PKCE, exchanges the code after a signed-in user picked a patient and approved, reads within its scopes, is
refused outside them, and refreshes its token.  The server is uvicorn on a real socket."""

from __future__ import annotations

import re

import httpx
import pytest
from fhirclient import client as smart_client
from fhirclient.models.observation import Observation
from fhirclient.models.patient import Patient
from fhirclient.server import FHIRPermissionDeniedException

from sandbox.accounts.users import create_user
from sandbox.store.database import Database
from tests.conftest import ADMIN_TOKEN
from tests.sandbox.auth.conftest import Live
from tests.web.test_signin import PASSWORD

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
REDIRECT = "https://app.example.org/callback"


def _create(http: httpx.Client, base: str, resource: dict) -> str:
    r = http.post(f"{base}/{resource['resourceType']}", json=resource, headers=ADMIN)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_fhirclient_standalone_launch_consent_reads_and_refresh(live: Live, db: Database) -> None:
    with db.write() as conn:
        create_user(conn, "Ada Admin", "ada@example.org", "admin", password=PASSWORD)
    http = httpx.Client(base_url=live.root, follow_redirects=False)
    assert http.post("/admin/sandboxes", json={"name": "fhirclient", "id": "fc"}, headers=ADMIN).status_code == 201
    base = f"{live.root}/sandboxes/fc/fhir"
    ann = _create(http, base, {"resourceType": "Patient", "name": [{"family": "Ames", "given": ["Ann"]}]})
    bob = _create(http, base, {"resourceType": "Patient", "name": [{"family": "Baker", "given": ["Bob"]}]})
    vital = {"resourceType": "Observation", "status": "final", "code": {"text": "pulse"}}
    ann_obs = _create(http, base, {**vital, "subject": {"reference": f"Patient/{ann}"}})
    _create(http, base, {**vital, "subject": {"reference": f"Patient/{bob}"}})
    scope = "launch/patient openid fhirUser offline_access patient/Patient.rs patient/Observation.rs"
    registered = http.post(
        "/admin/clients",
        json={"client_id": "fc-app", "redirect_uris": [REDIRECT], "scopes": scope, "public": True},
        headers=ADMIN,
    )
    assert registered.status_code == 201

    app = smart_client.FHIRClient(
        settings={"app_id": "fc-app", "api_base": base, "redirect_uri": REDIRECT, "scope": scope}
    )
    authorize_url = app.authorize_url
    assert authorize_url.startswith(f"{live.root}/sandboxes/fc/auth/authorize?")

    # A person signs in, opens the app's authorization request, picks Ann and allows it.
    login = http.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
    assert token is not None
    signed = http.post("/login", data={"email": "ada@example.org", "password": PASSWORD, "csrf_token": token.group(1)})
    assert signed.status_code == 303
    consent = http.get(authorize_url)
    assert consent.status_code == 200 and "Ann Ames" in consent.text
    decision_form = consent.text[consent.text.rindex("<form") :]
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', decision_form))
    approved = http.post(
        "/sandboxes/fc/auth/authorize/decision", data={**fields, "decision": "approve", "patient": ann}
    )
    assert approved.status_code == 302
    callback = approved.headers["location"]
    assert callback.startswith(REDIRECT)

    app.handle_callback(callback)
    assert app.ready and app.patient_id == ann
    smart = app.server
    assert Patient.read(ann, smart).name[0].family == "Ames"
    observations = list(Observation.where(struct={}).perform_resources_iter(smart))
    assert [o.id for o in observations] == [ann_obs]
    with pytest.raises(FHIRPermissionDeniedException):
        Patient.read(bob, smart)
    old = app.server.auth.access_token
    app.reauthorize()  # the refresh token grant
    assert app.server.auth.access_token != old
    assert Patient.read(ann, app.server).id == ann
    http.close()
