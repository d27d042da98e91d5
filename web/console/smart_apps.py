"""The vendor console's "SMART apps" page: register, list and delete SMART clients, and switch their faults.

Registration goes through ``sandbox.auth.clients.register_client``, so the form is checked exactly like
``POST /admin/clients``; a refusal is shown beside the field it concerns.  A vendor sees and changes only the
clients it registered here (``smart_client_owners``); an admin sees and changes every client, including those
registered with the admin token or the CLI.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from sqlalchemy import Connection
from starlette.responses import Response

from sandbox.accounts.sessions import WebSession
from sandbox.auth import clients as client_ops
from sandbox.store.admin_errors import AdminError, Conflict
from web.console.access import run
from web.console.cohorts import FormErrors, Rejected
from web.console.vendor import SECTIONS
from web.pages import WebRoute, page, redirect
from web.signin import WebError, csrf_protected, require_role

router = APIRouter(route_class=WebRoute, include_in_schema=False)
PATH = "/vendor/smart-apps"
vendor_or_admin = require_role("vendor", "admin")

FAULT_TITLES = {
    "expired_token": "Expired token (access tokens are issued already expired)",
    "invalid_client": "Invalid client (the token endpoint answers invalid_client)",
    "denied_consent": "Denied consent (authorization answers access_denied)",
}
DONE = {"registered": "App registered.", "deleted": "App deleted.", "faults": "Faults saved."}
# Which form field a registration refusal is about, by the first name its message mentions.
_FIELD_WORDS = (
    ("client_id", "client_id"),
    ("already registered", "client_id"),
    ("public client has no keys", "kind"),
    ("redirect", "redirect_uris"),
    ("launch_url", "launch_url"),
    ("jwks_url", "jwks_url"),
    ("jwks", "jwks"),
    ("public", "kind"),
)


def vendor_or_admin_post(session: WebSession = Depends(csrf_protected)) -> WebSession:
    return vendor_or_admin(session)


def _owner(session: WebSession) -> str | None:
    """Whose clients the page shows: the vendor's own, or None for an admin (every client)."""
    return None if session.user.role == "admin" else session.user.id


def _own_client(conn: Connection, session: WebSession, client_id: str) -> client_ops.Client:
    """The client if the user may change it: 404 if there is none, 403 if another vendor registered it."""
    client = client_ops.get_client(conn, client_id)
    owner = _owner(session)
    if owner is not None and client_ops.client_owners(conn).get(client_id) != owner:
        raise WebError(403, "Not allowed", "This app was registered by someone else.")
    return client


def field_of(message: str) -> str:
    lowered = message.lower()
    return next((name for word, name in _FIELD_WORDS if word in lowered), "scopes")  # the rest is about scopes


def registration(form: Any) -> tuple[dict[str, Any], dict[str, str], FormErrors]:
    """The admin API's JSON from the form's fields, what was typed (to show again), and errors found here."""
    values = {k: str(form.get(k) or "").strip() for k in ("client_id", "kind", "redirect_uris", "launch_url")}
    values |= {k: str(form.get(k) or "").strip() for k in ("scopes", "jwks", "jwks_url")}
    values["auto_approve"] = "on" if form.get("auto_approve") else ""
    errors = FormErrors()
    data: dict[str, Any] = {
        "client_id": values["client_id"],
        "public": values["kind"] != "confidential",
        "redirect_uris": values["redirect_uris"].split(),
        "scopes": values["scopes"],
        "auto_approve": bool(values["auto_approve"]),
    }
    if values["kind"] not in ("public", "confidential"):
        errors.fields["kind"] = "Choose public or confidential."
    if values["launch_url"]:
        data["launch_url"] = values["launch_url"]
    if values["jwks_url"]:
        data["jwks_url"] = values["jwks_url"]
    if values["jwks"]:
        try:
            data["jwks"] = orjson.loads(values["jwks"])
        except orjson.JSONDecodeError:
            errors.fields["jwks"] = 'The JWKS is not JSON; paste a key set like {"keys": [...]}.'
    return data, values, errors


async def _page(
    request: Request,
    session: WebSession,
    *,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    status: int = 200,
    notice: str | None = None,
    secret: tuple[str, str] | None = None,
) -> Response:
    def load(conn: Connection) -> tuple[list[client_ops.Client], dict[str, str]]:
        return client_ops.list_clients(conn, owner=_owner(session)), client_ops.client_owners(conn)

    clients, owners = await run(request, load, read_only=True)
    context = {
        "user": session.user,
        "csrf_token": session.csrf_token,
        "sections": SECTIONS,
        "current": PATH,
        "clients": clients,
        "owners": owners,
        "is_admin": session.user.role == "admin",
        "fault_titles": FAULT_TITLES,
        "values": values or {"kind": "public"},
        "errors": errors or FormErrors(),
        "notice": notice,
        "secret": secret,
    }
    return page("console/smart_apps.html", context, status)


@router.get(PATH)
async def smart_apps(
    request: Request, done: str | None = None, session: WebSession = Depends(vendor_or_admin)
) -> Response:
    return await _page(request, session, notice=DONE.get(done or ""))


@router.post(PATH)
async def register(request: Request, session: WebSession = Depends(vendor_or_admin_post)) -> Response:
    data, values, errors = registration(await request.form())

    def save(conn: Connection) -> tuple[client_ops.Client, str | None]:
        try:
            return client_ops.register_client(conn, data, owner=_owner(session))
        except AdminError as exc:
            errors.fields.setdefault("client_id" if isinstance(exc, Conflict) else field_of(exc.message), exc.message)
            raise Rejected from None

    if not errors:
        try:
            client, secret = await run(request, save)
        except Rejected:
            pass
        else:
            if secret is None:
                return redirect(f"{PATH}?done=registered")
            # The secret exists in the clear only in this answer: it is shown once, never stored.
            return await _page(request, session, notice=DONE["registered"], secret=(client.client_id, secret))
    return await _page(request, session, values=values, errors=errors, status=400)


@router.post(PATH + "/{client_id}/delete")
async def delete(client_id: str, request: Request, session: WebSession = Depends(vendor_or_admin_post)) -> Response:
    def remove(conn: Connection) -> None:
        _own_client(conn, session, client_id)
        client_ops.delete_client(conn, client_id)

    await run(request, remove)
    return redirect(f"{PATH}?done=deleted")


@router.post(PATH + "/{client_id}/faults")
async def faults(client_id: str, request: Request, session: WebSession = Depends(vendor_or_admin_post)) -> Response:
    chosen = [str(f) for f in (await request.form()).getlist("fault")]

    def switch(conn: Connection) -> None:
        _own_client(conn, session, client_id)
        client_ops.set_faults(conn, client_id, chosen)  # an unknown fault is Invalid: a 400 page, nothing saved

    await run(request, switch)
    return redirect(f"{PATH}?done=faults")
