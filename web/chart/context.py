"""What every chart page shares: the trainee's view of a sandbox, the task panel, the base template context, a
chart page's data, and the task re-check after a write.

The route modules (``web.chart.routes``, ``web.chart.cds_routes``) import from here; this module imports no
route module, so the chart's pages depend on it in one direction only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from starlette.responses import Response

from sandbox.accounts.sessions import WebSession
from sandbox.fhir.outcome import FhirError
from sandbox.store.layers import View
from sandbox.store.repository import Actor
from sandbox.urls import public_root
from tasks import timing
from tasks.engine import ACTIVE, TIMED_OUT, Attempt, TaskEngine
from tasks.library import UnknownTask
from tasks.model import Hint, Pack, Task
from web.chart.app_launch import LaunchableApp, launchable_apps
from web.chart.assignments import CHART_ROLES, may_open
from web.chart.chart_data import VITAL_ROWS, ChartReader, PatientNotFound
from web.chart.decision_support import Cards, ChartCds
from web.chart.forms import FORMS
from web.chart.vitals_plot import trend_svg
from web.pages import csp_allowing, page
from web.signin import WebError, require_role
from web.task_engine import task_engine as app_task_engine

WEB_ROUTE = "web-ui"
SECTIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (  # id, title, the forms that add to it
    ("summary", "Summary", ("code-status",)),
    ("problems", "Problems", ("problem",)),
    ("medications", "Medications", ("med-order", "medrec", "discontinue")),
    ("allergies", "Allergies", ("allergy",)),
    ("vitals", "Vitals", ("vitals",)),
    ("results", "Results", ()),
    ("notes", "Notes", ("note",)),
    ("orders", "Orders", ("lab-order", "imaging-order")),
    ("referrals", "Referrals", ("referral", "close-referral")),
    ("encounters", "Encounters", ("appointment",)),
    ("immunizations", "Immunizations", ("immunization",)),
)
SECTION_IDS = {s[0] for s in SECTIONS}

chart_user = require_role(*CHART_ROLES)


def task_engine(request: Request) -> TaskEngine:
    """The app's task engine (``web.task_engine``), for a chart request."""
    return app_task_engine(request.app)


def actor_of(session: WebSession) -> Actor:
    return Actor(f"user:{session.user.id}", WEB_ROUTE)


def today() -> date:
    return datetime.now(UTC).date()


# ---- access --------------------------------------------------------------------------------------------


def sandbox_view(request: Request, session: WebSession, sandbox_id: str) -> View:
    """The sandbox's view, if the signed-in person may open its charts: else the 403 page (404: no such sandbox)."""
    with request.app.state.db.read() as conn:
        allowed = may_open(conn, session.user, sandbox_id)
    if not allowed:
        raise WebError(403, "Not your sandbox", "You can open charts only in the sandboxes of your own cohorts.")
    try:
        return request.app.state.views.get(sandbox_id)
    except FhirError:
        raise WebError(404, "No such sandbox", f"There is no sandbox '{sandbox_id}'.") from None


# ---- the task panel --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Panel:
    ref: str
    pack: Pack
    task: Task
    attempt: Attempt | None
    hints: list[Hint]
    now: str = ""  # the engine's time when the panel was drawn (index form): what the time left counts from

    @property
    def active(self) -> bool:
        return self.attempt is not None and self.attempt.status == ACTIVE

    @property
    def timed_out(self) -> bool:
        return self.attempt is not None and self.attempt.status == TIMED_OUT

    @property
    def deadline(self) -> str | None:
        """When the attempt's time is up (index form, UTC), if the task is timed and an attempt exists."""
        return timing.deadline(self.attempt.started_at, self.task.time_limit_minutes) if self.attempt else None

    @property
    def seconds_left(self) -> int | None:
        """Whole seconds left of an active timed attempt, as the server saw it when drawing the panel."""
        if not self.active or self.attempt is None:
            return None
        left = timing.seconds_left(self.attempt.started_at, self.task.time_limit_minutes, self.now)
        # Rounded up, so the page's clock reaches zero no earlier than the deadline itself.
        return None if left is None else math.ceil(left)

    @property
    def time_left(self) -> str:
        """``14:05`` (minutes:seconds), or ``1:02:03`` past an hour; the page's script counts it down."""
        left = self.seconds_left or 0
        hours, rest = divmod(left, 3600)
        minutes, seconds = divmod(rest, 60)
        return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"

    @property
    def more_hints(self) -> bool:
        return self.active and len(self.hints) < len(self.task.hints)

    @property
    def passed_checks(self) -> int:
        return sum(1 for r in self.attempt.results if r.status == "pass") if self.attempt else 0


def panel_for(request: Request, session: WebSession, sandbox_id: str, ref: str | None) -> Panel | None:
    if not ref or session.user.role != "trainee":
        return None
    engine = task_engine(request)
    try:
        pack, task = engine.library.find(ref)
    except UnknownTask:
        return None
    attempt = engine.latest(sandbox_id, session.user.id, f"{pack.id}/{task.id}")  # closes it if time is up
    hints = list(task.hints[: attempt.hints_used]) if attempt else []
    return Panel(f"{pack.id}/{task.id}", pack, task, attempt, hints, engine.now())


