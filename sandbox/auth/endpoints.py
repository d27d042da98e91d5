"""The token, introspection (RFC 7662), revocation (RFC 7009) and JWKS endpoints, and the SMART configuration.

Client authentication at the token endpoint: a public client names itself (``client_id``) and proves the
code with PKCE; a confidential-symmetric client sends its ``client_secret`` (HTTP Basic or form); a
confidential-asymmetric client sends a ``private_key_jwt`` client assertion.  Errors are RFC 6749 JSON
(``error``, ``error_description``), 400 or 401, never cached.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import orjson
from fastapi import APIRouter, Request
from joserfc.errors import JoseError
from joserfc.jws import extract_compact
from sqlalchemy import Connection
from starlette.responses import JSONResponse, Response

from sandbox.auth.backend_services import ASSERTION_TYPE, JwksCache, verify_assertion
from sandbox.auth.bearer import bearer_token
from sandbox.auth.clients import Client, find_client, secret_matches
from sandbox.auth.keys import SigningKeys
from sandbox.auth.scopes import InvalidScope, check_scopes, disallowed, split_scopes
from sandbox.auth.smart_config import endpoints, smart_configuration
from sandbox.auth.tokens import (
    CodeReused,
    Grant,
    Issued,
    OAuthError,
    SmartPolicy,
    find_token,
    id_token,
    introspection,
    issue_tokens,
    redeem_code,
    revoke_grant,
    revoke_token,
    use_refresh_token,
)
from sandbox.concurrency import run_in_threadpool
from sandbox.fhir.responses import fhir_response
from sandbox.store.layers import DEFAULT_SANDBOX, UnknownSandbox, hold_sandbox, resolve_view
from sandbox.urls import fhir_base

router = APIRouter(include_in_schema=False)  # under /auth and /sandboxes/{sandbox_id}/auth
well_known = APIRouter(include_in_schema=False)  # under each FHIR base

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass
class SmartState:
    """The authorization server's process-wide parts (``app.state.smart``)."""

    keys: SigningKeys
    policy: SmartPolicy = field(default_factory=SmartPolicy)
    jwks_cache: JwksCache = field(default_factory=JwksCache)


def _state(request: Request) -> SmartState:
    return request.app.state.smart


def _sandbox(request: Request) -> str:
    return request.path_params.get("sandbox_id", DEFAULT_SANDBOX)


def _json(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status, headers={**_NO_STORE, **(headers or {})})


def _error(exc: OAuthError) -> Response:
    headers = {"WWW-Authenticate": 'Basic realm="ehr-sandbox"'} if exc.status == 401 else None
    return _json({"error": exc.error, "error_description": exc.description}, exc.status, headers)


