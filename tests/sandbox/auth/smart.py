"""Helpers for SMART tests: a small chart, app registration, PKCE, and the authorization code flow by hand."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi.testclient import TestClient

from tests.conftest import ADMIN_TOKEN

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
REDIRECT = "https://app.example.org/callback"
BASE = "http://testserver"


def fhir_base(sandbox: str) -> str:
    return f"{BASE}/fhir" if sandbox == "default" else f"{BASE}/sandboxes/{sandbox}/fhir"


def auth_base(sandbox: str) -> str:
    return f"{BASE}/auth" if sandbox == "default" else f"{BASE}/sandboxes/{sandbox}/auth"


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


@dataclass
class Chart:
    """Two patients in one sandbox: Ann (with an encounter, vitals, a lab and a condition) and Bob (one vital)."""

    sandbox: str
    ann: str
    bob: str
    encounter: str
    ann_vital: str
    ann_lab: str
    ann_condition: str
    bob_vital: str
    practitioner: str


def _create(client: TestClient, sandbox: str, resource: dict[str, Any]) -> str:
    r = client.post(f"{fhir_base(sandbox)}/{resource['resourceType']}", json=resource, headers=ADMIN)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _observation(patient: str, category: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
    }


def make_chart(client: TestClient, sandbox: str = "smart") -> Chart:
    if sandbox != "default":
        r = client.post("/admin/sandboxes", json={"name": "SMART tests", "id": sandbox}, headers=ADMIN)
        assert r.status_code == 201, r.text
    ann = _create(client, sandbox, {"resourceType": "Patient", "name": [{"family": "Ames", "given": ["Ann"]}]})
    bob = _create(client, sandbox, {"resourceType": "Patient", "name": [{"family": "Baker", "given": ["Bob"]}]})
    practitioner = _create(
        client,
        sandbox,
        {
            "resourceType": "Practitioner",
            "name": [{"family": "Cruz"}],
            "telecom": [{"system": "email", "value": "nurse@example.org"}],
        },
    )
    encounter = _create(
        client,
        sandbox,
        {
            "resourceType": "Encounter",
            "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{ann}"},
        },
    )
    return Chart(
        sandbox,
        ann,
        bob,
        encounter,
        _create(client, sandbox, _observation(ann, "vital-signs", "8867-4")),
        _create(client, sandbox, _observation(ann, "laboratory", "2345-7")),
        _create(
            client,
            sandbox,
            {
                "resourceType": "Condition",
                "subject": {"reference": f"Patient/{ann}"},
                "code": {"text": "Asthma"},
            },
        ),
        _create(client, sandbox, _observation(bob, "vital-signs", "8867-4")),
        practitioner,
    )


def register(client: TestClient, client_id: str, scopes: str, **fields: Any) -> dict[str, Any]:
    body = {"client_id": client_id, "redirect_uris": [REDIRECT], "scopes": scopes, "public": True, **fields}
    r = client.post("/admin/clients", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text
    return r.json()


def launch(client: TestClient, client_id: str, sandbox: str, patient: str, **extra: str) -> dict[str, Any]:
    r = client.post(
        "/admin/launches", json={"client_id": client_id, "sandbox": sandbox, "patient": patient, **extra}, headers=ADMIN
    )
    assert r.status_code == 201, r.text
    return r.json()


def authorize_params(client_id: str, sandbox: str, scope: str, challenge: str, **extra: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": scope,
        "state": "st-123",
        "aud": fhir_base(sandbox),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }


def redirected(response: Any) -> dict[str, str]:
    """The query of a redirect to the app's redirect URI."""
    assert response.status_code in (302, 303), response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?"), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def ehr_launch_token(
    client: TestClient, chart: Chart, client_id: str, scope: str, **launch_extra: str
) -> dict[str, Any]:
    """An auto-approved EHR launch for Ann, all the way to the token response."""
    value = launch(client, client_id, chart.sandbox, chart.ann, **launch_extra)["launch"]
    verifier, challenge = pkce()
    params = authorize_params(client_id, chart.sandbox, scope, challenge, launch=value)
    answer = redirected(client.get(f"{auth_base(chart.sandbox)}/authorize", params=params, follow_redirects=False))
    assert "code" in answer, answer
    r = client.post(
        f"{auth_base(chart.sandbox)}/token",
        data={
            "grant_type": "authorization_code",
            "code": answer["code"],
            "redirect_uri": REDIRECT,
            "client_id": client_id,
            "code_verifier": verifier,
        },
    )
    assert r.status_code == 200, r.text
    return r.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
