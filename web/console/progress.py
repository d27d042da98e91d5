"""The trainer console's progress pages: the matrix, one attempt's checks and entries, exports, certificates.

Everything here reads ``tasks.reports`` (the same matrix the CLI exports) and ``tasks.engine`` attempts;
the matrix's columns are the cohort's assigned packs' tasks plus any other task a member attempted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from sqlalchemy import Connection
from starlette.responses import Response

from sandbox.accounts import cohorts as cohort_ops
from sandbox.accounts.sessions import WebSession
from sandbox.urls import public_root
from tasks.engine import ABANDONED, TIMED_OUT, Attempt, TaskEngine
from tasks.feedback import QUESTION, RATINGS, Feedback, list_feedback
from tasks.reports import (
    FAILED,
    IN_PROGRESS,
    NOT_STARTED,
    PASSED,
    Cell,
    CohortReport,
    cell_status,
    cohort_report,
    to_csv,
)
from tasks.reports import xapi_statements as report_statements
from web.console.access import run, trained_cohort
from web.console.cohorts import trainer_only
from web.console.entries import Entry, trainee_entries
from web.pages import WebRoute, page
from web.signin import WebError
from web.task_engine import task_engine

router = APIRouter(route_class=WebRoute, include_in_schema=False)

# The words shown with each status: the colour is never the only signal.
STATUS_LABELS = {
    PASSED: "Passed",
    FAILED: "Failed",
    TIMED_OUT: "Timed out",
    IN_PROGRESS: "In progress",
    NOT_STARTED: "Not started",
}
# A timed-out attempt that met the threshold by its deadline passed; the trainer still sees that time ran out.
TIME_RAN_OUT = " (time ran out)"
CHECK_LABELS = {"pass": "Pass", "fail": "Fail", "not-applicable": "N/A"}


def duration(seconds: float) -> str:
    """``1h 02m``, ``3m 05s``, ``42s``: time on task as a trainer reads it."""
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _points(value: float) -> str:
    return f"{value:g}"


def _report(conn: Connection, engine: TaskEngine, session: WebSession, cohort_id: str) -> CohortReport:
    if not cohort_ops.trains(conn, session.user, cohort_id):  # one row read; the report reads the cohort itself
        trained_cohort(conn, session.user, cohort_id)  # 404 or 403, worded
    report = cohort_report(conn, engine, cohort_id, packs=list(_packs(conn, engine, cohort_id)))
    return report


def _packs(conn: Connection, engine: TaskEngine, cohort_id: str) -> list[str]:
    """The cohort's packs that the library still has."""
    return [p for p in cohort_ops.pack_ids(conn, cohort_id) if p in engine.library.packs]


# ---- the matrix ---------------------------------------------------------------------------------------------


@router.get("/trainer/cohorts/{cohort_id}/progress")
async def progress(cohort_id: str, request: Request, session: WebSession = Depends(trainer_only)) -> Response:
    engine = task_engine(request.app)
    report = await run(request, lambda conn: _report(conn, engine, session, cohort_id), read_only=True)
    return page("console/progress.html", _matrix_context(report, session))


@dataclass(frozen=True, slots=True)
class MatrixCell:
    """One cell as the template shows it, every text worked out here: 1,600 cells render in milliseconds when the
    template only reads attributes (dict lookups and loop variables in Jinja cost several times more)."""

    ref: str  # pack/task
    status: str
    label: str
    score: str
    time: str
    attempts: int
    href: str | None


def _matrix_context(report: CohortReport, session: WebSession) -> dict[str, Any]:
    columns: list[dict[str, Any]] = [
        {"pack": pack_id, "task": task, "ref": f"{pack_id}/{task.id}", "passed": 0} for pack_id, task in report.tasks
    ]
    rows = []
    for member in report.cohort.members:
        cells = []
        link = f"/trainer/cohorts/{report.cohort.id}/trainees/{member.user.id}/tasks/"
        for column in columns:
            cell: Cell = report.cell(member.user.id, column["pack"], column["task"])
            tried = cell.attempts > 0
            column["passed"] += cell.status == PASSED
            cells.append(
                MatrixCell(
                    column["ref"],
                    cell.status,
                    STATUS_LABELS[cell.status] + (TIME_RAN_OUT if cell.timed_out and cell.status == PASSED else ""),
                    f"{_points(cell.score)}/{_points(cell.max_score)}" if tried else "",
                    duration(cell.seconds) if tried else "",
                    cell.attempts,
                    link + column["ref"] if tried else None,
                )
            )
        rows.append({"user": member.user, "cells": cells})
    # Completion per task and per competency, as CohortReport.completion_by_* define it, from the counts above.
    members = len(report.cohort.members)
    competencies: dict[str, list[int]] = {}
    for column in columns:
        column["completion"] = round(column["passed"] / members, 4) if members else 0.0
        for competency in column["task"].competencies:
            tally = competencies.setdefault(competency, [0, 0])
            tally[0] += column["passed"]
            tally[1] += members
    packs = sorted({c["pack"] for c in columns})
    return {
        "user": session.user,
        "csrf_token": session.csrf_token,
        "cohort": report.cohort,
        "columns": columns,
        "rows": rows,
        "packs": packs,
        "competencies": {
            c: round(done / total, 4) if total else 0.0 for c, (done, total) in sorted(competencies.items())
        },
        "labels": STATUS_LABELS,
    }


@router.get("/trainer/cohorts/{cohort_id}/progress.csv")
async def progress_csv(cohort_id: str, request: Request, session: WebSession = Depends(trainer_only)) -> Response:
    engine = task_engine(request.app)
    report = await run(request, lambda conn: _report(conn, engine, session, cohort_id), read_only=True)
    return Response(
        to_csv(report),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{cohort_id}-progress.csv"'},
    )


