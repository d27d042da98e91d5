"""SMART access tokens for CDS services: the ``fhirAuthorization`` of a CDS Hooks call.

A service that needs more than its prefetch reads the sandbox's FHIR API with this
token: read-only, limited to the patient of the chart and to the resource types the
service's prefetch names (``TokenRequest.scope``), valid for the access lifetime of
SMART tokens, never refreshable.  Reads and any write attempt are enforced like any
SMART token's (``sandbox/fhir/scoped.py``); the client id names the registration and
service, so the sandbox's request log and audit say which service read what.
"""

from __future__ import annotations

from typing import Any

from sandbox.auth.endpoints import SmartState
from sandbox.auth.tokens import Grant, issue_tokens
from sandbox.cdshooks.client import TokenIssuer, TokenRequest
from sandbox.cdshooks.services import BUILTIN
from sandbox.store.database import Database


def cds_token_issuer(db: Database, smart: SmartState) -> TokenIssuer:
    def issue(request: TokenRequest) -> dict[str, Any] | None:
        if request.registration_id == BUILTIN:
            return None  # the built-in services answer from the request alone: no token to hand out
        client_id = f"cds-service:{request.registration_id}/{request.service_id}"
        grant = Grant(
            client_id,
            tuple(request.scope.split()),
            patient=request.patient_id,
            fhir_user=request.user.fhir_user,
            user_id=request.user.account_id,
        )
        with db.write() as conn:
            issued = issue_tokens(conn, request.sandbox_id, grant, smart.policy, refresh=False)
        return {
            "access_token": issued.access_token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "scope": request.scope,
            "subject": client_id,
        }

    return issue
