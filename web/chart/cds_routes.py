"""The chart's decision-support posts that are not an order form's: accepting or overriding a card shown at the
top of the chart (patient-view), and the page of a draft order stored in the chart, where it is signed.

A stored draft is what an accepted suggestion makes (the demo AI card's atorvastatin, the allergy card's
azithromycin: MedicationRequests with status ``draft``).  Signing one calls order-sign like an order form does
and, once no critical card is left undecided, updates it to ``active`` through ``Interactions`` as the user.
Every post needs the CSRF token; the pages follow the chart's access rules (``context.sandbox_view``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from sandbox.accounts.sessions import WebSession
from sandbox.cdshooks import log
from sandbox.cdshooks.client import CdsError
from sandbox.cdshooks.hooks import ORDER_SIGN, PATIENT_VIEW
from sandbox.concurrency import run_in_threadpool
from sandbox.fhir.outcome import FhirError
from sandbox.store.layers import View
from web.chart import chart_data
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
    recheck_tasks,
    sandbox_view,
    with_task,
)
from web.chart.decision_support import OrderCards, call_ids, decided_text, parse_choice, touched
from web.pages import WebRoute, page, redirect
from web.signin import WebError, csrf_protected

router = APIRouter(route_class=WebRoute, include_in_schema=False)

ORDER_SECTIONS = {"MedicationRequest": "medications", "ServiceRequest": "orders"}  # where each kind of order shows


# ---- a card at the top of the chart -------------------------------------------------------------------------


@router.post("/chart/{sandbox_id}/patients/{patient_id}/cds")
async def chart_card(
    request: Request, sandbox_id: str, patient_id: str, session: WebSession = Depends(csrf_protected)
) -> Response:
    """Accept a suggestion of a patient-view card, or override it; then back to the chart section (303).  A
    refused decision shows the chart again with the reason on the card, and nothing is written."""
    chart_user(session)
    form = await request.form()
    task = str(form.get("task") or "") or None
    section = str(form.get("section") or "")
    section = section if section in SECTION_IDS else "summary"
    await run_in_threadpool(sandbox_view, request, session, sandbox_id)
    support = chart_cds(request, session, sandbox_id, patient_id)
    try:
        choice = parse_choice(form)
    except ValueError as exc:
        raise WebError(400, "Cannot do that", str(exc)) from None
    if choice is None:
        raise WebError(400, "Cannot do that", "Choose a suggestion to accept, or override the card.")
    shown = await support.shown([choice.call_id], PATIENT_VIEW)
    try:
        decision = await support.decide(choice, shown)
    except CdsError as exc:
        latest = await support.latest(PATIENT_VIEW)
        cards = latest if choice.call_id in latest.call_ids else shown  # the card in an older tab: show its own
        chart = await run_in_threadpool(load_chart, request, session, sandbox_id, patient_id, section, task)
        return chart.response(cards.with_error(choice.call_id, choice.key, exc.message), exc.status)
    await run_in_threadpool(recheck_tasks, request, sandbox_id)
    written = _section_of(decision) if decision.outcome == log.ACCEPTED else None
    path = f"/chart/{sandbox_id}/patients/{patient_id}/{written or section}"
    return redirect(with_task(path, task, saved=decided_text(shown, choice, decision)))


def _section_of(decision: log.Decision) -> str | None:
    """The chart section that shows what an accepted suggestion wrote (a draft order: where it is signed)."""
    kinds = [r.split("/")[0] for r in decision.resources]
    return next((ORDER_SECTIONS[k] for k in kinds if k in ORDER_SECTIONS), None)


# ---- a stored draft order --------------------------------------------------------------------------------


def _draft(
    request: Request, session: WebSession, sandbox_id: str, patient_id: str, rtype: str, rid: str
) -> tuple[View, dict[str, Any], Any]:
    """(the sandbox's view, the draft, the banner); the 404 page unless it is a draft order of this patient."""
    if rtype not in ORDER_SECTIONS:
        raise WebError(404, "Not found", f"There is no draft order '{rtype}/{rid}'.")
    view = sandbox_view(request, session, sandbox_id)
    with request.app.state.db.read() as conn:
        banner = chart_reader(request, conn, view, patient_id).banner()
        try:
            draft = chart_data.resource_of(request.app.state.fhir.read(conn, view, rtype, rid))
        except FhirError:
            draft = {}
    if draft.get("status") != "draft" or (draft.get("subject") or {}).get("reference") != f"Patient/{patient_id}":
        raise WebError(404, "Not found", f"There is no draft order '{rtype}/{rid}' for this patient.")
    return view, draft, banner


def _draft_page(
    request: Request,
    session: WebSession,
    sandbox_id: str,
    patient_id: str,
    task: str | None,
    draft: dict[str, Any],
    banner: Any,
    order: OrderCards,
    status: int = 200,
) -> Response:
    rtype = draft["resourceType"]
    context = base_context(request, session, sandbox_id, task) | {
        "banner": banner,
        "patient_id": patient_id,
        "section": ORDER_SECTIONS[rtype],
        "sections": SECTIONS,
        "draft": chart_data.draft_order(draft),
        "draft_ref": f"{rtype}/{draft['id']}",
        "order": order,
        "action": request.url.path,
    }
    return page("chart/draft.html", context, status)


@router.get("/chart/{sandbox_id}/patients/{patient_id}/drafts/{rtype}/{rid}")
def draft_page(
    request: Request,
    sandbox_id: str,
    patient_id: str,
    rtype: str,
    rid: str,
    task: str | None = None,
    session: WebSession = Depends(chart_user),
) -> Response:
    _, draft, banner = _draft(request, session, sandbox_id, patient_id, rtype, rid)
    return _draft_page(request, session, sandbox_id, patient_id, task, draft, banner, OrderCards(rid))


@router.post("/chart/{sandbox_id}/patients/{patient_id}/drafts/{rtype}/{rid}")
async def sign_draft(
    request: Request,
    sandbox_id: str,
    patient_id: str,
    rtype: str,
    rid: str,
    session: WebSession = Depends(csrf_protected),
) -> Response:
    """``step=sign`` (the default): order-sign, then the draft becomes ``active`` once no critical card is left
    undecided; ``step=discard``: the draft is deleted; or a decision on one of the page's cards."""
    chart_user(session)
    form = await request.form()
    task = str(form.get("task") or "") or None
    view, draft, banner = await run_in_threadpool(_draft, request, session, sandbox_id, patient_id, rtype, rid)
    support = chart_cds(request, session, sandbox_id, patient_id)
    order = OrderCards(rid, signing=await support.shown(call_ids(str(form.get("cds_sign") or "")), ORDER_SIGN))
    done = f"/chart/{sandbox_id}/patients/{patient_id}/{ORDER_SECTIONS[rtype]}"

    def again(order: OrderCards, status: int = 200) -> Response:
        return _draft_page(request, session, sandbox_id, patient_id, task, draft, banner, order, status)

    try:
        choice = parse_choice(form)
    except ValueError as exc:
        return again(OrderCards(rid, order.selected, order.signing, str(exc), alert=True), 400)
    if choice is not None:
        try:
            decision = await support.decide(choice, order.signing)
        except CdsError as exc:
            return again(order.with_error(choice, exc.message), exc.status)
        await run_in_threadpool(recheck_tasks, request, sandbox_id)
        outcome = decided_text(order.signing, choice, decision)
        if touched(decision, f"{rtype}/{rid}"):  # the suggestion replaced or removed the draft
            return redirect(with_task(done, task, saved=outcome))
        return again(OrderCards(rid, signing=await support.shown(order.signing.call_ids, ORDER_SIGN), message=outcome))
    if form.get("step") == "discard":

        def discard() -> None:
            with request.app.state.db.write() as conn:
                request.app.state.fhir.delete(conn, view, rtype, rid, actor_of(session))

        await run_in_threadpool(discard)
        await run_in_threadpool(recheck_tasks, request, sandbox_id)
        return redirect(with_task(done, task, saved="draft order discarded"))
    encounter_id = id_of((draft.get("encounter") or {}).get("reference"))
    signing, ready = await support.sign(encounter_id, [draft], order.signing)
    if not ready:
        if signing.cards:
            await run_in_threadpool(recheck_tasks, request, sandbox_id)
        message = (
            "Not signed: accept a suggestion of each critical alert below, or override it with a reason."
            if signing.undecided_critical
            else "Not signed yet: decision support has cards about this order. Read them, then sign again."
        )
        return again(OrderCards(rid, signing=signing, message=message, alert=True), 409)

    def sign() -> None:
        signed = {k: v for k, v in draft.items() if k != "meta"} | {"status": "active"}
        signed.setdefault("authoredOn", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        with request.app.state.db.write() as conn:
            request.app.state.fhir.update(conn, view, rtype, rid, signed, actor_of(session), method="PUT")

    try:
        await run_in_threadpool(sign)
    except FhirError as exc:
        problem = "The order was not signed: " + "; ".join(i.diagnostics for i in exc.issues)[:500]
        return again(OrderCards(rid, signing=signing, message=problem, alert=True), 422)
    await run_in_threadpool(recheck_tasks, request, sandbox_id)
    return redirect(with_task(done, task, saved="order signed"))