@router.get("/trainer/cohorts/{cohort_id}/progress.xapi.json")
async def progress_xapi(cohort_id: str, request: Request, session: WebSession = Depends(trainer_only)) -> Response:
    """xAPI 1.0.3 statements, a JSON array an LRS's ``POST /statements`` accepts as it is."""
    engine = task_engine(request.app)
    report = await run(request, lambda conn: _report(conn, engine, session, cohort_id), read_only=True)
    return Response(
        orjson.dumps(report_statements(report, public_root(request)), option=orjson.OPT_INDENT_2),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{cohort_id}-xapi.json"'},
    )


# ---- one attempt ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttemptView:
    member: cohort_ops.Member
    cohort: cohort_ops.Cohort
    attempts: list[Attempt]  # every attempt at the task, first to last
    shown: Attempt
    entries: list[Entry]
    feedback: Feedback | None  # the trainee's answer to the one question after this attempt


@router.get("/trainer/cohorts/{cohort_id}/trainees/{user_id}/tasks/{pack_id}/{task_id}")
async def attempt_page(
    cohort_id: str,
    user_id: str,
    pack_id: str,
    task_id: str,
    request: Request,
    attempt: int | None = None,
    session: WebSession = Depends(trainer_only),
) -> Response:
    """The checks of one attempt (the latest unless ``?attempt=N``), with what the trainee wrote meanwhile."""
    engine = task_engine(request.app)

    def load(conn: Connection) -> AttemptView:
        cohort = trained_cohort(conn, session.user, cohort_id)
        member = cohort_ops.get_member(conn, cohort_id, user_id)
        found = [
            a
            for a in engine.attempts(conn, sandbox_id=member.sandbox_id)
            if a.trainee_id == member.user.id and a.pack_id == pack_id and a.task_id == task_id
        ]
        if not found:
            raise WebError(404, "Not found", f"{member.user.name} has not started {pack_id}/{task_id}.")
        shown = found[-1] if attempt is None else next((a for a in found if a.attempt == attempt), None)
        if shown is None:
            raise WebError(404, "Not found", f"There is no attempt {attempt}; there are {len(found)}.")
        answers = list_feedback(conn, sandbox_ids=[member.sandbox_id], pack_id=pack_id)
        feedback = next(
            (f for f in answers if (f.trainee_id, f.task_id, f.attempt) == (member.user.id, task_id, shown.attempt)),
            None,
        )
        return AttemptView(member, cohort, found, shown, trainee_entries(conn, shown), feedback)

    view = await run(request, load, read_only=True)
    try:
        _pack, task = engine.library.find(f"{pack_id}/{task_id}")
        title = task.title
    except LookupError:
        title = f"{pack_id}/{task_id}"
    shown = view.shown
    status = STATUS_LABELS[cell_status(shown)]
    if shown.status == TIMED_OUT and shown.passed:
        status += TIME_RAN_OUT
    context = {
        "user": session.user,
        "csrf_token": session.csrf_token,
        "cohort": view.cohort,
        "trainee": view.member.user,
        "title": title,
        "ref": f"{pack_id}/{task_id}",
        "attempts": view.attempts,
        "shown": shown,
        "status": status if shown.status != ABANDONED else "Abandoned (retried)",
        "score": f"{_points(shown.score)}/{_points(shown.max_score)}",
        "time_on_task": duration(shown.seconds_on_task),
        "checks": [
            {
                **r.to_json(),
                "label": CHECK_LABELS.get(r.status, r.status),
                "score": f"{_points(r.points)}/{_points(r.max_points)}",
            }
            for r in shown.results
        ],
        "entries": view.entries,
        "feedback": view.feedback,
        "question": QUESTION,
        "ratings": RATINGS,
    }
    return page("console/attempt.html", context)


# ---- certificates ------------------------------------------------------------------------------------------


@router.get("/trainer/cohorts/{cohort_id}/trainees/{user_id}/certificates/{pack_id}")
async def certificate(
    cohort_id: str, user_id: str, pack_id: str, request: Request, session: WebSession = Depends(trainer_only)
) -> Response:
    """A printable certificate once the trainee passed every task of the pack; until then, what is left."""
    engine = task_engine(request.app)
    pack = engine.library.packs.get(pack_id)

    def load(conn: Connection) -> tuple[CohortReport, cohort_ops.Member]:
        report = _report(conn, engine, session, cohort_id)
        member = cohort_ops.get_member(conn, cohort_id, user_id)
        return report, member

    report, member = await run(request, load, read_only=True)
    if pack is None:
        raise WebError(404, "Not found", f"There is no task pack '{pack_id}'.")
    tasks = []
    for task in pack.tasks:
        cell = report.cell(member.user.id, pack.id, task)
        tasks.append(
            {
                "title": task.title,
                "status": cell.status,
                "label": STATUS_LABELS[cell.status],
                "score": f"{_points(cell.score)}/{_points(cell.max_score)}" if cell.attempts else "",
            }
        )
    ended = [
        a.ended_at
        for a in report.attempts
        if a.trainee_id == member.user.id and a.pack_id == pack.id and a.passed and a.ended_at
    ]
    context = {
        "user": session.user,
        "csrf_token": session.csrf_token,
        "cohort": report.cohort,
        "trainee": member.user,
        "pack": pack,
        "tasks": tasks,
        "complete": all(t["status"] == PASSED for t in tasks),
        "passed": sum(t["status"] == PASSED for t in tasks),
        "completed_on": max(ended)[:10] if ended else None,
    }
    return page("console/certificate.html", context)
