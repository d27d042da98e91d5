"""Who is calling, and what they may reach.

Credentials are bearer tokens: the admin token (from the settings; accepted
everywhere), a user's API token (``sandbox.accounts.tokens``), or, on the FHIR
API only, a SMART access token (``sandbox.auth.tokens``), bound to one sandbox
and limited by its scopes (``FhirCaller.access``).  The default
sandbox stays open without credentials, as public test servers are.  Roles:

- admin: every sandbox and the whole admin API;
- trainer: the sandboxes of the cohorts they train, and their cohorts in the admin API;
- trainee, vendor: only the sandboxes they are members of; no admin API.

Missing or bad credentials get 401; good credentials for the wrong place get 403.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import HTTPException, Request
from sqlalchemy import Connection, select

from sandbox.accounts.cohorts import can_reach
from sandbox.accounts.tokens import PREFIX as USER_TOKEN_PREFIX
from sandbox.accounts.tokens import user_for_token
from sandbox.accounts.users import User
from sandbox.auth.scopes import Access
from sandbox.auth.tokens import TokenRecord, find_token, stamp
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


@dataclass(frozen=True)
class FhirCaller:
    """Who is calling the FHIR API: the actor writes are attributed to, and a SMART token's limits (else None)."""

    actor: Actor
    access: Access | None = None
    scopes: str = ""


class Authenticator:
    def __init__(self, admin_token: str, db: Database, clock: Callable[[], datetime] | None = None) -> None:
        self.admin_token = admin_token
        self.db = db
        self.clock = clock or (lambda: datetime.now(UTC))  # for SMART token expiry; tests move it

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

    def fhir_caller(self, request: Request, sandbox_id: str) -> FhirCaller:
        """FHIR API: the caller, SMART access tokens included; a 401/403 OperationOutcome if not allowed."""
        token = bearer_token(request)
        if token is None or token.startswith(USER_TOKEN_PREFIX) or hmac.compare_digest(token, self.admin_token):
            return FhirCaller(self(request, sandbox_id))
        with self.db.read() as conn:
            record = find_token(conn, sandbox_id, token)
        if record is None:
            return FhirCaller(self(request, sandbox_id))  # not a SMART token of this sandbox: the user-token path
        return _smart_caller(record, self.clock())

    def __call__(self, request: Request, sandbox_id: str) -> Actor:
        """FHIR API without SMART tokens (and the HL7 v2 API): the actor to attribute writes to, or a 401/403.

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
                # RFC 6750's invalid_token, as for an expired SMART token: one the sweep has removed lands here.
                raise _fhir_error(401, "login", str(exc), _invalid_token("unknown token")) from None
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


def _smart_caller(record: TokenRecord, now: datetime) -> FhirCaller:
    if record.kind != "access":
        raise _fhir_error(401, "login", "A refresh token is not an access token", _invalid_token("wrong kind"))
    if record.revoked:
        raise _fhir_error(401, "login", "The access token was revoked", _invalid_token("revoked"))
    if record.expires_at <= stamp(now):
        raise _fhir_error(401, "login", "The access token has expired", _invalid_token("expired"))
    grant = record.grant
    scopes = " ".join(grant.scopes)
    return FhirCaller(Actor(grant.actor_id, "smart"), Access.of(list(grant.scopes), grant.patient), scopes)


def _invalid_token(reason: str) -> dict[str, str]:
    return {"WWW-Authenticate": f'Bearer realm="ehr-sandbox", error="invalid_token", error_description="{reason}"'}


def _fhir_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> FhirError:
    error = FhirError.of(status, code, message)
    error.headers.update(headers or {})
    return error
