"""Who is signed in to the web UI: the session cookie, the dependencies pages use, and where to send people.

Pages take ``Depends(signed_in)`` (anyone signed in), ``Depends(require_role(...))`` (403 for other roles)
and, for every form post, ``Depends(csrf_protected)``.  Someone not signed in is sent to ``/login`` and
brought back afterwards.  The session cookie is only ever read here: the FHIR and admin APIs take bearer
tokens only (``sandbox/auth.py``), so a browser's cookie can never be replayed against them cross-site.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlencode, urlsplit

from fastapi import Depends, Request
from starlette.responses import Response

from sandbox.accounts.sessions import (
    SessionPolicy,
    WebSession,
    lookup_session,
    needs_touch,
    touch_session,
    utc_now,
)
from sandbox.urls import public_root
from web.csrf import submitted_token, tokens_match
from web.throttle import LoginThrottle

SESSION_COOKIE = "ehr_sandbox_session"


@dataclass
class WebAuth:
    """The web UI's sign-in settings and state (``app.state.web``); tests swap the clock to move time."""

    policy: SessionPolicy = field(default_factory=SessionPolicy)
    clock: Callable[[], datetime] = utc_now
    throttle: LoginThrottle = field(default_factory=LoginThrottle)


class SignInRequired(Exception):
    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


class WebError(Exception):
    """An error page: the status, and a message safe to show."""

    def __init__(self, status: int, title: str, message: str) -> None:
        self.status = status
        self.title = title
        self.message = message


def web_auth(request: Request) -> WebAuth:
    return request.app.state.web


# ---- cookies ---------------------------------------------------------------------------------------


def is_https(request: Request) -> bool:
    """Whether browsers reach us over https: the configured public URL says so, else the request does."""
    return public_root(request).lower().startswith("https://")


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", secure=is_https(request), httponly=True, samesite="lax")


def clear_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(name, path="/", secure=is_https(request), httponly=True, samesite="lax")


# ---- where to go after signing in ------------------------------------------------------------------


def safe_next(target: str | None) -> str:
    """``target`` if it is a path on this site, else ``/``: never an open redirect.

    Refused: absolute URLs, scheme-relative ``//host``, backslashes (browsers read ``/\\host`` as ``//host``),
    control characters, and anything that does not start with a single ``/``.
    """
    if not target or len(target) > 2000 or not target.startswith("/") or target.startswith("//"):
        return "/"
    if "\\" in target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def login_url(next_path: str) -> str:
    return "/login" if next_path == "/" else "/login?" + urlencode({"next": next_path})


# ---- dependencies ----------------------------------------------------------------------------------


def current_session(request: Request) -> WebSession | None:
    """The live session of the request's cookie, else None.  Sync: FastAPI runs it off the event loop."""
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret:
        return None
    auth = web_auth(request)
    now = auth.clock()
    db = request.app.state.db
    with db.read() as conn:
        session = lookup_session(conn, secret, now, auth.policy)
    if session is not None and needs_touch(session, now, auth.policy):
        with db.write() as conn:
            touch_session(conn, session.key, now)
    return session


def signed_in(request: Request, session: WebSession | None = Depends(current_session)) -> WebSession:
    if session is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(safe_next(target) if request.method == "GET" else "/")
    return session


def require_role(*roles: str) -> Callable[[WebSession], WebSession]:
    """A dependency: the session if its user has one of ``roles`` (admins are not implied), else 403."""

    def check(session: WebSession = Depends(signed_in)) -> WebSession:
        if session.user.role not in roles:
            raise WebError(403, "Not allowed", f"This page is for a {' or '.join(roles)}, not a {session.user.role}.")
        return session

    return check


async def csrf_protected(request: Request, session: WebSession = Depends(signed_in)) -> WebSession:
    """For every form post of a signed-in page: the session, if the form sent back its CSRF token; else 403."""
    if not tokens_match(session.csrf_token, await submitted_token(request)):
        raise WebError(403, "Form expired", "This form is out of date or did not come from this site. Reload.")
    return session
