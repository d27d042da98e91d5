"""The trainer console's cohort pages: list and create cohorts, import a roster, reset sandboxes, snapshot one.

Forms post back and answer 303 to the cohort page on success (post/redirect/get, with ``?done=`` naming what
was done); on bad input the page is shown again with the error beside the field, status 400, and nothing
changed (each post is one transaction).
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import Connection
from starlette.datastructures import UploadFile
from starlette.responses import Response

from sandbox.accounts import cohorts as cohort_ops
from sandbox.accounts.roster import RosterErrors, RosterLine, parse_roster
from sandbox.accounts.sessions import WebSession
from sandbox.store import sandboxes
from sandbox.store.admin_errors import AdminError, NotFound
from sandbox.urls import fhir_base
from web.console.access import run, trained_cohort
from web.pages import WebRoute, page, redirect
from web.signin import csrf_protected, require_role
from web.task_engine import task_engine

router = APIRouter(route_class=WebRoute, include_in_schema=False)
trainer_only = require_role("trainer", "admin")


def trainer_post(session: WebSession = Depends(csrf_protected)) -> WebSession:
    """A trainer's (or admin's) form post with its CSRF token."""
    return trainer_only(session)


MAX_ROSTER_BYTES = 1_000_000
MODES = {"private": "A sandbox for each trainee", "shared": "One sandbox the whole cohort shares"}
DONE = {
    "created": "Cohort created.",
    "roster": "Roster imported.",
    "reset-all": "Every sandbox of the cohort is back at its baseline.",
    "reset-member": "The trainee's sandbox is back at its baseline.",
    "snapshot": "Snapshot saved as a new baseline.",
}


class Rejected(Exception):
    """Raised inside a transaction to roll it back once a form's errors are noted."""


@dataclass
class FormErrors:
    """Messages by field name; ``lines`` lists a roster's bad lines one by one."""

    fields: dict[str, str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.fields or self.lines)


def _is_trainer(session: WebSession) -> str | None:
    """The trainer whose cohorts a page lists: the user, or None for an admin (every cohort)."""
    return None if session.user.role == "admin" else session.user.id


# ---- the cohort list, and creating one ------------------------------------------------------------------


@router.get("/trainer")
async def cohort_list(request: Request, session: WebSession = Depends(trainer_only)) -> Response:
    return await _list_page(request, session, {}, FormErrors(), 200)


async def _list_page(
    request: Request, session: WebSession, values: dict[str, str], errors: FormErrors, status: int
) -> Response:
    def load(conn: Connection) -> tuple[list[cohort_ops.Cohort], list[sandboxes.LayerInfo]]:
        return cohort_ops.list_cohorts(conn, _is_trainer(session)), sandboxes.list_layers(conn, "baseline")

    found, baselines = await run(request, load, read_only=True)
    packs = sorted(task_engine(request.app).library.packs.values(), key=lambda p: p.title.lower())
    context = {
        "user": session.user,
        "csrf_token": session.csrf_token,
        "cohorts": found,
        "baselines": baselines,
        "packs": packs,
        "modes": MODES,
        "values": values,
        "errors": errors,
    }
    return page("console/cohorts.html", context, status)


@router.post("/trainer/cohorts")
async def create_cohort(request: Request, session: WebSession = Depends(trainer_post)) -> Response:
    form = await request.form()
    values = {k: _text(form.get(k)) for k in ("name", "baseline", "pack", "mode")}
    values["mode"] = values["mode"] or "private"
    errors = FormErrors()
    name = values["name"].strip()
    if not name or len(name) > 200:
        errors.fields["name"] = "A cohort needs a name of 1 to 200 characters."
    if values["mode"] not in MODES:
        errors.fields["mode"] = "Choose one of the sandbox modes offered."
    library = task_engine(request.app).library
    if values["pack"] not in library.packs:
        errors.fields["pack"] = "Choose a task pack."
    roster = await _roster_from(form, errors, required=False)

    def create(conn: Connection) -> str | None:
        if not values["baseline"]:
            errors.fields["baseline"] = "Choose the baseline the trainees' sandboxes start from."
        else:
            try:
                sandboxes.get_layer(conn, values["baseline"], "baseline")
            except NotFound:
                errors.fields["baseline"] = "There is no such baseline; choose one from the list."
        if errors:
            return None
        try:
            return cohort_ops.create_cohort(
                conn,
                name,
                session.user.id,
                baseline_id=values["baseline"],
                mode=values["mode"],
                roster=roster,
                packs=[values["pack"]],
                lab=request.app.state.settings.demo_lab,
            ).id
        except AdminError as exc:  # a roster line naming an existing user of another role, say
            errors.fields["roster" if roster else "name"] = exc.message
            raise Rejected from None  # undo what was already written

    try:
        cohort_id = await run(request, create)
    except Rejected:
        cohort_id = None
    if cohort_id is None:
        return await _list_page(request, session, values, errors, 400)
    return redirect(f"/trainer/cohorts/{cohort_id}?done=created")


