"""The authorization endpoint: checking an authorization request, the consent and patient-picker page, codes.

An unknown client or a redirect URI the client did not register gets an error page, never a redirect
(RFC 6749 4.1.2.1).  Every other problem redirects back with ``error`` and ``state``.  An auto-approved
client gets its code straight away; any other needs a signed-in web user (the web UI's session) who
can reach the sandbox to approve it, and to pick a patient for a standalone launch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends, Request
from sqlalchemy import Connection
from starlette.responses import RedirectResponse, Response

from sandbox.accounts.cohorts import can_reach
from sandbox.accounts.sessions import WebSession
from sandbox.auth.clients import Client, find_client
from sandbox.auth.launches import find_launch
from sandbox.auth.scopes import InvalidScope, check_scopes, disallowed, split_scopes
from sandbox.auth.tokens import Grant, SmartPolicy, issue_code
from sandbox.concurrency import run_in_threadpool
from sandbox.fhir.validation import parse_json
from sandbox.store.layers import DEFAULT_SANDBOX, UnknownSandbox, hold_sandbox, resolve_view
from sandbox.urls import fhir_base, public_root
from web.pages import page, secure
from web.signin import SignInRequired, WebError, csrf_protected, current_session, safe_next

router = APIRouter(include_in_schema=False)

_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # base64url of a SHA-256, no padding
_PARAMS = ("response_type", "client_id", "redirect_uri", "scope", "state", "aud", "launch", "nonce")
_PARAMS += ("code_challenge", "code_challenge_method")


class _Redirect(Exception):
    def __init__(self, location: str) -> None:
        self.location = location


@dataclass(frozen=True)
class AuthRequest:
    sandbox_id: str
    client: Client
    redirect_uri: str
    state: str | None
    scopes: list[str]
    challenge: str
    nonce: str | None
    patient: str | None  # from the launch
    encounter: str | None
    fhir_user: str | None
    params: dict[str, str]
    app_context: str | None = None  # the launch's, from a CDS card's SMART link

    @property
    def needs_patient(self) -> bool:
        return self.patient is None and (
            "launch/patient" in self.scopes or any(s.startswith("patient/") for s in self.scopes)
        )

    def back(self, **answer: str | None) -> str:
        """The redirect URI with the answer (code or error) and the state."""
        query = {k: v for k, v in {**answer, "state": self.state}.items() if v is not None}
        joiner = "&" if urlsplit(self.redirect_uri).query else "?"
        return self.redirect_uri + joiner + urlencode(query)


def _policy(request: Request) -> SmartPolicy:
    return request.app.state.smart.policy


def _sandbox(request: Request) -> str:
    return request.path_params.get("sandbox_id", DEFAULT_SANDBOX)


def _error_page(status: int, title: str, message: str) -> Response:
    return secure(page("error.html", {"title": title, "message": message}, status))


def _audiences(request: Request, sandbox_id: str) -> set[str]:
    bases = {fhir_base(request, sandbox_id)}
    if sandbox_id == DEFAULT_SANDBOX:
        bases.add(public_root(request) + "/sandboxes/default/fhir")
    return {b.rstrip("/") for b in bases}


def check_request(conn: Connection, request: Request, sandbox_id: str, params: dict[str, str]) -> AuthRequest:
    """The checked authorization request; ``WebError`` for an error page, ``_Redirect`` for an error redirect."""
    try:
        hold_sandbox(conn, sandbox_id)  # the code this request may end in must not outlive the sandbox
    except UnknownSandbox:
        raise WebError(404, "Unknown sandbox", f"There is no sandbox '{sandbox_id}'.") from None
    client = find_client(conn, params.get("client_id", ""))
    if client is None:
        raise WebError(400, "Unknown app", "The client_id of this authorization request is not registered.")
    redirect_uri = params.get("redirect_uri")
    if redirect_uri is None and len(client.redirect_uris) == 1:
        redirect_uri = client.redirect_uris[0]
    if redirect_uri is None or redirect_uri not in client.redirect_uris:
        raise WebError(
            400, "Unknown redirect URI", f"The redirect_uri is not one that '{client.client_id}' registered."
        )
    state = params.get("state")

    def fail(error: str, description: str) -> _Redirect:
        query = {"error": error, "error_description": description, "state": state}
        joiner = "&" if urlsplit(redirect_uri).query else "?"
        return _Redirect(redirect_uri + joiner + urlencode({k: v for k, v in query.items() if v is not None}))

    if params.get("response_type") != "code":
        raise fail("unsupported_response_type", "response_type must be code")
    if not state:
        raise fail("invalid_request", "state is required")
    if params.get("code_challenge_method") != "S256" or not _CHALLENGE.match(params.get("code_challenge", "")):
        raise fail(
            "invalid_request", "PKCE is required: code_challenge (S256, 43 characters) and code_challenge_method=S256"
        )
    if (params.get("aud") or "").rstrip("/") not in _audiences(request, sandbox_id):
        raise fail("invalid_request", f"aud must be this sandbox's FHIR base, {fhir_base(request, sandbox_id)}")
    scopes = split_scopes(params.get("scope"))
    if not scopes:
        raise fail("invalid_scope", "scope is required")
    try:
        check_scopes(scopes)
    except InvalidScope as exc:
        raise fail("invalid_scope", str(exc)) from None
    if any(s.startswith("system/") for s in scopes):
        raise fail("invalid_scope", "system/ scopes are for backend services (client_credentials), not for launches")
    refused = disallowed(scopes, list(client.scopes))
    if refused:
        raise fail("invalid_scope", f"'{client.client_id}' may not ask for: {' '.join(refused)}")
    patient = encounter = fhir_user = app_context = None
    if params.get("launch"):
        if "launch" not in scopes:
            raise fail("invalid_scope", "An EHR launch asks for the 'launch' scope")
        launch = find_launch(conn, sandbox_id, params["launch"], _policy(request))
        if launch is None or launch.client_id != client.client_id:
            raise fail("invalid_request", "launch is unknown, expired, or for another app or sandbox")
        patient, encounter, fhir_user, app_context = (
            launch.patient,
            launch.encounter,
            launch.fhir_user,
            launch.app_context,
        )
    elif "launch" in scopes:
        raise fail("invalid_request", "The 'launch' scope needs a launch parameter (an EHR launch)")
    if "denied_consent" in client.faults:
        raise fail("access_denied", "The user denied the request (simulated: fault denied_consent)")
    kept = {k: params[k] for k in _PARAMS if params.get(k)}
    kept["redirect_uri"] = redirect_uri
    return AuthRequest(
        sandbox_id,
        client,
        redirect_uri,
        state,
        scopes,
        params["code_challenge"],
        params.get("nonce"),
        patient,
        encounter,
        fhir_user,
        kept,
        app_context,
    )


def _code(conn: Connection, request: Request, auth: AuthRequest, grant: Grant) -> str:
    code = issue_code(conn, auth.sandbox_id, grant, auth.redirect_uri, auth.challenge, _policy(request))
    return auth.back(code=code)


def _grant(auth: AuthRequest, patient: str | None, user_id: str | None, fhir_user: str | None) -> Grant:
    return Grant(
        client_id=auth.client.client_id,
        scopes=tuple(auth.scopes),
        patient=patient,
        encounter=auth.encounter,
        fhir_user=fhir_user,
        user_id=user_id,
        nonce=auth.nonce,
        app_context=auth.app_context,
    )


def _redirect(location: str) -> Response:
    return RedirectResponse(location, status_code=302)


# ---- GET (and POST) /auth/authorize -------------------------------------------------------------------------


@router.get("/authorize")
async def authorize_get(request: Request) -> Response:
    return await _authorize(request, dict(request.query_params))


@router.post("/authorize")
async def authorize_post(request: Request) -> Response:
    """authorize-post: the same request as form parameters."""
    form = await request.form()
    return await _authorize(request, {k: v for k, v in form.items() if isinstance(v, str)})


async def _authorize(request: Request, params: dict[str, str]) -> Response:
    sandbox_id = _sandbox(request)
    db = request.app.state.db

    def work() -> Response:
        with db.write() as conn:
            auth = check_request(conn, request, sandbox_id, params)
            if auth.client.auto_approve:
                if auth.needs_patient:
                    return _redirect(
                        auth.back(
                            error="invalid_request",
                            error_description="An auto-approved app cannot pick a patient: use an EHR launch "
                            "(POST /admin/launches) or a non-auto-approved client",
                        )
                    )
                return _redirect(_code(conn, request, auth, _grant(auth, auth.patient, None, auth.fhir_user)))
        session = current_session(request)
        if session is None:
            query = urlencode(auth.params)
            raise SignInRequired(safe_next(request.url.path + "?" + query))
        return _consent_page(request, auth, session, params.get("q"))

    try:
        return await run_in_threadpool(work)
    except _Redirect as exc:
        return _redirect(exc.location)
    except WebError as exc:
        return _error_page(exc.status, exc.title, exc.message)


def _may_use(conn: Connection, session: WebSession, sandbox_id: str) -> bool:
    return session.user.role == "admin" or sandbox_id == DEFAULT_SANDBOX or can_reach(conn, session.user, sandbox_id)


def _patients(request: Request, sandbox_id: str, name: str | None) -> list[dict[str, str]]:
    """The picker's list: up to 50 patients of the sandbox, by name if one was typed (the search engine's)."""
    state = request.app.state
    query = [("_count", "50"), ("_sort", "family")] + ([("name", name)] if name else [])
    with state.db.read() as conn:
        view = resolve_view(conn, sandbox_id)
        result = state.fhir.search(conn, view, "Patient", query)
    out = []
    for stored in result.matches:
        patient = parse_json(stored.content or b"{}")
        names = patient.get("name") or [{}]
        first = names[0]
        shown = " ".join([*first.get("given", []), first.get("family", "")]).strip() or first.get("text") or stored.id
        out.append({"id": stored.id, "name": shown, "birth_date": patient.get("birthDate", "")})
    return out


def _consent_page(request: Request, auth: AuthRequest, session: WebSession, name: str | None) -> Response:
    with request.app.state.db.read() as conn:
        if not _may_use(conn, session, auth.sandbox_id):
            raise WebError(403, "Not allowed", f"You cannot use sandbox '{auth.sandbox_id}'.")
    patients = _patients(request, auth.sandbox_id, name) if auth.needs_patient else []
    context: dict[str, Any] = {
        "client_id": auth.client.client_id,
        "sandbox": auth.sandbox_id,
        "scopes": auth.scopes,
        "patient": auth.patient,
        "encounter": auth.encounter,
        "needs_patient": auth.needs_patient,
        "patients": patients,
        "q": name or "",
        "params": auth.params,
        "action": request.url.path + "/decision",
        "picker_action": request.url.path,
        "csrf_token": session.csrf_token,
        "user": session.user,
    }
    response = page("smart_consent.html", context)
    secure(response)
    # The decision redirects to the app: browsers apply form-action to that redirect too.
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(auth.redirect_uri))
    # The chart shows an app in an iframe (web/chart/app_launch.py); an app that is not auto-approved sends that
    # frame here, so this page may be framed by the site's own pages, and by no one else.
    response.headers["Content-Security-Policy"] = (
        response.headers["Content-Security-Policy"]
        .replace("form-action 'self'", f"form-action 'self' {origin}")
        .replace("frame-ancestors 'none'", "frame-ancestors 'self'")
    )
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


@router.post("/authorize/decision")
async def decision(request: Request, session: WebSession = Depends(csrf_protected)) -> Response:
    """The consent form's answer: approve (with the picked patient, if one was needed) or deny."""
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    params = {k: fields[k] for k in _PARAMS if k in fields}
    sandbox_id = _sandbox(request)
    state = request.app.state

    def work() -> Response:
        with state.db.write() as conn:
            auth = check_request(conn, request, sandbox_id, params)
            if not _may_use(conn, session, sandbox_id):
                raise WebError(403, "Not allowed", f"You cannot use sandbox '{sandbox_id}'.")
            if fields.get("decision") != "approve":
                return _redirect(auth.back(error="access_denied", error_description="The user denied the request"))
            patient = auth.patient
            if auth.needs_patient:
                patient = fields.get("patient") or ""
                view = resolve_view(conn, sandbox_id)
                found = state.fhir.repo.current(conn, view, "Patient", patient) if patient else None
                if found is None or found.deleted:
                    raise WebError(400, "Pick a patient", "Choose one of the sandbox's patients, then approve.")
            fhir_user = auth.fhir_user or practitioner_of(conn, state, sandbox_id, session.user.email)
            return _redirect(_code(conn, request, auth, _grant(auth, patient, session.user.id, fhir_user)))

    try:
        return await run_in_threadpool(work)
    except _Redirect as exc:
        return _redirect(exc.location)
    except WebError as exc:
        return _error_page(exc.status, exc.title, exc.message)


def practitioner_of(conn: Connection, state: Any, sandbox_id: str, email: str) -> str | None:
    """The signed-in user's fhirUser: the sandbox's Practitioner with their email, if there is exactly one."""
    view = resolve_view(conn, sandbox_id)
    found = state.fhir.search(conn, view, "Practitioner", [("email", email), ("_count", "2")]).matches
    return f"Practitioner/{found[0].id}" if len(found) == 1 else None
