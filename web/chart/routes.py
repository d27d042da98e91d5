"""The trainee's EHR pages: assignments, patient search, the chart's sections, entry forms, the task panel.

Every page needs a signed-in trainee, trainer, admin or vendor (others get the 403 page), and a sandbox the
person may open (``assignments.may_open``: a vendor opens the charts of its own sandboxes, to launch its apps).
Forms post back to their own URL: a good entry is written through ``Interactions`` in one transaction,
attributed to the signed-in user (``user:<id>`` via ``web-ui``), the sandbox's active task attempts are
re-checked, and the browser is sent to the chart section that shows the entry (post/redirect/get); a bad one is
shown again with an error beside each field, and nothing is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from sandbox.accounts.sessions import WebSession
from sandbox.cdshooks.client import CdsError
from sandbox.cdshooks.hooks import ORDER_SELECT, ORDER_SIGN, PATIENT_VIEW
from sandbox.concurrency import run_in_threadpool
from sandbox.fhir.outcome import FhirError
from sandbox.store.admin_errors import AdminError
from sandbox.store.layers import View
from sandbox.store.repository import Actor
from sandbox.urls import public_root
from tasks.engine import Attempt, TaskFailure, TimeIsUp
from tasks.feedback import MAX_COMMENT, QUESTION, RATINGS, record_feedback
from tasks.library import UnknownTask
from web.chart import chart_data
from web.chart.app_launch import launch_app
from web.chart.assignments import CHART_ROLES, assignments_for, memberships
from web.chart.chart_data import ChartReader
from web.chart.context import (
    SECTION_IDS,
    SECTIONS,
    actor_of,
    base_context,
    chart_cds,
    chart_reader,
    chart_user,
    id_of,
    load_chart,
    panel_for,
    recheck_tasks,
    sandbox_view,
    task_engine,
    today,
    with_task,
)
from web.chart.decision_support import (
    LINK,
    OrderCards,
    call_ids,
    decided_text,
    link_app_context,
    parse_choice,
    touched,
)
from web.chart.forms import FORMS, Choices, Context, Form, FormErrors, Write, new_id, read_form
from web.chart.value_sets import value_set
from web.pages import WebRoute, csp_allowing, page, redirect
from web.signin import WebError, csrf_protected, require_role

router = APIRouter(route_class=WebRoute, include_in_schema=False)

# The site's own files in web/static: a plain name with one of these endings, nothing else.
_STATIC_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*\.(css|js)$")
_STATIC_TYPES = {"css": "text/css; charset=utf-8", "js": "text/javascript; charset=utf-8"}

trainee_only = require_role("trainee")


# ---- static files: the project's own stylesheet and script ----------------------------------------------


@router.get("/static/{name}")
def static_file(name: str) -> Response:
    """``web/static/NAME`` (the project's own CSS and JS; any other engineer's pages may add theirs there)."""
    found = _STATIC_NAME.match(name)
    file = resources.files("web").joinpath("static", name)
    if found is None or not file.is_file():
        raise WebError(404, "Not found", "There is no such file.")
    return Response(file.read_bytes(), media_type=_STATIC_TYPES[found.group(1)])


# ---- assignments ---------------------------------------------------------------------------------------


@router.get("/assignments")
def assignments_page(request: Request, session: WebSession = Depends(trainee_only)) -> Response:
    engine = task_engine(request)
    with request.app.state.db.read() as conn:
        found = assignments_for(conn, engine, request.app.state.fhir, session.user)
    return page(
        "chart/assignments.html",
        {"user": session.user, "csrf_token": session.csrf_token, "assignments": found},
    )


@router.post("/assignments/start")
async def start_task(request: Request, session: WebSession = Depends(csrf_protected)) -> Response:
    _require_trainee(session)
    form = await request.form()
    sandbox_id, ref = str(form.get("sandbox", "")), str(form.get("task", ""))

    def start() -> str:
        with request.app.state.db.read() as conn:
            member = next((m for m in memberships(conn, session.user) if m.sandbox_id == sandbox_id), None)
        if member is None:
            raise WebError(403, "Not your sandbox", "You can start tasks only in the sandboxes of your own cohorts.")
        engine = task_engine(request)
        try:
            attempt = engine.start(sandbox_id, session.user.id, ref, cohort_id=member.cohort_id)
        except (UnknownTask, TaskFailure) as exc:
            raise WebError(400, "Cannot start the task", str(exc)) from None
        patient_id = attempt.context["patient"].split("/", 1)[1]
        return with_task(f"/chart/{sandbox_id}/patients/{patient_id}", f"{attempt.pack_id}/{attempt.task_id}")

    return redirect(await run_in_threadpool(start))


def _require_trainee(session: WebSession) -> None:
    if session.user.role != "trainee":
        raise WebError(403, "Not allowed", f"This is for a trainee, not a {session.user.role}.")


# ---- patients ------------------------------------------------------------------------------------------


@router.get("/chart/{sandbox_id}/patients")
def patient_list(
    request: Request,
    sandbox_id: str,
    q: str = "",
    cursor: str = "",
    task: str | None = None,
    session: WebSession = Depends(chart_user),
) -> Response:
    """The patient list, a page at a time: ``cursor`` is the FHIR search's own paging cursor, which the Previous
    and Next links carry (a position in the order, so the pages hold no page numbers).  A cursor that is not one
    of the search's is 400."""
    view = sandbox_view(request, session, sandbox_id)
    fhir = request.app.state.fhir
    status, problem = 200, ""
    with request.app.state.db.read() as conn:
        try:
            found = chart_data.find_patients(conn, fhir, view, q, cursor=cursor[:2000])
        except FhirError:
            found = chart_data.PatientPage([], None, None)
            if cursor:  # words that match nobody are no error; a page link the search did not make is
                status, problem = 400, "That page of the list cannot be shown (the link is not a list page)."

    def page_url(position: str | None) -> str | None:
        return with_task(request.url.path, task, q=q[:100], cursor=position) if position else None

    context = base_context(request, session, sandbox_id, task) | {
        "patients": found.rows,
        "q": q[:100],
        "per_page": chart_data.PATIENTS_PER_PAGE,
        "next_url": page_url(found.next),
        "previous_url": page_url(found.previous),
        "problem": problem,
    }
    return page("chart/patients.html", context, status)


