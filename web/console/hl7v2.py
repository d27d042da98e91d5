"""The vendor console's "HL7 v2 interfaces" pages: for each of the vendor's sandboxes, how to reach it (MLLP and
HTTP), its outbound destinations, a form to send a test message, and its message log, with a page per message.

Every change goes through the service the HTTP API (``sandbox/hl7v2/routes.py``) uses: destinations through
``sandbox.hl7v2.destinations.put``/``remove`` (a refusal is the API's own words, shown beside the field it
names, and nothing is stored), a test message through ``Inbound.handle`` as ``POST /sandboxes/{id}/hl7v2``
sends it, resend and reprocess through ``sandbox.hl7v2.replay``.  A vendor works in the sandboxes it is a roster
member of (another's is 403, an unknown one 404); an admin in every sandbox, as on the SMART apps page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson
from fastapi import APIRouter, Depends, Request
from sqlalchemy import Connection
from starlette.datastructures import FormData
from starlette.responses import Response

from sandbox.accounts.sessions import WebSession
from sandbox.concurrency import run_in_threadpool
from sandbox.fhir.outcome import FhirError
from sandbox.hl7v2 import destinations, log, replay
from sandbox.hl7v2.er7 import MAX_MESSAGE_BYTES, V2Error, parse
from sandbox.hl7v2.inbound import Result
from sandbox.hl7v2.service import mllp_port_from_env
from sandbox.store.admin_errors import NotFound
from sandbox.store.layers import View
from sandbox.store.repository import Repository
from sandbox.urls import public_root
from web.console.access import as_web_error, run
from web.console.cohorts import FormErrors, Rejected
from web.console.smart_apps import vendor_or_admin, vendor_or_admin_post
from web.console.vendor import SECTIONS, console_sandbox, console_sandboxes
from web.pages import WebRoute, page, redirect
from web.signin import WebError

router = APIRouter(route_class=WebRoute, include_in_schema=False)
PATH = "/vendor/hl7v2"
LOG_PAGE = 50
MAX_RESOURCES = 50  # shown on a message's page; an ORU of a big panel writes a few dozen
DONE = {
    "destination-saved": "Destination saved.",
    "destination-deleted": "Destination deleted.",
    "resent": "Queued to be sent again: the outbound worker delivers it and records the ACK here.",
    "reprocessed": "Applied again: this is the new log entry, with the acknowledgment it got.",
    "not-reprocessed": "Applying the message again failed inside the server; nothing was written. Try again later.",
}
# Status colours (the word is always shown too), from the console's stylesheet.
STATUS_CLASS = {
    "accepted": "check-pass",
    "delivered": "check-pass",
    "duplicate": "check-not-applicable",
    "pending": "status-in-progress",
    "error": "check-fail",
    "rejected": "check-fail",
    "failed": "check-fail",
}
_DESTINATION_TEXT = ("destination_id", "host", "port", "receiving_application", "receiving_facility")


@dataclass(frozen=True)
class Reach:
    """Where senders reach the server: MLLP on the public host name, HTTP under the public root."""

    mllp_host: str
    mllp_port: int
    listening_here: bool  # False: this process runs no listener (``ehr-sandbox mllp`` beside it, or none)
    root: str


def _reach(request: Request) -> Reach:
    root = public_root(request)
    server = request.app.state.hl7v2.server
    host = urlsplit(root).hostname or "127.0.0.1"
    if server is not None:
        return Reach(host, server.port, True, root)
    return Reach(host, mllp_port_from_env(), False, root)


# ---- the list of sandboxes -----------------------------------------------------------------------------------


@router.get(PATH)
async def interfaces(request: Request, session: WebSession = Depends(vendor_or_admin)) -> Response:
    def load(conn: Connection) -> list[tuple[str, str]]:
        return console_sandboxes(conn, session)

    context = {
        "user": session.user,
        "csrf_token": session.csrf_token,
        "sections": SECTIONS,
        "current": PATH,
        "sandboxes": await run(request, load, read_only=True),
        "reach": _reach(request),
        "is_admin": session.user.role == "admin",
    }
    return page("console/hl7v2.html", context)


# ---- one sandbox: destinations, a test message, the log ---------------------------------------------------------


@dataclass(frozen=True)
class LogFilter:
    direction: str  # "" for both
    status: str  # "" for any
    page: int  # from 1, newest first

    def link(self, sandbox_id: str, page: int) -> str:
        query = {k: v for k, v in (("direction", self.direction), ("status", self.status)) if v}
        if page > 1:
            query["page"] = str(page)
        return f"{PATH}/{sandbox_id}" + (f"?{urlencode(query)}" if query else "") + "#log"


def _log_filter(direction: str | None, status: str | None, page_number: str | None) -> LogFilter:
    """The log's filter from the query string; a value the form cannot send is a 400 page."""
    direction, status = direction or "", status or ""
    if direction not in ("", *log.STATUSES):
        raise WebError(400, "Cannot do that", "The direction is inbound or outbound.")
    allowed = log.STATUSES.get(direction) or {s for statuses in log.STATUSES.values() for s in statuses}
    if status and status not in allowed:
        raise WebError(400, "Cannot do that", f"The status is one of {', '.join(sorted(allowed))}.")
    if page_number and not (page_number.isdecimal() and len(page_number) <= 6 and int(page_number) >= 1):
        raise WebError(400, "Cannot do that", "The page is a number from 1.")
    return LogFilter(direction, status, int(page_number) if page_number else 1)


