"""The vendor console's "CDS services" page: each of the vendor's sandboxes with its CDS services, registering one
by its discovery URL, refreshing and deleting registrations, and the sandbox's CDS Hooks log with a drill-down.

Registering goes through ``CdsClient.register`` (``app.state.cds``), the function behind
``POST /admin/sandboxes/{id}/cds-services``, so a refusal (not a discovery URL, unreachable, an invalid discovery
document, an id or URL taken) is the API's, shown beside the field it concerns, with nothing stored.  A vendor
sees and changes only the sandboxes it is a roster member of (``vendor_sandboxes``); an admin every sandbox.
An unknown sandbox, registration or call is 404; another's sandbox 403.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from sqlalchemy import Connection
from starlette.responses import Response

from sandbox.accounts.sessions import WebSession
from sandbox.cdshooks import log, services
from sandbox.cdshooks.client import CdsClient
from sandbox.cdshooks.discovery import DiscoveryError
from sandbox.store.admin_errors import AdminError
from sandbox.store.layers import DEFAULT_SANDBOX, resolve_view
from sandbox.urls import public_root
from web.console.access import as_web_error, run
from web.console.cohorts import FormErrors
from web.console.smart_apps import vendor_or_admin, vendor_or_admin_post
from web.console.vendor import SECTIONS, console_sandbox, console_sandboxes
from web.pages import WebRoute, page, redirect
from web.signin import WebError

router = APIRouter(route_class=WebRoute, include_in_schema=False)
PATH = "/vendor/cds-services"
LOG_ROWS = 50
DONE = {
    "registered": "Service registered.",
    "refreshed": "Discovery read again; the services below are what it lists now.",
    "deleted": "Registration deleted.",
    "restored": "The built-in demo services are back.",
}
# Which form field a registration refusal is about: the id's own refusals name it; the rest are the URL's.
_ID_WORDS = ("usable id", "has a registration")


@dataclass(frozen=True)
class CdsSandbox:
    id: str
    name: str
    registrations: list[services.Registration]
    calls: list[log.Call]

    @property
    def builtin_removed(self) -> bool:
        return not any(r.builtin for r in self.registrations)


def _cds(request: Request) -> CdsClient:
    return request.app.state.cds


def own_sandbox(conn: Connection, session: WebSession, sandbox_id: str, *, write: bool = False) -> str:
    """The sandbox's overlay layer (where its CDS log is), if the user may see it (``write``: change its
    services): 404 if there is no such sandbox, 403 if it is not one of the vendor's."""
    _name, view = console_sandbox(conn, session, sandbox_id)
    if write and session.user.role != "admin" and sandbox_id == DEFAULT_SANDBOX:
        # Open to everyone: as in the admin API, only an admin sets its services.
        raise WebError(403, "Not allowed", "Only an admin may change the default sandbox's CDS services.")
    return view.overlay


def field_of(message: str) -> str:
    return "registration_id" if any(word in message for word in _ID_WORDS) else "discovery_url"


async def _page(
    request: Request,
    session: WebSession,
    *,
    only: str | None = None,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    status: int = 200,
    notice: str | None = None,
    failed: tuple[str, str, str] | None = None,
) -> Response:
    """The page; ``only`` narrows it to one sandbox, ``failed`` is (sandbox, registration, why) of a refresh."""

    def load(conn: Connection) -> list[CdsSandbox]:
        shown = console_sandboxes(conn, session)
        if only is not None:
            own_sandbox(conn, session, only)
            shown = [(sid, name) for sid, name in shown if sid == only]
        return [
            CdsSandbox(
                sid,
                name,
                services.listing(conn, sid),
                log.calls(conn, resolve_view(conn, sid).overlay, limit=LOG_ROWS),
            )
            for sid, name in shown
        ]

    found = await run(request, load, read_only=True)
    context = {
        "user": session.user,
        "csrf_token": session.csrf_token,
        "sections": SECTIONS,
        "current": PATH,
        "sandboxes": found,
        "only": only,
        "root": public_root(request),
        "is_admin": session.user.role == "admin",
        "default_sandbox": DEFAULT_SANDBOX,
        "values": values or ({"sandbox": only} if only else {}),
        "errors": errors or FormErrors(),
        "notice": notice,
        "failed": failed,
        "log_rows": LOG_ROWS,
    }
    return page("console/cds_services.html", context, status)


def _back(sandbox_id: str, done: str) -> Response:
    return redirect(f"{PATH}?sandbox={sandbox_id}&done={done}")