# ---- the chart -------------------------------------------------------------------------------------------


@router.get("/chart/{sandbox_id}/patients/{patient_id}")
@router.get("/chart/{sandbox_id}/patients/{patient_id}/{section}")
async def chart_page(
    request: Request,
    sandbox_id: str,
    patient_id: str,
    section: str = "summary",
    task: str | None = None,
    session: WebSession = Depends(chart_user),
) -> Response:
    """The chart.  Opening it (its own URL, not one of its sections) fires CDS Hooks' patient-view; the sections
    keep showing the cards of that firing, with what the user did with them."""
    if section not in SECTION_IDS:
        raise WebError(404, "Not found", f"The chart has no section '{section}'.")
    opening = "section" not in request.path_params
    chart = await run_in_threadpool(load_chart, request, session, sandbox_id, patient_id, section, task, opening)
    support = chart_cds(request, session, sandbox_id, patient_id)
    if opening:
        cards = await support.patient_view(chart.encounter_id)
        if cards.cards:  # a task may judge the cards shown (the task engine's cds check)
            await run_in_threadpool(recheck_tasks, request, sandbox_id)
    else:
        cards = await support.latest(PATIENT_VIEW)
    return chart.response(cards)


@router.post("/chart/{sandbox_id}/patients/{patient_id}/launch/{client_id}")
async def launch_page(
    request: Request, sandbox_id: str, patient_id: str, client_id: str, session: WebSession = Depends(csrf_protected)
) -> Response:
    """Launch a SMART app for this patient: ``mode=tab`` answers a redirect to the app (the form opened a new
    tab), ``mode=embedded`` (the default) answers the chart page with the app in an iframe under the banner.
    From a CDS card's SMART link (``cds_link``), the launch carries that link's ``appContext``."""
    chart_user(session)
    form = await request.form()
    mode = "tab" if form.get("mode") == "tab" else "embedded"
    task = str(form.get("task") or "") or None
    link = str(form.get(LINK) or "")
    view = sandbox_view(request, session, sandbox_id)
    state = request.app.state

    def work() -> tuple[str, str, dict[str, Any]]:
        with state.db.write() as conn:
            banner = chart_reader(request, conn, view, patient_id).banner()
            try:
                context = (
                    link_app_context(conn, view.overlay, session.user, patient_id, link, client_id) if link else None
                )
            except CdsError as exc:
                raise WebError(exc.status, "Cannot launch the app", exc.message) from None
            try:
                url, origin = launch_app(
                    conn,
                    state,
                    session.user,
                    client_id,
                    sandbox_id,
                    patient_id,
                    root=public_root(request),
                    policy=state.smart.policy,
                    app_context=context,
                )
            except AdminError as exc:
                raise WebError(exc.status, "Cannot launch the app", exc.message) from None
            return url, origin, banner

    url, origin, banner = await run_in_threadpool(work)
    if mode == "tab":
        return RedirectResponse(url, status_code=303)
    context = base_context(request, session, sandbox_id, task) | {
        "banner": banner,
        "patient_id": patient_id,
        "section": "",
        "sections": SECTIONS,
        "client_id": client_id,
        "app_url": url,
        "back": f"/chart/{sandbox_id}/patients/{patient_id}",
    }
    return page("chart/launch.html", context, headers=csp_allowing(frame_src=[origin]))


