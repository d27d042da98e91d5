"""The vendor console: the FHIR base URL of each of the vendor's sandboxes, the FHIR calls made against it, and
a reset button.

A vendor's sandboxes are those the vendor is a roster member of (``cohort_members``).  A reset that would wipe
other people's work (a cohort's shared sandbox) is refused; the trainer resets those.

``SECTIONS`` is the console's navigation: the pages for SMART apps, CDS services and HL7 v2 interfaces that
come with their own features add themselves there (title, path) and extend ``console/vendor_layout.html``.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request
from sqlalchemy import Connection, func, select
from starlette.responses import Response

from sandbox.accounts.sessions import WebSession
from sandbox.concurrency import run_in_threadpool
from sandbox.fhir.request_log import LoggedRequest
from sandbox.store import sandboxes
from sandbox.store.admin_errors import Conflict
from sandbox.store.layers import DEFAULT_SANDBOX, View, resolve_view
from sandbox.store.schema import cohort_members, layers
from sandbox.urls import fhir_base
from web.console.access import run
from web.pages import WebRoute, page, redirect
from web.signin import WebError, csrf_protected, require_role

router = APIRouter(route_class=WebRoute, include_in_schema=False)
vendor_only = require_role("vendor")

SECTIONS: list[tuple[str, str]] = [
    ("Sandboxes and request log", "/vendor"),
    ("SMART apps", "/vendor/smart-apps"),
    ("CDS services", "/vendor/cds-services"),
    ("HL7 v2 interfaces", "/vendor/hl7v2"),
]
LOG_ROWS = 100


def vendor_post(session: WebSession = Depends(csrf_protected)) -> WebSession:
    return vendor_only(session)


@dataclass(frozen=True)
class VendorSandbox:
    id: str
    name: str
    fhir_base: str
    shared: bool  # other roster members work in it too
    log: list[LoggedRequest]


def vendor_sandboxes(conn: Connection, user_id: str) -> list[tuple[str, str, bool]]:
    """(id, name, shared with others) of the sandboxes the user is a roster member of, by name."""
    m, other = cohort_members.c, cohort_members.alias("other").c
    shared = select(func.count()).where(other.sandbox_id == m.sandbox_id, other.user_id != user_id).scalar_subquery()
    rows = conn.execute(
        select(m.sandbox_id, layers.c.name, shared.label("others"))
        .join(layers, layers.c.id == m.sandbox_id)
        .where(m.user_id == user_id)
        .order_by(layers.c.name, m.sandbox_id)
    ).all()
    return [(r.sandbox_id, r.name, bool(r.others)) for r in rows]


def console_sandboxes(conn: Connection, session: WebSession) -> list[tuple[str, str]]:
    """(id, name) of the sandboxes a vendor console page offers: the vendor's own, or every sandbox for an admin
    (the default sandbox first, then by name)."""
    if session.user.role != "admin":
        return [(sandbox_id, name) for sandbox_id, name, _shared in vendor_sandboxes(conn, session.user.id)]
    rows = conn.execute(select(layers.c.id, layers.c.name).where(layers.c.kind == "sandbox")).all()
    return sorted(((r.id, r.name) for r in rows), key=lambda r: (r[0] != DEFAULT_SANDBOX, r[1].lower(), r[0]))


def console_sandbox(conn: Connection, session: WebSession, sandbox_id: str) -> tuple[str, View]:
    """The sandbox's name and view, if the user may work in it from the console: 404 if there is no such
    sandbox, 403 if it is not one of the vendor's (an admin may work in any)."""
    name = sandboxes.get_layer(conn, sandbox_id, "sandbox").name  # NotFound -> 404 first
    if session.user.role != "admin" and sandbox_id not in {sid for sid, _name in console_sandboxes(conn, session)}:
        raise WebError(403, "Not allowed", "This sandbox is not one of yours.")
    return name, resolve_view(conn, sandbox_id)


@router.get("/vendor")
async def vendor_home(
    request: Request, done: str | None = None, session: WebSession = Depends(vendor_only)
) -> Response:
    log = request.app.state.request_log

    def load(conn: Connection) -> list[VendorSandbox]:
        return [
            VendorSandbox(
                sandbox_id, name, fhir_base(request, sandbox_id), shared, log.recent(conn, sandbox_id, LOG_ROWS)
            )
            for sandbox_id, name, shared in vendor_sandboxes(conn, session.user.id)
        ]

    await run_in_threadpool(log.flush)  # show the calls made up to now
    context = {
        "user": session.user,
        "csrf_token": session.csrf_token,
        "sandboxes": await run(request, load, read_only=True),
        "sections": SECTIONS,
        "current": "/vendor",
        "notice": "The sandbox is back at its baseline." if done == "reset" else None,
        "log_rows": LOG_ROWS,
    }
    return page("console/vendor.html", context)


@router.post("/vendor/sandboxes/{sandbox_id}/reset")
async def vendor_reset(sandbox_id: str, request: Request, session: WebSession = Depends(vendor_post)) -> Response:
    def reset(conn: Connection) -> None:
        mine = {sid: shared for sid, _name, shared in vendor_sandboxes(conn, session.user.id)}
        if sandbox_id not in mine:
            raise WebError(403, "Not allowed", "This sandbox is not one of yours.")
        if mine[sandbox_id]:
            raise Conflict("Others work in this sandbox too; ask your trainer to reset it.")
        sandboxes.reset_sandbox(conn, sandbox_id)

    await run(request, reset)
    return redirect("/vendor?done=reset")
