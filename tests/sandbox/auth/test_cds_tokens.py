"""The fhirAuthorization of a CDS Hooks call: a read-only SMART token for the chart's patient only."""

from __future__ import annotations

from fastapi.testclient import TestClient

from sandbox.auth.cds_tokens import cds_token_issuer
from sandbox.cdshooks.client import TokenRequest
from sandbox.cdshooks.hooks import HookUser
from sandbox.cdshooks.services import BUILTIN


def _patient_with_observation(client: TestClient, family: str) -> tuple[str, str]:
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": family}]}).json()["id"]
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{pid}"},
    }
    return pid, client.post("/fhir/Observation", json=obs).json()["id"]


def test_a_cds_service_token_reads_the_charts_patient_and_nothing_else(app) -> None:  # type: ignore[no-untyped-def]
    issue = cds_token_issuer(app.state.db, app.state.smart)
    with TestClient(app) as client:
        pid, obs = _patient_with_observation(client, "Chart")
        other_pid, other_obs = _patient_with_observation(client, "Other")
        request = TokenRequest("default", "vendor-1", "risk", HookUser("u-1"), pid, "patient/Observation.rs")
        authorization = issue(request)
        assert authorization is not None
        assert authorization["token_type"] == "Bearer" and authorization["scope"] == "patient/Observation.rs"
        assert authorization["subject"] == "cds-service:vendor-1/risk"
        bearer = {"Authorization": f"Bearer {authorization['access_token']}"}

        found = client.get("/fhir/Observation", headers=bearer).json()
        assert [e["resource"]["id"] for e in found.get("entry", [])] == [obs]
        assert client.get(f"/fhir/Observation/{other_obs}", headers=bearer).status_code in (403, 404)
        assert client.get(f"/fhir/Patient/{other_pid}", headers=bearer).status_code == 403  # no Patient scope
        write = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
        assert (
            client.post(
                "/fhir/Observation", json={**write, "subject": {"reference": f"Patient/{pid}"}}, headers=bearer
            ).status_code
            == 403
        )


def test_the_built_in_services_get_no_token(app) -> None:  # type: ignore[no-untyped-def]
    issue = cds_token_issuer(app.state.db, app.state.smart)
    assert issue(TokenRequest("default", BUILTIN, "ai-risk", HookUser("u-1"), "p1", "patient/Patient.rs")) is None