# ---- entry forms -------------------------------------------------------------------------------------------


def _form(form_id: str) -> Form:
    form = FORMS.get(form_id)
    if form is None or not form.patient:
        raise WebError(404, "Not found", f"There is no form '{form_id}'.")
    return form


def _choices(request: Request, conn: Any, view: View, form: Form, reader: ChartReader | None) -> dict[str, Choices]:
    """The dynamic lists the form's fields pick from, read from the chart and the sandbox's directory."""
    fhir = request.app.state.fhir
    wanted = {f.source for f in form.fields if f.kind == "choice"}
    found: dict[str, Choices] = {}
    if "encounters" in wanted and reader is not None:
        found["encounters"] = tuple(reader.encounter_choices())
    if "reasons" in wanted and reader is not None:
        found["reasons"] = tuple(reader.conditions_for_reason())
    if "performers" in wanted:
        found["performers"] = tuple(chart_data.practitioner_roles(conn, fhir, view))
    if "payors" in wanted:
        found["payors"] = tuple(chart_data.payors(conn, fhir, view))
    if "active_orders" in wanted and reader is not None:
        found["active_orders"] = tuple(
            (f"MedicationRequest/{m['id']}", m["medication"])
            for m in reader.medications(statements=False)["orders"]
            if m["status"] == "active"
        )
    if "open_referral_tasks" in wanted and reader is not None:
        found["open_referral_tasks"] = tuple(reader.open_referral_tasks())
    if "consult_notes" in wanted and reader is not None:
        found["consult_notes"] = tuple(reader.consult_notes())
    return found


def _defaults(form: Form, choices: dict[str, Choices], request: Request) -> dict[str, str]:
    values = {f.name: f.default for f in form.fields}
    for f in form.fields:
        if f.name in request.query_params:  # a link may preselect (e.g. the order to discontinue)
            values[f.name] = request.query_params[f.name][:200]
    # An entry belongs to the visit in progress unless the user says otherwise: preselect it.
    encounters = choices.get("encounters", ())
    if "encounter" in values and encounters and encounters[0][1].endswith("in-progress") and not values["encounter"]:
        values["encounter"] = encounters[0][0]
    if "occurrence" in values and not values["occurrence"]:
        values["occurrence"] = today().isoformat()
    return values