async def _form(request: Request) -> dict[str, str]:
    if "application/x-www-form-urlencoded" not in request.headers.get("content-type", ""):
        raise OAuthError("invalid_request", "The body must be application/x-www-form-urlencoded")
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _basic(request: Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise OAuthError(
            "invalid_client", "The Basic credentials are not base64 of client_id:client_secret", 401
        ) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthError("invalid_client", "The Basic credentials are not client_id:client_secret", 401)
    return unquote(client_id), unquote(secret)  # RFC 6749 2.3.1: form-urlencoded before base64


def authenticate_client(
    conn: Connection, request: Request, form: dict[str, str], *, required: bool = True
) -> Client | None:
    """The calling client, authenticated as its kind requires; ``OAuthError`` (invalid_client, 401) if not."""
    state = _state(request)
    basic = _basic(request)
    assertion = form.get("client_assertion")
    if assertion is not None or form.get("client_assertion_type") is not None:
        if form.get("client_assertion_type") != ASSERTION_TYPE or not assertion:
            raise OAuthError("invalid_client", f"client_assertion_type must be {ASSERTION_TYPE}", 401)
        client_id = form.get("client_id") or _unverified_issuer(assertion)
    elif basic is not None:
        client_id = basic[0]
    else:
        client_id = form.get("client_id", "")
    if not client_id:
        if not required:
            return None
        raise OAuthError("invalid_client", "The client is not identified (client_id, Basic or client_assertion)", 401)
    client = find_client(conn, client_id)
    if client is None:
        raise OAuthError("invalid_client", f"Unknown client '{client_id}'", 401)
    if "invalid_client" in client.faults:
        raise OAuthError("invalid_client", "Client authentication failed (simulated: fault invalid_client)", 401)
    if assertion is not None:
        verify_assertion(
            conn, client, assertion, endpoints(request, _sandbox(request))["token"], state.policy, state.jwks_cache
        )
    elif client.public:
        if basic is not None or form.get("client_secret"):
            raise OAuthError("invalid_client", "A public client has no secret", 401)
    elif client.has_secret:
        secret = basic[1] if basic is not None else form.get("client_secret", "")
        if not secret or not secret_matches(conn, client.client_id, secret):
            raise OAuthError("invalid_client", "The client_secret is wrong or missing", 401)
    else:
        raise OAuthError("invalid_client", f"Client '{client_id}' authenticates with a client_assertion", 401)
    return client


def _unverified_issuer(assertion: str) -> str:
    """Which client an assertion claims to be from, to find the key that then verifies it."""
    try:
        claims = orjson.loads(extract_compact(assertion.encode("ascii")).payload)
    except (JoseError, ValueError, UnicodeError):
        raise OAuthError("invalid_client", "The client_assertion is not a JWT", 401) from None
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    if not isinstance(issuer, str):
        raise OAuthError("invalid_client", "The client_assertion has no iss", 401)
    return issuer


# ---- the token endpoint ------------------------------------------------------------------------------------


@router.post("/token")
async def token(request: Request) -> Response:
    try:
        form = await _form(request)
        return await run_in_threadpool(_token, request, form)
    except OAuthError as exc:
        return _error(exc)


def _token(request: Request, form: dict[str, str]) -> Response:
    state = _state(request)
    sandbox_id = _sandbox(request)
    issuer = fhir_base(request, sandbox_id)
    grant_type = form.get("grant_type")
    try:
        with state_db(request).write() as conn:
            try:
                hold_sandbox(conn, sandbox_id)  # the tokens must not outlive the sandbox
            except UnknownSandbox:
                raise OAuthError("invalid_request", f"There is no sandbox '{sandbox_id}'") from None
            client = authenticate_client(conn, request, form)
            assert client is not None
            if grant_type == "authorization_code":
                grant, grant_id = redeem_code(
                    conn,
                    sandbox_id,
                    form.get("code", ""),
                    client.client_id,
                    form.get("redirect_uri"),
                    form.get("code_verifier"),
                    state.policy,
                )
                issued = issue_tokens(
                    conn, sandbox_id, grant, state.policy, grant_id=grant_id, expired="expired_token" in client.faults
                )
                body = _token_body(issued, grant, issuer)
            elif grant_type == "refresh_token":
                grant, grant_id = use_refresh_token(
                    conn, sandbox_id, form.get("refresh_token", ""), client.client_id, form.get("scope"), state.policy
                )
                issued = issue_tokens(
                    conn,
                    sandbox_id,
                    grant,
                    state.policy,
                    grant_id=grant_id,
                    refresh=False,
                    expired="expired_token" in client.faults,
                )
                body = _token_body(issued, grant, issuer)
            elif grant_type == "client_credentials":
                grant = _backend_grant(client, form.get("scope"))
                issued = issue_tokens(
                    conn, sandbox_id, grant, state.policy, refresh=False, expired="expired_token" in client.faults
                )
                body = _token_body(issued, grant, issuer)
            else:
                raise OAuthError(
                    "unsupported_grant_type", "grant_type is authorization_code, refresh_token or client_credentials"
                )
    except CodeReused as exc:
        with state_db(request).write() as conn:
            revoke_grant(conn, sandbox_id, exc.grant_id)
        raise
    if grant_type != "client_credentials" and "openid" in grant.scopes:
        # After the transaction: the signing key may need creating, in a transaction of its own.
        body["id_token"] = id_token(state.keys, issuer, grant, state.policy)
    return _json(body)


def state_db(request: Request) -> Any:
    return request.app.state.db


def _backend_grant(client: Client, scope: str | None) -> Grant:
    if client.kind != "confidential-asymmetric":
        raise OAuthError("unauthorized_client", "client_credentials is for clients that authenticate with a JWKS")
    scopes = split_scopes(scope)
    if not scopes:
        raise OAuthError("invalid_scope", "scope is required (system/ scopes)")
    try:
        parsed = check_scopes(scopes)
    except InvalidScope as exc:
        raise OAuthError("invalid_scope", str(exc)) from None
    if len(parsed) != len(scopes) or any(p.context != "system" for p in parsed):
        raise OAuthError("invalid_scope", "A backend service asks for system/ scopes only")
    refused = disallowed(scopes, list(client.scopes))
    if refused:
        raise OAuthError("invalid_scope", f"'{client.client_id}' may not ask for: {' '.join(refused)}")
    return Grant(client_id=client.client_id, scopes=tuple(scopes))


def _token_body(issued: Issued, grant: Grant, issuer: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": " ".join(grant.scopes),
    }
    if issued.refresh_token:
        body["refresh_token"] = issued.refresh_token
    if grant.patient and ("launch" in grant.scopes or "launch/patient" in grant.scopes or _has_patient_scope(grant)):
        body["patient"] = grant.patient
        body["need_patient_banner"] = True
    if grant.encounter and ("launch" in grant.scopes or "launch/encounter" in grant.scopes):
        body["encounter"] = grant.encounter
    if grant.fhir_user and "fhirUser" in grant.scopes:
        body["fhirUser"] = f"{issuer}/{grant.fhir_user}"
    if grant.app_context:  # CDS Hooks 2.0: a smart link's appContext reaches the app with its launch context
        body["appContext"] = grant.app_context
    return body


def _has_patient_scope(grant: Grant) -> bool:
    return any(s.startswith("patient/") for s in grant.scopes)


# ---- introspection and revocation -------------------------------------------------------------------------------


@router.post("/introspect")
async def introspect(request: Request) -> Response:
    """RFC 7662.  The caller shows who it is: the admin token, an active access token of this sandbox (a resource
    server), or client credentials; a client learns about its own tokens only."""
    try:
        form = await _form(request)
        return await run_in_threadpool(_introspect, request, form)
    except OAuthError as exc:
        return _error(exc)


def _introspect(request: Request, form: dict[str, str]) -> Response:
    state = _state(request)
    sandbox_id = _sandbox(request)
    now = state.policy.clock()
    issuer = fhir_base(request, sandbox_id)
    with state_db(request).write() as conn:
        caller = bearer_token(request)
        own_client: str | None = None
        if caller is not None:
            admin = request.app.state.authenticate.admin_token
            if not hmac.compare_digest(caller, admin):
                record = find_token(conn, sandbox_id, caller)
                if record is None or record.kind != "access" or not record.active(now):
                    raise OAuthError("invalid_token", "The bearer token may not introspect", 401)
        else:
            client = authenticate_client(conn, request, form)
            assert client is not None
            own_client = client.client_id
        record = find_token(conn, sandbox_id, form.get("token", ""))
        if record is not None and own_client is not None and record.client_id != own_client:
            record = None
    return _json(introspection(record, issuer, now))


@router.post("/revoke")
async def revoke(request: Request) -> Response:
    """RFC 7009: the client revokes one of its tokens (a refresh token ends its access tokens too).  A token that
    is unknown or not the client's is answered 200 all the same, as the RFC says."""
    try:
        form = await _form(request)
        return await run_in_threadpool(_revoke, request, form)
    except OAuthError as exc:
        return _error(exc)


def _revoke(request: Request, form: dict[str, str]) -> Response:
    sandbox_id = _sandbox(request)
    token_value = form.get("token")
    if not token_value:
        raise OAuthError("invalid_request", "token is required")
    with state_db(request).write() as conn:
        client = authenticate_client(conn, request, form)
        assert client is not None
        record = find_token(conn, sandbox_id, token_value)
        if record is not None and record.client_id == client.client_id:
            revoke_token(conn, sandbox_id, token_value)
    return _json({})


@router.get("/jwks")
def jwks(request: Request) -> Response:
    return JSONResponse(_state(request).keys.jwks(), headers={"Cache-Control": "public, max-age=300"})


# ---- /.well-known/smart-configuration under each FHIR base -----------------------------------------------------


@well_known.get("/.well-known/smart-configuration")
def configuration(request: Request) -> Response:
    sandbox_id = _sandbox(request)
    with state_db(request).read() as conn:
        try:
            resolve_view(conn, sandbox_id)
        except UnknownSandbox:
            return fhir_response(
                {
                    "resourceType": "OperationOutcome",
                    "issue": [
                        {"severity": "error", "code": "not-found", "diagnostics": f"There is no sandbox '{sandbox_id}'"}
                    ],
                },
                404,
            )
    return JSONResponse(smart_configuration(request, sandbox_id))
