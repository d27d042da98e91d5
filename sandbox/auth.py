"""Who is calling.  Until users and SMART arrive: the default sandbox is open, every other needs the admin token."""

from __future__ import annotations

import hmac

from fastapi import Request

from sandbox.fhir.outcome import FhirError
from sandbox.store.layers import DEFAULT_SANDBOX
from sandbox.store.repository import Actor


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class Authenticator:
    def __init__(self, admin_token: str) -> None:
        self.admin_token = admin_token

    def is_admin(self, request: Request) -> bool:
        token = bearer_token(request)
        return token is not None and hmac.compare_digest(token, self.admin_token)

    def __call__(self, request: Request, sandbox_id: str) -> Actor:
        if self.is_admin(request):
            return Actor("admin", "fhir-api")
        if bearer_token(request) is not None:
            raise FhirError.of(401, "login", "The bearer token is not valid")
        if sandbox_id == DEFAULT_SANDBOX:
            return Actor("anonymous", "fhir-api")
        error = FhirError.of(401, "login", f"Sandbox '{sandbox_id}' needs credentials (Authorization: Bearer ...)")
        error.headers["WWW-Authenticate"] = 'Bearer realm="ehr-sandbox"'
        raise error