@dataclass(frozen=True)
class Sent:
    """What the test form's message got: the service's outcome and its ACK as lines."""

    result: Result
    ack_lines: list[str]


def _lines(er7: str | None) -> list[str]:
    """The segments of an ER7 text, one per line (it may have come with CR, LF or CRLF)."""
    return er7.replace("\r\n", "\r").replace("\n", "\r").strip("\r").split("\r") if er7 else []


async def _sandbox_page(
    request: Request,
    session: WebSession,
    sandbox_id: str,
    *,
    log_filter: LogFilter | None = None,
    values: dict[str, Any] | None = None,
    errors: FormErrors | None = None,
    status: int = 200,
    notice: str | None = None,
    sent: Sent | None = None,
    edit: str | None = None,
) -> Response:
    shown = log_filter or LogFilter("", "", 1)

    def load(conn: Connection) -> tuple[str, list[destinations.Destination], list[log.LogEntry]]:
        name, view = console_sandbox(conn, session, sandbox_id)
        entries = log.listing(
            conn,
            view.overlay,
            direction=shown.direction or None,
            status=shown.status or None,
            limit=LOG_PAGE + 1,  # one more than shown: whether there is an older page
            offset=(shown.page - 1) * LOG_PAGE,
        )
        return name, destinations.listing(conn, sandbox_id), entries

    name, found, entries = await run(request, load, read_only=True)
    if edit is not None:
        editing = next((d for d in found if d.id == edit), None)
        if editing is None:
            raise WebError(404, "Not found", f"No destination '{edit}' in this sandbox.")
        values = _destination_values(editing)
    context = {
        "user": session.user,
        "csrf_token": session.csrf_token,
        "sections": SECTIONS,
        "current": PATH,
        "sandbox_id": sandbox_id,
        "sandbox_name": name,
        "reach": _reach(request),
        "destinations": found,
        "outbound_types": destinations.OUTBOUND_TYPES,
        "entries": entries[:LOG_PAGE],
        "log_filter": shown,
        "newer": shown.link(sandbox_id, shown.page - 1) if shown.page > 1 else None,
        "older": shown.link(sandbox_id, shown.page + 1) if len(entries) > LOG_PAGE else None,
        "directions": list(log.STATUSES),
        "status_names": list(dict.fromkeys(s for statuses in log.STATUSES.values() for s in statuses)),
        "status_class": STATUS_CLASS,
        "log_page": LOG_PAGE,
        # The destination form starts with every type and enabled, unless it is what was posted.
        "values": {"message_types": list(destinations.OUTBOUND_TYPES), "enabled": "on"} | (values or {}),
        "errors": errors or FormErrors(),
        "notice": notice,
        "sent": sent,
    }
    return page("console/hl7v2_sandbox.html", context, status)


@router.get(PATH + "/{sandbox_id}")
async def sandbox_interfaces(
    sandbox_id: str,
    request: Request,
    direction: str | None = None,
    status: str | None = None,
    page: str | None = None,
    edit: str | None = None,
    done: str | None = None,
    session: WebSession = Depends(vendor_or_admin),
) -> Response:
    log_filter = _log_filter(direction, status, page)
    return await _sandbox_page(
        request, session, sandbox_id, log_filter=log_filter, notice=DONE.get(done or ""), edit=edit
    )


