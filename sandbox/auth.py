"""Who is calling, and what they may reach.

Credentials are bearer tokens: the admin token (from the settings; accepted
everywhere) or a user's API token (``sandbox.accounts.tokens``).  The default
sandbox stays open without credentials, as public test servers are.  Roles:

- admin: every sandbox and the whole admin API;
- trainer: the sandboxes of the cohorts they train, and their cohorts in the admin API;
- trainee, vendor: only the sandboxes they are members of; no admin API.

Missing or bad credentials get 401; good credentials for the wrong place get 403.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import HTTPException, Request
from sqlalchemy import Connection, select

from sandbox.accounts.cohorts import can_reach
from sandbox.accounts.tokens import user_for_token
from sandbox.accounts.users import User
from sandbox.fhir.outcome import FhirError
from sandbox.store.database import Database
from sandbox.store.layers import DEFAULT_SANDBOX
from sandbox.store.repository import Actor
from sandbox.store.schema import layers

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="ehr-sandbox"'}


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the admin token (``user`` None) or a user."""

    user: User | None

    @property
    def role(self) -> str:
        return self.user.role if self.user else "admin"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def actor_id(self) -> str:
        return f"user:{self.user.id}" if self.user else "admin"


class Authenticator:
    def __init__(self, admin_token: str, db: Database) -> None:
        self.admin_token = admin_token
        self.db = db

    def is_admin(self, request: Request) -> bool:
        token = bearer_token(request)
        return token is not None and hmac.compare_digest(token, self.admin_token)

    def principal(self, request: Request, conn: Connection | None = None) -> Principal | None:
        """The caller, None without credentials; a token that is not valid raises ``InvalidToken``."""
        token = bearer_token(request)
        if token is None:
            return None
        if hmac.compare_digest(token, self.admin_token):
            return Principal(None)
        if conn is None:
            with self.db.read() as own:
                user = user_for_token(own, token)
        else:
            user = user_for_token(conn, token)
        if user is None:
            raise InvalidToken("The bearer token is not valid")
        return Principal(user)

    # ---- the FHIR API ------------------------------------------------------------------------

    def __call__(self, request: Request, sandbox_id: str) -> Actor:
        """FHIR API: the actor to attribute writes to, or a 401/403 OperationOutcome.

        At most one connection and three key lookups: the token, the user's reach, the sandbox.
        """
        token = bearer_token(request)
        if token is None:
            if sandbox_id == DEFAULT_SANDBOX:
                return Actor("anonymous", "fhir-api")
            raise _fhir_error(
                401, "login", f"Sandbox '{sandbox_id}' needs credentials (Authorization: Bearer ...)", _CHALLENGE
            )
        if sandbox_id == DEFAULT_SANDBOX and hmac.compare_digest(token, self.admin_token):
            return Actor("admin", "fhir-api")
        with self.db.read() as conn:
            try:
                principal = self.principal(request, conn)
            except InvalidToken as exc:
                raise _fhir_error(401, "login", str(exc), _CHALLENGE) from None
            assert principal is not None
            if sandbox_id != DEFAULT_SANDBOX:
                if principal.user is not None and not can_reach(conn, principal.user, sandbox_id):
                    raise _fhir_error(
                        403,
                        "forbidden",
                        f"{principal.user.email} ({principal.role}) may not use sandbox '{sandbox_id}'",
                    )
                row = conn.execute(select(layers.c.kind, layers.c.baseline_id).where(layers.c.id == sandbox_id)).first()
                # Another server process (or the CLI) may have deleted the sandbox, or deleted it and made a new
                # one of that id on another baseline: the cached View must match the row, or go.
                request.app.state.views.revalidate(sandbox_id, row)
        return Actor(principal.actor_id, "fhir-api")

    # ---- the admin API -------------------------------------------------------------------------

    def admin_api(self, request: Request, *roles: str) -> Principal:
        """Admin API: the caller if their role is admin or one of ``roles``; else 401 or 403 (JSON)."""
        try:
            principal = self.principal(request)
        except InvalidToken as exc:
            raise HTTPException(401, str(exc), headers=_CHALLENGE) from None
        if principal is None:
            raise HTTPException(401, "The admin API needs credentials (Authorization: Bearer ...)", headers=_CHALLENGE)
        if not principal.is_admin and principal.role not in roles:
            raise HTTPException(403, f"A {principal.role} may not do this")
        return principal


class InvalidToken(Exception):
    pass


def _fhir_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> FhirError:
    error = FhirError.of(status, code, message)
    error.headers.update(headers or {})
    return error