def with_task(path: str, task: str | None, **extra: str) -> str:
    params = {k: v for k, v in {"task": task or "", **extra}.items() if v}
    return path + ("?" + urlencode(params) if params else "")


# ---- a chart page ----------------------------------------------------------------------------------------


def base_context(request: Request, session: WebSession, sandbox_id: str, task: str | None) -> dict[str, Any]:
    """What every chart page's template gets: the user, the sandbox, the task and its panel, the saved notice."""
    return {
        "user": session.user,
        "csrf_token": session.csrf_token,
        "sandbox_id": sandbox_id,
        "task": task or "",
        "panel": panel_for(request, session, sandbox_id, task),
        "with_task": with_task,
        "saved": request.query_params.get("saved", "")[:100],
        "back": request.url.path,
    }


@dataclass(frozen=True)
class ChartPage:
    context: dict[str, Any]
    apps: list[LaunchableApp]
    encounter_id: str | None  # the visit in progress, when the chart was opened

    def response(self, cards: Cards, status: int = 200) -> Response:
        # A "new tab" launch posts here and is answered with a redirect to the app: form-action must allow it.
        return page(
            "chart/chart.html",
            self.context | {"cds": cards},
            status,
            headers=csp_allowing(form_action=[a.origin for a in self.apps]),
        )


def load_chart(
    request: Request,
    session: WebSession,
    sandbox_id: str,
    patient_id: str,
    section: str,
    task: str | None,
    opening: bool = False,
) -> ChartPage:
    view = sandbox_view(request, session, sandbox_id)
    with request.app.state.db.read() as conn:
        reader = chart_reader(request, conn, view, patient_id)
        data = _section_data(reader, section)
        banner = reader.banner()
        apps = launchable_apps(conn, session.user)
        visits = reader.encounter_choices() if opening else []
    context = base_context(request, session, sandbox_id, task) | {
        "banner": banner,
        "patient_id": patient_id,
        "section": section,
        "sections": SECTIONS,
        "forms": FORMS,
        "data": data,
        "apps": apps,
    }
    in_progress = [ref for ref, label in visits if label.endswith("in-progress")]
    return ChartPage(context, apps, id_of(in_progress[0]) if in_progress else None)


def chart_cds(request: Request, session: WebSession, sandbox_id: str, patient_id: str) -> ChartCds:
    return ChartCds(request.app.state, sandbox_id, session.user, patient_id, public_root(request))


def id_of(reference: Any) -> str | None:
    """``Encounter/123`` -> ``123``."""
    return reference.split("/", 1)[1] if isinstance(reference, str) and "/" in reference else None


def chart_reader(request: Request, conn: Any, view: View, patient_id: str) -> ChartReader:
    try:
        return ChartReader(conn, request.app.state.fhir, view, patient_id, today())
    except PatientNotFound:
        raise WebError(404, "No such patient", f"There is no patient '{patient_id}' in this sandbox.") from None


def _section_data(reader: ChartReader, section: str) -> dict[str, Any]:
    if section == "summary":
        vitals = reader.vitals(count=40)
        meds = reader.medications(statements=False)
        return {
            "problems": [p for p in reader.problems() if p["clinical_status"] == "active"],
            "medications": [m for m in meds["orders"] if m["status"] == "active"],
            "vitals": {
                "times": vitals["times"][:1],
                "rows": [{**r, "values": r["values"][:1]} for r in vitals["rows"]],
            },
            "results": reader.results(count=8),
            "appointments": reader.appointments(),
            "coverage": reader.coverage(),
        }
    if section == "problems":
        return {"problems": reader.problems()}
    if section == "medications":
        return reader.medications()
    if section == "allergies":
        return {"allergies": reader.allergies()}
    if section == "vitals":
        vitals = reader.vitals()
        plots = []
        for key, label, _, unit in VITAL_ROWS:
            points = vitals["series"].get(key)
            if points:
                second = vitals["series"].get("bp-diastolic") if key == "bp" else None
                plots.append({"label": label, "svg": trend_svg(label, points, unit, second)})
        return {
            "times": vitals["times"][:12],
            "rows": [{**r, "values": r["values"][:12]} for r in vitals["rows"]],
            "plots": plots,
        }
    if section == "results":
        return {"results": reader.results()}
    if section == "notes":
        return {"notes": reader.notes()}
    if section in ("orders", "referrals"):
        return reader.service_requests()
    if section == "encounters":
        return {"encounters": reader.encounters(), "appointments": reader.appointments()}
    return {"immunizations": reader.immunizations()}


def recheck_tasks(request: Request, sandbox_id: str) -> None:
    """The live checklist: every active attempt in the sandbox judged again now that its data changed."""
    with request.app.state.db.write() as conn:
        task_engine(request).recheck_sandbox(conn, sandbox_id)