def _form_page(
    request: Request,
    session: WebSession,
    sandbox_id: str,
    task: str | None,
    form: Form,
    values: dict[str, str],
    errors: dict[str, str],
    choices: dict[str, Choices],
    banner: Any,
    patient_id: str | None,
    status: int = 200,
    problem: str = "",
    order: OrderCards | None = None,
) -> Response:
    pickers = {f.value_set: value_set(f.value_set).concepts for f in form.fields if f.kind == "code"}
    picked = {}  # what the code in a picker means, shown beside it
    for f in form.fields:
        if f.kind == "code" and values.get(f.name, "").split():
            concept = value_set(f.value_set).find(values[f.name].split()[0])
            picked[f.name] = concept.display if concept else ""
    context = base_context(request, session, sandbox_id, task) | {
        "form": form,
        "values": values,
        "errors": errors,
        "choices": choices,
        "pickers": pickers,
        "picked": picked,
        "banner": banner,
        "patient_id": patient_id or "",
        "section": form.section,
        "sections": SECTIONS,
        "problem": problem,
        "action": request.url.path,
        "order": order,
    }
    return page("chart/form.html", context, status)


@router.get("/chart/{sandbox_id}/patients/{patient_id}/forms/{form_id}")
def form_page(
    request: Request,
    sandbox_id: str,
    patient_id: str,
    form_id: str,
    task: str | None = None,
    session: WebSession = Depends(chart_user),
) -> Response:
    form = _form(form_id)
    view = sandbox_view(request, session, sandbox_id)
    with request.app.state.db.read() as conn:
        reader = chart_reader(request, conn, view, patient_id)
        choices = _choices(request, conn, view, form, reader)
        banner = reader.banner()
    values = _defaults(form, choices, request)
    order = OrderCards(new_id()) if form.order else None
    return _form_page(request, session, sandbox_id, task, form, values, {}, choices, banner, patient_id, order=order)


@router.post("/chart/{sandbox_id}/patients/{patient_id}/forms/{form_id}")
async def save_form(
    request: Request, sandbox_id: str, patient_id: str, form_id: str, session: WebSession = Depends(csrf_protected)
) -> Response:
    form = _form(form_id)
    raw = await request.form()
    posted = {k: v for k, v in raw.items() if isinstance(v, str)}
    if form.order:
        return await _save_order(request, session, sandbox_id, patient_id, form, raw, posted)
    return await run_in_threadpool(_save, request, session, sandbox_id, patient_id, form, posted)


@router.get("/chart/{sandbox_id}/register")
def register_page(
    request: Request, sandbox_id: str, task: str | None = None, session: WebSession = Depends(chart_user)
) -> Response:
    form = FORMS["register"]
    view = sandbox_view(request, session, sandbox_id)
    with request.app.state.db.read() as conn:
        choices = _choices(request, conn, view, form, None)
    values = _defaults(form, choices, request)
    return _form_page(request, session, sandbox_id, task, form, values, {}, choices, None, None)


@router.post("/chart/{sandbox_id}/register")
async def register(request: Request, sandbox_id: str, session: WebSession = Depends(csrf_protected)) -> Response:
    posted = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    return await run_in_threadpool(_save, request, session, sandbox_id, None, FORMS["register"], posted)


@dataclass(frozen=True)
class Entry:
    """A posted form, read: the typed values and their errors, and what the page needs to show it again."""

    view: View
    values: dict[str, Any]
    errors: dict[str, str]
    shown: dict[str, str]  # what was typed, to show again
    choices: dict[str, Choices]
    banner: Any


def _entry(
    request: Request, session: WebSession, sandbox_id: str, patient_id: str | None, form: Form, posted: dict[str, str]
) -> Entry:
    if session.user.role not in CHART_ROLES:
        raise WebError(403, "Not allowed", f"The chart is not for a {session.user.role}.")
    view = sandbox_view(request, session, sandbox_id)
    with request.app.state.db.read() as conn:
        reader = chart_reader(request, conn, view, patient_id) if patient_id else None
        choices = _choices(request, conn, view, form, reader)
        banner = reader.banner() if reader else None
    values, errors = read_form(form, posted, choices)
    shown = {f.name: posted.get(f.name, "")[:20_000] for f in form.fields}
    return Entry(view, values, errors, shown, choices, banner)


def _build(request: Request, conn: Any, entry: Entry, form: Form, patient_id: str | None) -> list[Write]:
    """The form's writes (``FormErrors`` for what needs several fields to judge)."""
    fhir, view = request.app.state.fhir, entry.view
    ctx = Context(
        patient_ref=f"Patient/{patient_id}" if patient_id else "",
        now=datetime.now(UTC),
        read=lambda rtype, rid: chart_data.resource_of(fhir.read(conn, view, rtype, rid)),
        search=lambda rtype, query: [chart_data.resource_of(s) for s in fhir.search(conn, view, rtype, query).matches],
        labels={source: dict(options) for source, options in entry.choices.items()},
    )
    return form.build(entry.values, ctx)