async def _roster_from(form: Any, errors: FormErrors, *, required: bool) -> list[RosterLine]:
    """The roster of a form: an uploaded CSV file (``roster``), else pasted text (``roster_text``)."""
    upload, text = form.get("roster"), _text(form.get("roster_text"))
    if isinstance(upload, UploadFile) and upload.filename:
        data = await upload.read(MAX_ROSTER_BYTES + 1)
        if len(data) > MAX_ROSTER_BYTES:
            errors.fields["roster"] = f"The roster file is larger than {MAX_ROSTER_BYTES // 1000} kB."
            return []
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            errors.fields["roster"] = "The roster file is not UTF-8 text; save it as CSV (UTF-8)."
            return []
    if not text.strip():
        if required:
            errors.fields["roster"] = "Choose a CSV file of name,email,role lines, or paste the lines."
        return []
    try:
        return parse_roster(text)
    except RosterErrors as exc:
        errors.fields["roster"] = "The roster has errors; nothing was imported. Fix these lines:"
        errors.lines = exc.problems
    except AdminError as exc:
        errors.fields["roster"] = exc.message
    return []


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


# ---- one cohort --------------------------------------------------------------------------------------------


@router.get("/trainer/cohorts/{cohort_id}")
async def cohort_page(
    cohort_id: str, request: Request, done: str | None = None, session: WebSession = Depends(trainer_only)
) -> Response:
    return await _cohort_page(request, session, cohort_id, FormErrors(), {}, 200, done=done)


async def _cohort_page(
    request: Request,
    session: WebSession,
    cohort_id: str,
    errors: FormErrors,
    values: dict[str, str],
    status: int,
    *,
    done: str | None = None,
) -> Response:
    def load(conn: Connection) -> tuple[cohort_ops.Cohort, dict[str, str]]:
        cohort = trained_cohort(conn, session.user, cohort_id)
        names = {b.id: b.name for b in sandboxes.list_layers(conn, "baseline")}
        return cohort, names

    cohort, baseline_names = await run(request, load, read_only=True)
    library = task_engine(request.app).library
    context = {
        "user": session.user,
        "csrf_token": session.csrf_token,
        "cohort": cohort,
        "baseline_name": baseline_names.get(cohort.baseline_id or "", cohort.baseline_id or "none (empty sandboxes)"),
        "packs": [library.packs[p] for p in cohort.packs if p in library.packs],
        "members": [
            {"user": m.user, "sandbox_id": m.sandbox_id, "fhir_base": fhir_base(request, m.sandbox_id)}
            for m in cohort.members
        ],
        "shared_fhir_base": fhir_base(request, cohort.shared_sandbox_id) if cohort.shared_sandbox_id else None,
        "notice": DONE.get(done or ""),
        "errors": errors,
        "values": values,
    }
    return page("console/cohort.html", context, status)


@router.post("/trainer/cohorts/{cohort_id}/roster")
async def import_roster(cohort_id: str, request: Request, session: WebSession = Depends(trainer_post)) -> Response:
    await run(request, lambda conn: trained_cohort(conn, session.user, cohort_id), read_only=True)
    errors = FormErrors()
    roster = await _roster_from(await request.form(), errors, required=True)

    def add(conn: Connection) -> None:
        try:
            cohort_ops.add_roster(conn, cohort_id, roster, lab=request.app.state.settings.demo_lab)
        except AdminError as exc:
            errors.fields["roster"] = exc.message
            raise Rejected from None

    if not errors:
        with suppress(Rejected):  # the errors are noted; the transaction rolled back
            await run(request, add)
    if errors:
        return await _cohort_page(request, session, cohort_id, errors, {}, 400)
    return redirect(f"/trainer/cohorts/{cohort_id}?done=roster")


@router.post("/trainer/cohorts/{cohort_id}/reset")
async def reset_cohort(cohort_id: str, request: Request, session: WebSession = Depends(trainer_post)) -> Response:

    def reset(conn: Connection) -> None:
        trained_cohort(conn, session.user, cohort_id)
        cohort_ops.reset_cohort(conn, cohort_id)

    await run(request, reset)
    return redirect(f"/trainer/cohorts/{cohort_id}?done=reset-all")


@router.post("/trainer/cohorts/{cohort_id}/members/{user_id}/reset")
async def reset_member(
    cohort_id: str, user_id: str, request: Request, session: WebSession = Depends(trainer_post)
) -> Response:

    def reset(conn: Connection) -> None:
        trained_cohort(conn, session.user, cohort_id)
        cohort_ops.reset_member(conn, cohort_id, user_id)

    await run(request, reset)
    return redirect(f"/trainer/cohorts/{cohort_id}?done=reset-member")


@router.post("/trainer/cohorts/{cohort_id}/snapshot")
async def snapshot(cohort_id: str, request: Request, session: WebSession = Depends(trainer_post)) -> Response:
    """A sandbox of the cohort (a trainee's, or the shared one) copied into a new baseline."""
    form = await request.form()
    values = {"sandbox": _text(form.get("sandbox")), "snapshot_name": _text(form.get("snapshot_name")).strip()}
    errors = FormErrors()

    def take(conn: Connection) -> str | None:
        cohort = trained_cohort(conn, session.user, cohort_id)
        if values["sandbox"] not in cohort.sandbox_ids:
            errors.fields["sandbox"] = "Choose one of this cohort's sandboxes."
        if not values["snapshot_name"] or len(values["snapshot_name"]) > 200:
            errors.fields["snapshot_name"] = "The new baseline needs a name of 1 to 200 characters."
        if errors:
            return None
        return sandboxes.snapshot_sandbox(conn, values["sandbox"], values["snapshot_name"]).id

    baseline_id = await run(request, take)
    if baseline_id is None:
        return await _cohort_page(request, session, cohort_id, errors, values, 400)
    return redirect(f"/trainer/cohorts/{cohort_id}?done=snapshot")