@router.get(PATH)
async def cds_services(
    request: Request,
    sandbox: str | None = None,
    done: str | None = None,
    session: WebSession = Depends(vendor_or_admin),
) -> Response:
    return await _page(request, session, only=sandbox or None, notice=DONE.get(done or ""))


@router.post(PATH)
async def register(request: Request, session: WebSession = Depends(vendor_or_admin_post)) -> Response:
    form = await request.form()
    values = {k: str(form.get(k) or "").strip() for k in ("sandbox", "discovery_url", "registration_id")}
    errors = FormErrors()
    sandbox_id = values["sandbox"]
    if not sandbox_id:
        errors.fields["sandbox"] = "Choose the sandbox whose chart calls the service."
    else:
        await run(request, lambda conn: own_sandbox(conn, session, sandbox_id, write=True), read_only=True)
        try:
            await _cds(request).register(
                sandbox_id,
                values["discovery_url"],
                root=public_root(request),
                registration_id=values["registration_id"] or None,
            )
        except AdminError as exc:
            errors.fields[field_of(exc.message)] = exc.message
        else:
            return _back(sandbox_id, "registered")
    return await _page(request, session, values=values, errors=errors, status=400)


@router.post(PATH + "/{sandbox_id}/builtin")
async def restore_builtin(
    sandbox_id: str, request: Request, session: WebSession = Depends(vendor_or_admin_post)
) -> Response:
    def restore(conn: Connection) -> None:
        own_sandbox(conn, session, sandbox_id, write=True)
        services.restore_builtin(conn, sandbox_id)

    await run(request, restore)
    return _back(sandbox_id, "restored")


@router.post(PATH + "/{sandbox_id}/{registration_id}/refresh")
async def refresh(
    sandbox_id: str, registration_id: str, request: Request, session: WebSession = Depends(vendor_or_admin_post)
) -> Response:
    def check(conn: Connection) -> None:
        own_sandbox(conn, session, sandbox_id, write=True)
        services.get(conn, sandbox_id, registration_id)  # NotFound -> 404

    await run(request, check, read_only=True)
    try:
        await _cds(request).refresh(sandbox_id, registration_id, root=public_root(request))
    except DiscoveryError as exc:
        # The service is down or lists garbage now: the old services stay, and the page says why beside them.
        failed = (sandbox_id, registration_id, exc.message)
        return await _page(request, session, only=sandbox_id, failed=failed, status=exc.status)
    except AdminError as exc:
        raise as_web_error(exc) from None
    return _back(sandbox_id, "refreshed")


@router.post(PATH + "/{sandbox_id}/{registration_id}/delete")
async def delete(
    sandbox_id: str, registration_id: str, request: Request, session: WebSession = Depends(vendor_or_admin_post)
) -> Response:
    def remove(conn: Connection) -> None:
        own_sandbox(conn, session, sandbox_id, write=True)
        services.remove(conn, sandbox_id, registration_id)  # NotFound -> 404

    await run(request, remove)
    return _back(sandbox_id, "deleted")


@router.get(PATH + "/{sandbox_id}/log/{call_id}")
async def call_page(
    sandbox_id: str, call_id: str, request: Request, session: WebSession = Depends(vendor_or_admin)
) -> Response:
    def load(conn: Connection) -> tuple[log.Call, list[log.Decision]]:
        layer = own_sandbox(conn, session, sandbox_id)
        call = log.get_call(conn, layer, call_id)
        if call is None:
            raise WebError(404, "Not found", f"There is no CDS Hooks call '{call_id}' in this sandbox's log.")
        return call, log.decisions(conn, layer, call_id=call_id)

    call, decided = await run(request, load, read_only=True)
    context = {
        "user": session.user,
        "csrf_token": session.csrf_token,
        "sections": SECTIONS,
        "current": PATH,
        "sandbox_id": sandbox_id,
        "call": call,
        "decisions": decided,
        "request_json": _pretty(call.request) if call.request is not None else None,
        "response_text": _pretty_text(call.response),
        "cards_json": _pretty(call.cards) if call.cards else None,
    }
    return page("console/cds_call.html", context)


def _pretty(data: Any) -> str:
    return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()


def _pretty_text(body: str | None) -> str | None:
    """A response as received, indented when it is JSON (what a service sent need not be)."""
    if body is None or not body.strip():
        return body
    try:
        return _pretty(orjson.loads(body))
    except orjson.JSONDecodeError:
        return body