def _shown_again(
    request: Request,
    session: WebSession,
    sandbox_id: str,
    task: str | None,
    form: Form,
    entry: Entry,
    patient_id: str | None,
    status: int,
    errors: dict[str, str] | None = None,
    problem: str = "",
    order: OrderCards | None = None,
) -> Response:
    """The form again after a post, with what was typed, the errors, and the order's decision support."""
    values, choices, banner = entry.shown, entry.choices, entry.banner
    return _form_page(
        request,
        session,
        sandbox_id,
        task,
        form,
        values,
        errors or {},
        choices,
        banner,
        patient_id,
        status,
        problem,
        order,
    )


def _not_saved(exc: FhirError) -> str:
    return "The entry was not saved: " + "; ".join(i.diagnostics for i in exc.issues)[:500]


def _save(
    request: Request,
    session: WebSession,
    sandbox_id: str,
    patient_id: str | None,
    form: Form,
    posted: dict[str, str],
) -> Response:
    task = posted.get("task") or None
    entry = _entry(request, session, sandbox_id, patient_id, form, posted)

    def again(errors: dict[str, str], problem: str = "") -> Response:
        return _shown_again(request, session, sandbox_id, task, form, entry, patient_id, 422, errors, problem)

    if entry.errors:
        return again(entry.errors)
    try:
        with request.app.state.db.write() as conn:
            writes = _build(request, conn, entry, form, patient_id)
            _apply(request.app.state.fhir, conn, entry.view, writes, actor_of(session))
    except FormErrors as exc:
        return again(exc.errors)
    except FhirError as exc:
        return again({}, _not_saved(exc))
    recheck_tasks(request, sandbox_id)
    if patient_id is None:
        patient_id = next(w.id for w in writes if w.resource_type == "Patient")
    return redirect(with_task(f"/chart/{sandbox_id}/patients/{patient_id}/{form.section}", task, saved=form.title))


# ---- order forms: decision support before an order is signed -----------------------------------------------

_DRAFT_ID = re.compile(r"^[A-Za-z0-9-]{8,64}$")


