"""The web UI's sign-in pages and home page; ``install`` wires them and the consoles (``web/console/``) into the app.

Forms post back to the page they came from and answer 303 on success (post/redirect/get).  Every form
carries a CSRF token (``web/csrf.py``); every response carries the security headers (``web/pages.py``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from sqlalchemy import select
from starlette.responses import Response

from sandbox.accounts.cohorts import reachable_sandboxes
from sandbox.accounts.sessions import NewSession, WebSession, end_session, lookup_session, start_session
from sandbox.accounts.users import check_credentials
from sandbox.concurrency import run_in_threadpool
from sandbox.store.layers import DEFAULT_SANDBOX
from sandbox.store.schema import layers
from sandbox.urls import fhir_base
from web import csrf
from web.chart.cds_routes import router as chart_cds_router
from web.chart.routes import router as chart_router
from web.console import router as console_router
from web.pages import WebRoute, page, redirect, secure
from web.signin import (
    SESSION_COOKIE,
    SignInRequired,
    WebAuth,
    WebError,
    clear_cookie,
    csrf_protected,
    current_session,
    login_url,
    safe_next,
    set_cookie,
    signed_in,
    web_auth,
)

router = APIRouter(route_class=WebRoute, include_in_schema=False)

# Longer input is refused before any hashing: argon2 on a megabyte-long "password" is a cheap way to load us.
_MAX_EMAIL = 320
_MAX_PASSWORD = 1024
_BAD_CREDENTIALS = "Incorrect email or password."


def install(app: FastAPI) -> None:
    app.state.web = WebAuth()
    app.include_router(router)
    app.include_router(console_router)  # the trainer console (/trainer...) and the vendor console (/vendor...)
    app.include_router(chart_router)  # the trainee's EHR: assignments, chart, entry forms, task panel
    app.include_router(chart_cds_router)  # the chart's decision-support cards and draft orders

    @app.exception_handler(SignInRequired)
    async def sign_in_required(request: Request, exc: SignInRequired) -> Response:
        response = redirect(login_url(exc.next_path))
        if SESSION_COOKIE in request.cookies:
            clear_cookie(response, request, SESSION_COOKIE)  # ended or expired: stop sending it
        return secure(response)

    @app.exception_handler(WebError)
    async def web_error(_request: Request, exc: WebError) -> Response:
        return secure(page("error.html", {"title": exc.title, "message": exc.message}, exc.status))


# ---- signing in and out ------------------------------------------------------------------------------


@router.get("/login")
async def login_form(
    request: Request, next: str | None = None, session: WebSession | None = Depends(current_session)
) -> Response:
    if session is not None:
        return redirect(safe_next(next))
    return _login_page(request, safe_next(next), None, 200)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    email, password, next_path = (_field(form, name) for name in ("email", "password", "next"))
    target = safe_next(next_path)
    if not csrf.tokens_match(request.cookies.get(csrf.LOGIN_COOKIE), _field(form, csrf.FIELD)):
        raise WebError(403, "Form expired", "The sign-in form is out of date or did not come from this site.")
    auth = web_auth(request)
    address = request.client.host if request.client else "unknown"
    wait = auth.throttle.retry_after(email, address, auth.clock())
    if wait is not None:
        minutes = max(1, -(-int(wait.total_seconds()) // 60))
        message = f"Too many failed sign-ins. Try again in {minutes} minute{'s' if minutes > 1 else ''}."
        return _login_page(request, target, message, 429, {"Retry-After": str(int(wait.total_seconds()) + 1)})
    if not email or not password or len(email) > _MAX_EMAIL or len(password) > _MAX_PASSWORD:
        auth.throttle.failed(email, address, auth.clock())
        return _login_page(request, target, _BAD_CREDENTIALS, 401, email=email)
    previous = request.cookies.get(SESSION_COOKIE)
    started = await run_in_threadpool(_sign_in, request, email, password, previous)
    if started is None:
        auth.throttle.failed(email, address, auth.clock())
        return _login_page(request, target, _BAD_CREDENTIALS, 401, email=email)
    auth.throttle.succeeded(email)
    response = redirect(target)
    set_cookie(response, request, SESSION_COOKIE, started.secret, int(auth.policy.absolute.total_seconds()))
    clear_cookie(response, request, csrf.LOGIN_COOKIE)  # its job is done; the session has its own token
    return response


def _sign_in(request: Request, email: str, password: str, previous: str | None) -> NewSession | None:
    """A new session for these credentials, else None.  A session the browser already had ends: a signed-in
    identifier is never one that existed before (so a planted cookie cannot become someone's session)."""
    auth = web_auth(request)
    with request.app.state.db.write() as conn:
        user = check_credentials(conn, email, password)
        if user is None:
            return None
        now = auth.clock()
        if previous and (old := lookup_session(conn, previous, now, auth.policy)) is not None:
            end_session(conn, old.key)
        return start_session(conn, user.id, now, auth.policy)


@router.post("/logout")
async def logout(request: Request, session: WebSession = Depends(csrf_protected)) -> Response:
    def end() -> None:
        with request.app.state.db.write() as conn:
            end_session(conn, session.key)

    await run_in_threadpool(end)
    response = redirect("/login")
    clear_cookie(response, request, SESSION_COOKIE)
    return response


def _login_page(
    request: Request,
    next_path: str,
    error: str | None,
    status: int,
    headers: dict[str, str] | None = None,
    *,
    email: str = "",
) -> Response:
    token = request.cookies.get(csrf.LOGIN_COOKIE)
    if not token or len(token) > 100:
        token = csrf.new_token()
    context = {"csrf_token": token, "next": next_path, "error": error, "email": email[:_MAX_EMAIL]}
    response = page("login.html", context, status, headers)
    set_cookie(response, request, csrf.LOGIN_COOKIE, token, None)
    return response


def _field(form: Any, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


# ---- pages -----------------------------------------------------------------------------------------


@router.get("/")
def home(request: Request, session: WebSession = Depends(signed_in)) -> Response:
    user = session.user
    with request.app.state.db.read() as conn:
        if user.role == "admin":
            ids = set(conn.execute(select(layers.c.id).where(layers.c.kind == "sandbox")).scalars())
        else:
            ids = reachable_sandboxes(conn, user)
        names = dict(conn.execute(select(layers.c.id, layers.c.name).where(layers.c.id.in_(ids))).all())
    # The default sandbox first, then by name.
    order = sorted(ids, key=lambda i: (i != DEFAULT_SANDBOX, names.get(i, i).lower(), i))
    sandboxes = [{"id": i, "name": names.get(i, i), "fhir_base": fhir_base(request, i)} for i in order]
    return page("home.html", {"user": user, "sandboxes": sandboxes, "csrf_token": session.csrf_token})