def _destination_values(d: destinations.Destination) -> dict[str, Any]:
    return {
        "destination_id": d.id,
        "host": d.host,
        "port": str(d.port),
        "message_types": list(d.message_types),
        "receiving_application": d.receiving_application,
        "receiving_facility": d.receiving_facility,
        "enabled": "on" if d.enabled else "",
    }


def _destination_form(form: FormData) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The destination id, the API's JSON body from the form's fields, and what was typed (to show again)."""
    values: dict[str, Any] = {k: str(form.get(k) or "").strip() for k in _DESTINATION_TEXT}
    values["message_types"] = [str(t) for t in form.getlist("message_types")]
    values["enabled"] = "on" if form.get("enabled") else ""
    port = values["port"]
    body: dict[str, Any] = {
        "host": values["host"],
        # A number stays a number; anything else goes as typed, and the service refuses it in its own words.
        "port": int(port) if port.isdecimal() and len(port) <= 6 else port or None,
        "message_types": values["message_types"],
        "receiving_application": values["receiving_application"],
        "receiving_facility": values["receiving_facility"],
        "enabled": bool(values["enabled"]),
    }
    return values["destination_id"], body, values


@router.post(PATH + "/{sandbox_id}/destinations")
async def save_destination(
    sandbox_id: str, request: Request, session: WebSession = Depends(vendor_or_admin_post)
) -> Response:
    destination_id, body, values = _destination_form(await request.form())
    errors = FormErrors()

    def save(conn: Connection) -> None:
        console_sandbox(conn, session, sandbox_id)
        try:
            destinations.put(conn, sandbox_id, destination_id, body)
        except FhirError as exc:
            for issue in exc.issues:  # an issue without an expression is about the id (the API's URL)
                errors.fields.setdefault(issue.expression or "destination_id", issue.diagnostics)
            raise Rejected from None

    try:
        await run(request, save)
    except Rejected:
        return await _sandbox_page(request, session, sandbox_id, values=values, errors=errors, status=400)
    return redirect(f"{PATH}/{sandbox_id}?done=destination-saved#destinations")


@router.post(PATH + "/{sandbox_id}/destinations/{destination_id}/delete")
async def delete_destination(
    sandbox_id: str, destination_id: str, request: Request, session: WebSession = Depends(vendor_or_admin_post)
) -> Response:
    def remove(conn: Connection) -> None:
        console_sandbox(conn, session, sandbox_id)
        if not destinations.remove(conn, sandbox_id, destination_id):
            raise NotFound(f"No destination '{destination_id}' in this sandbox.")

    await run(request, remove)
    return redirect(f"{PATH}/{sandbox_id}?done=destination-deleted#destinations")


@router.post(PATH + "/{sandbox_id}/send")
async def send_test_message(
    sandbox_id: str, request: Request, session: WebSession = Depends(vendor_or_admin_post)
) -> Response:
    """A pasted message, applied as ``POST /sandboxes/{id}/hl7v2`` applies it; the page shows the ACK."""
    form = await request.form()
    typed = str(form.get("message") or "")
    values = {"message": typed, "strict": "on" if form.get("strict") else ""}

    def check(conn: Connection) -> None:
        console_sandbox(conn, session, sandbox_id)

    await run(request, check, read_only=True)
    # A textarea sends its lines with CRLF; segments end with CR.
    message = "\r".join(_lines(typed)) + "\r"
    errors = FormErrors()
    if not typed.strip():
        errors.fields["message"] = "Paste one HL7 v2 message in ER7 (pipe-and-hat) encoding, starting with MSH."
    elif len(message.encode("utf-8")) > MAX_MESSAGE_BYTES:
        errors.fields["message"] = f"An HL7 v2 message may be at most {MAX_MESSAGE_BYTES} bytes."
    if errors:
        return await _sandbox_page(request, session, sandbox_id, values=values, errors=errors, status=400)
    inbound = request.app.state.hl7v2.inbound
    result = await run_in_threadpool(inbound.handle, message, sandbox_id=sandbox_id, strict=bool(values["strict"]))
    return await _sandbox_page(request, session, sandbox_id, values=values, sent=Sent(result, _lines(result.reply)))


# ---- one message ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkedResource:
    """A resource version a message wrote (inbound) or was built from (outbound)."""

    reference: str  # Patient/123/_history/2
    resource_type: str
    id: str
    content: str  # the version as stored, indented; empty when it is no longer there (the sandbox was reset)


@dataclass(frozen=True)
class AckError:
    location: str  # ERR-2, e.g. PID^1^3^1
    code: str  # ERR-3: the HL7 table 0357 code and its text
    text: str  # ERR-8


def _linked(conn: Connection, repo: Repository, view: View, references: list[str]) -> list[LinkedResource]:
    linked = []
    for reference in references[:MAX_RESOURCES]:
        parts = reference.split("/")
        stored = None
        if len(parts) == 4 and parts[2] == "_history" and parts[3].isdecimal():
            stored = repo.version(conn, view, parts[0], parts[1], int(parts[3]))
        content = ""
        if stored is not None and stored.content is not None:
            content = orjson.dumps(orjson.loads(stored.content), option=orjson.OPT_INDENT_2).decode()
        linked.append(LinkedResource(reference, parts[0], parts[1] if len(parts) > 1 else "", content))
    return linked


def _ack_errors(ack: str | None) -> list[AckError]:
    """The ERR segments of an acknowledgment (ours to a sender, or a destination's to us)."""
    if not ack:
        return []
    try:
        segments = parse(ack).all("ERR")
    except V2Error:
        return []  # a destination's reply that is not HL7 v2: the entry's error says so
    return [AckError(s.raw(2), " ".join(p for p in (s.get(3), s.get(3, 2)) if p), s.get(8)) for s in segments]


@router.get(PATH + "/{sandbox_id}/messages/{message_id}")
async def message_page(
    sandbox_id: str,
    message_id: str,
    request: Request,
    done: str | None = None,
    session: WebSession = Depends(vendor_or_admin),
) -> Response:
    repo = request.app.state.fhir.repo

    def load(conn: Connection) -> tuple[str, log.LogEntry, list[LinkedResource]]:
        name, view = console_sandbox(conn, session, sandbox_id)
        entry = replay.logged(conn, view.overlay, message_id)
        return name, entry, _linked(conn, repo, view, entry.resources)

    name, entry, linked = await run(request, load, read_only=True)
    context = {
        "user": session.user,
        "csrf_token": session.csrf_token,
        "sections": SECTIONS,
        "current": PATH,
        "sandbox_id": sandbox_id,
        "sandbox_name": name,
        "entry": entry,
        "content_lines": _lines(entry.content),
        "ack_lines": _lines(entry.ack),
        "ack_errors": _ack_errors(entry.ack),
        "resources": linked,
        "more_resources": max(len(entry.resources) - MAX_RESOURCES, 0),
        "status_class": STATUS_CLASS,
        "notice": DONE.get(done or ""),
    }
    return page("console/hl7v2_message.html", context)


@router.post(PATH + "/{sandbox_id}/messages/{message_id}/resend")
async def resend(
    sandbox_id: str, message_id: str, request: Request, session: WebSession = Depends(vendor_or_admin_post)
) -> Response:
    def queue(conn: Connection) -> None:
        _name, view = console_sandbox(conn, session, sandbox_id)
        replay.resend(conn, view.overlay, message_id)

    await run(request, queue)
    return redirect(f"{PATH}/{sandbox_id}/messages/{message_id}?done=resent")


@router.post(PATH + "/{sandbox_id}/messages/{message_id}/reprocess")
async def reprocess(
    sandbox_id: str, message_id: str, request: Request, session: WebSession = Depends(vendor_or_admin_post)
) -> Response:
    def check(conn: Connection) -> View:
        return console_sandbox(conn, session, sandbox_id)[1]

    view = await run(request, check, read_only=True)
    inbound = request.app.state.hl7v2.inbound
    try:
        result = await run_in_threadpool(replay.reprocess, inbound, sandbox_id, view.overlay, message_id)
    except FhirError as exc:
        raise as_web_error(exc) from None
    if result.message_id is None:  # the server failed half-way (logged, rolled back): there is no new entry
        return redirect(f"{PATH}/{sandbox_id}/messages/{message_id}?done=not-reprocessed")
    return redirect(f"{PATH}/{sandbox_id}/messages/{result.message_id}?done=reprocessed")