async def _save_order(
    request: Request,
    session: WebSession,
    sandbox_id: str,
    patient_id: str,
    form: Form,
    raw: FormData,
    posted: dict[str, str],
) -> Response:
    """An order form's post: a decision on one of its cards, "Check order" (order-select on the draft), or
    "Sign order" (order-sign; written once no critical card is left undecided: ``ChartCds.sign``).  The draft
    lives in the form until it is signed: its id travels in ``draft_id``, its cards' calls in ``cds_select`` and
    ``cds_sign``; a suggestion that removes it ends the form."""
    task = posted.get("task") or None
    section_url = f"/chart/{sandbox_id}/patients/{patient_id}/{form.section}"
    entry = await run_in_threadpool(_entry, request, session, sandbox_id, patient_id, form, posted)
    support = chart_cds(request, session, sandbox_id, patient_id)
    draft_id = posted.get("draft_id", "")
    if not _DRAFT_ID.match(draft_id):
        draft_id = new_id()
    order = OrderCards(
        draft_id,
        await support.shown(call_ids(posted.get("cds_select")), ORDER_SELECT),
        await support.shown(call_ids(posted.get("cds_sign")), ORDER_SIGN),
    )

    def again(status: int, order: OrderCards, errors: dict[str, str] | None = None, problem: str = "") -> Response:
        return _shown_again(request, session, sandbox_id, task, form, entry, patient_id, status, errors, problem, order)

    try:
        choice = parse_choice(raw)
    except ValueError as exc:
        return again(400, order, problem=str(exc))
    if choice is not None:
        try:
            decision = await support.decide(choice, order.cards)
        except CdsError as exc:
            return again(exc.status, order.with_error(choice, exc.message))
        await run_in_threadpool(recheck_tasks, request, sandbox_id)
        outcome = decided_text(order.cards, choice, decision)
        if touched(decision, f"{form.order}/{draft_id}"):  # the suggestion replaced or removed the draft
            return redirect(with_task(section_url, task, saved=outcome))
        order = OrderCards(
            draft_id,
            await support.shown(order.selected.call_ids, ORDER_SELECT),
            await support.shown(order.signing.call_ids, ORDER_SIGN),
            message=outcome,
        )
        return again(200, order)
    if entry.errors:
        return again(422, order, entry.errors)
    try:
        writes = await run_in_threadpool(_draft_writes, request, entry, form, patient_id, draft_id)
    except FormErrors as exc:
        return again(422, order, exc.errors)
    drafts = [{**w.resource, "id": w.id, "status": "draft"} for w in writes if w.id == draft_id]
    encounter_id = id_of(entry.values.get("encounter"))
    if posted.get("step") == "check":
        selected = await support.order_select(encounter_id, drafts)
        if selected.cards:
            await run_in_threadpool(recheck_tasks, request, sandbox_id)
        count = len(selected.cards)
        said = f"{count} card{'s' if count != 1 else ''} below" if count else "nothing to add"
        return again(200, replace(order, selected=selected, message=f"Decision support checked the draft: {said}."))
    signing, ready = await support.sign(encounter_id, drafts, order.signing, order.selected)
    order = replace(order, signing=signing)
    if not ready:
        if signing.cards:
            await run_in_threadpool(recheck_tasks, request, sandbox_id)
        if signing.undecided_critical:
            message = "Not signed: accept a suggestion of each critical alert below, or override it with a reason."
        else:
            message = "Not signed yet: decision support has cards about this order. Read them, then sign again."
        return again(409, replace(order, message=message, alert=True))
    try:
        await run_in_threadpool(_sign_writes, request, session, entry, writes)
    except FhirError as exc:
        return again(422, order, problem=_not_saved(exc))
    await run_in_threadpool(recheck_tasks, request, sandbox_id)
    return redirect(with_task(section_url, task, saved=form.title))


def _draft_writes(request: Request, entry: Entry, form: Form, patient_id: str, draft_id: str) -> list[Write]:
    """The form's writes, its order with the draft's id: the id the services saw is the id the order is signed as."""
    with request.app.state.db.read() as conn:
        writes = _build(request, conn, entry, form, patient_id)
    return [replace(w, id=draft_id) if w.resource_type == form.order and not w.update else w for w in writes]


def _sign_writes(request: Request, session: WebSession, entry: Entry, writes: list[Write]) -> None:
    fhir = request.app.state.fhir
    with request.app.state.db.write() as conn:
        for w in writes:
            if not w.update and fhir.repo.current(conn, entry.view, w.resource_type, w.id) is not None:
                raise FhirError.of(409, "duplicate", "This order was signed already (see the chart).")
        _apply(fhir, conn, entry.view, writes, actor_of(session))


def _apply(fhir: Any, conn: Any, view: View, writes: list[Write], actor: Actor) -> None:
    for w in writes:
        if w.update:
            fhir.update(conn, view, w.resource_type, w.id, {**w.resource, "id": w.id}, actor, method="PUT")
        else:
            fhir.create(conn, view, w.resource, actor, rid=w.id)


# ---- task actions ------------------------------------------------------------------------------------------


async def _task_form(request: Request, session: WebSession) -> tuple[str, str]:
    _require_trainee(session)
    form = await request.form()
    return str(form.get("task", "")), str(form.get("back", ""))


def _back(sandbox_id: str, back: str, task: str) -> str:
    prefix = f"/chart/{sandbox_id}/"
    path = back if back.startswith(prefix) and "?" not in back and "//" not in back else prefix + "patients"
    return with_task(path, task)


def _task_action(request: Request, session: WebSession, sandbox_id: str, ref: str, action: str) -> Attempt | None:
    sandbox_view(request, session, sandbox_id)
    engine = task_engine(request)
    try:
        if action == "check":
            return engine.check(sandbox_id, session.user.id, ref)
        if action == "hint":
            engine.hint(sandbox_id, session.user.id, ref)
            return None
        if action == "submit":
            return engine.submit(sandbox_id, session.user.id, ref)
        return engine.retry(sandbox_id, session.user.id, ref)
    except TimeIsUp as late:
        # Not an error page: the attempt is closed with its final result, which the panel (and, after a submit,
        # the result page) shows under "Time is up".
        return late.attempt
    except (UnknownTask, TaskFailure) as exc:
        raise WebError(400, "Cannot do that", str(exc)) from None


@router.post("/chart/{sandbox_id}/task/{action}")
async def task_action(
    request: Request, sandbox_id: str, action: str, session: WebSession = Depends(csrf_protected)
) -> Response:
    if action not in ("check", "hint", "submit", "retry"):
        raise WebError(404, "Not found", f"There is no task action '{action}'.")
    ref, back = await _task_form(request, session)
    if action == "retry":
        request.app.state.views.forget(sandbox_id)  # a retry may reset the sandbox's overlay
    await run_in_threadpool(_task_action, request, session, sandbox_id, ref, action)
    if action == "submit":
        return redirect(with_task(f"/chart/{sandbox_id}/task/result", ref))
    return redirect(_back(sandbox_id, back, ref))


@router.get("/chart/{sandbox_id}/task/result")
def task_result(
    request: Request, sandbox_id: str, task: str = "", session: WebSession = Depends(trainee_only)
) -> Response:
    sandbox_view(request, session, sandbox_id)
    return _result_page(request, session, sandbox_id, task, {}, "", 200)


def _result_page(
    request: Request, session: WebSession, sandbox_id: str, task: str, errors: dict[str, str], comment: str, status: int
) -> Response:
    panel = panel_for(request, session, sandbox_id, task)
    if panel is None or panel.attempt is None:
        raise WebError(404, "No attempt", "You have not started this task here.")
    context = base_context(request, session, sandbox_id, task) | {
        "question": QUESTION,
        "ratings": RATINGS,
        "thanks": request.query_params.get("thanks") == "1",
        "errors": errors,
        "comment": comment,
    }
    return page("chart/result.html", context, status)


@router.get("/chart/{sandbox_id}/task/panel")
def task_panel(
    request: Request, sandbox_id: str, task: str = "", back: str = "", session: WebSession = Depends(trainee_only)
) -> Response:
    """The task panel alone, for the page's script to refresh the checklist when the live worker re-checks."""
    sandbox_view(request, session, sandbox_id)
    panel = panel_for(request, session, sandbox_id, task)
    if panel is None:
        raise WebError(404, "No task", "There is no such task.")
    return page(
        "chart/panel.html",
        {"panel": panel, "csrf_token": session.csrf_token, "sandbox_id": sandbox_id, "back": back, "task": task},
    )


@router.post("/chart/{sandbox_id}/feedback")
async def task_feedback(request: Request, sandbox_id: str, session: WebSession = Depends(csrf_protected)) -> Response:
    """The one question after a task; a bad answer is shown again with the error beside it, and not stored."""
    _require_trainee(session)
    form = await request.form()
    ref, rating_raw, comment = (str(form.get(k, "")).strip() for k in ("task", "rating", "comment"))

    def save() -> Response:
        sandbox_view(request, session, sandbox_id)
        panel = panel_for(request, session, sandbox_id, ref)
        if panel is None or panel.attempt is None:
            raise WebError(404, "No attempt", "You have not started this task here.")
        errors = {}
        if rating_raw not in {str(r) for r in RATINGS}:
            errors["rating"] = "Choose one of the five answers."
        if len(comment) > MAX_COMMENT:
            errors["comment"] = f"A comment is at most {MAX_COMMENT:,} characters."
        if errors:
            return _result_page(request, session, sandbox_id, ref, errors, comment[:MAX_COMMENT], 422)
        with request.app.state.db.write() as conn:
            attempt = panel.attempt
            assert attempt is not None
            record_feedback(
                conn,
                sandbox_id,
                session.user.id,
                panel.pack.id,
                panel.task.id,
                attempt.attempt,
                int(rating_raw),
                comment,
            )
        return redirect(with_task(f"/chart/{sandbox_id}/task/result", ref, thanks="1"))

    return await run_in_threadpool(save)
