"""Reports for trainers: the cohort matrix (trainees by tasks), completion per task and per competency,
CSV, and xAPI 1.0.3 statements an LRS accepts.

A cell is the trainee's latest attempt at the task (score, status), with the
number of attempts and the time spent over all of them.  An attempt closed by
its time limit is graded like a submitted one (as an LMS grades an attempt it
submits when time runs out): ``passed`` if it met the threshold by the
deadline, else ``timed-out``; either way the cell says ``timed_out``.  xAPI statement ids are
UUIDv5 of the attempt and verb, so exporting twice sends the same statements
(an LRS accepts a statement it already has with the same id and content).
"""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from sandbox.accounts.cohorts import Cohort, get_cohort
from tasks.engine import SUBMITTED, TIMED_OUT, Attempt, TaskEngine
from tasks.model import Task

NOT_STARTED, IN_PROGRESS, PASSED, FAILED = "not-started", "in-progress", "passed", "failed"
# TIMED_OUT ("timed-out") is a cell status too: the time limit closed the attempt short of the threshold.
XAPI_NAMESPACE = uuid.UUID("6f1c7a52-3c1e-4f6e-9d0e-2b7f3f4d9a10")
VERBS = {
    "attempted": "http://adlnet.gov/expapi/verbs/attempted",
    "completed": "http://adlnet.gov/expapi/verbs/completed",
    "passed": "http://adlnet.gov/expapi/verbs/passed",
    "failed": "http://adlnet.gov/expapi/verbs/failed",
}
ASSESSMENT = "http://adlnet.gov/expapi/activities/assessment"
CSV_COLUMNS = [
    "cohort", "trainee", "trainee_name", "sandbox", "pack", "task", "status", "score", "max_score", "scaled",
    "attempts", "seconds_on_task", "timed_out",
]  # fmt: skip


@dataclass(frozen=True)
class Cell:
    status: str
    score: float = 0.0
    max_score: float = 0.0
    attempts: int = 0
    seconds: float = 0.0
    sandbox_id: str = ""
    timed_out: bool = False  # the latest attempt was closed by its time limit (passed or not)

    @property
    def scaled(self) -> float:
        return round(self.score / self.max_score, 4) if self.max_score else 0.0


@dataclass
class CohortReport:
    cohort: Cohort
    tasks: list[tuple[str, Task]]  # (pack id, task), the matrix's columns
    cells: dict[tuple[str, str], Cell]  # (user id, "pack/task") -> cell
    attempts: list[Attempt] = field(default_factory=list)

    def cell(self, user_id: str, pack_id: str, task: Task) -> Cell:
        return self.cells.get((user_id, f"{pack_id}/{task.id}"), Cell(NOT_STARTED))

    def completion_by_task(self) -> dict[str, float]:
        members = self.cohort.members
        return {
            f"{p}/{t.id}": _share(sum(self.cell(m.user.id, p, t).status == PASSED for m in members), len(members))
            for p, t in self.tasks
        }

    def completion_by_competency(self) -> dict[str, float]:
        counts: dict[str, list[int]] = {}
        for p, t in self.tasks:
            for member in self.cohort.members:
                passed = self.cell(member.user.id, p, t).status == PASSED
                for competency in t.competencies:
                    tally = counts.setdefault(competency, [0, 0])
                    tally[0] += passed
                    tally[1] += 1
        return {c: _share(done, total) for c, (done, total) in sorted(counts.items())}

    def to_json(self) -> dict[str, Any]:
        return {
            "cohort": self.cohort.id,
            "tasks": [f"{p}/{t.id}" for p, t in self.tasks],
            "matrix": [
                {
                    "trainee": m.user.id,
                    "name": m.user.name,
                    "cells": {f"{p}/{t.id}": _cell_json(self.cell(m.user.id, p, t)) for p, t in self.tasks},
                }
                for m in self.cohort.members
            ],
            "completion_by_task": self.completion_by_task(),
            "completion_by_competency": self.completion_by_competency(),
        }


def _share(done: int, total: int) -> float:
    return round(done / total, 4) if total else 0.0


def _cell_json(cell: Cell) -> dict[str, Any]:
    return {
        "status": cell.status,
        "score": cell.score,
        "max_score": cell.max_score,
        "attempts": cell.attempts,
        "seconds_on_task": round(cell.seconds, 2),
        "timed_out": cell.timed_out,
    }


def cohort_report(
    conn: Connection, engine: TaskEngine, cohort_id: str, *, packs: list[str] | None = None
) -> CohortReport:
    """The matrix of a cohort; its columns are the tasks anyone attempted, plus every task of ``packs``."""
    cohort = get_cohort(conn, cohort_id)
    members = {(m.user.id, m.sandbox_id) for m in cohort.members}
    attempts = [
        a
        for a in engine.attempts(conn, sandbox_ids=cohort.sandbox_ids, with_results=False)
        if (a.trainee_id, a.sandbox_id) in members
    ]
    columns: dict[str, tuple[str, Task]] = {}
    for pack_id in packs or []:
        pack = engine.library.packs.get(pack_id)
        if pack is None:
            raise LookupError(f"There is no pack '{pack_id}'")
        columns.update({f"{pack.id}/{t.id}": (pack.id, t) for t in pack.tasks})
    grouped: dict[tuple[str, str], list[Attempt]] = {}
    for attempt in attempts:
        ref = f"{attempt.pack_id}/{attempt.task_id}"
        if ref not in columns:
            try:
                pack, task = engine.library.find(ref)
            except LookupError:
                continue  # a pack no longer installed
            columns[ref] = (pack.id, task)
        grouped.setdefault((attempt.trainee_id, ref), []).append(attempt)
    cells = {key: _cell(sorted(group, key=lambda a: a.attempt)) for key, group in grouped.items()}
    return CohortReport(cohort, list(columns.values()), cells, attempts)


def cell_status(attempt: Attempt) -> str:
    """What an attempt counts as in a report: passed, failed, timed-out (closed by its time limit short of the
    threshold) or in-progress."""
    if attempt.status == SUBMITTED:
        return PASSED if attempt.passed else FAILED
    if attempt.status == TIMED_OUT:
        return PASSED if attempt.passed else TIMED_OUT
    return IN_PROGRESS


def _cell(attempts: list[Attempt]) -> Cell:
    latest = attempts[-1]
    return Cell(
        cell_status(latest),
        latest.score,
        latest.max_score,
        len(attempts),
        sum(a.seconds_on_task for a in attempts),
        latest.sandbox_id,
        latest.status == TIMED_OUT,
    )


def to_csv(report: CohortReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for member in report.cohort.members:
        for pack_id, task in report.tasks:
            cell = report.cell(member.user.id, pack_id, task)
            writer.writerow(
                [
                    report.cohort.id,
                    member.user.id,
                    member.user.name,
                    member.sandbox_id,
                    pack_id,
                    task.id,
                    cell.status,
                    f"{cell.score:g}",
                    f"{cell.max_score:g}",
                    f"{cell.scaled:g}",
                    cell.attempts,
                    f"{cell.seconds:.2f}",
                    "true" if cell.timed_out else "false",
                ]
            )
    return out.getvalue()


def xapi_statements(report: CohortReport, base_url: str) -> list[dict[str, Any]]:
    """Per attempt: ``attempted`` when it started; once submitted, ``completed`` and ``passed`` or ``failed``;
    once closed by its time limit, ``passed`` or ``failed`` alone (see ``_statement``)."""
    base = base_url.rstrip("/")
    names = {m.user.id: m.user.name for m in report.cohort.members}
    tasks = {f"{p}/{t.id}": t for p, t in report.tasks}
    statements = []
    for attempt in report.attempts:
        task = tasks.get(f"{attempt.pack_id}/{attempt.task_id}")
        if task is None:
            continue
        verbs = ["attempted"]
        if attempt.status == SUBMITTED:
            verbs += ["completed", "passed" if attempt.passed else "failed"]
        elif attempt.status == TIMED_OUT:
            # No ``completed``: the trainee did not finish it, the time limit ended it.  The score earned by the
            # deadline still decides success, as an LMS grades an attempt it submits when time runs out; an LRS
            # (or a cmi5 moveOn rule) reading ``failed`` or ``passed`` needs nothing else to grade it.
            verbs.append("passed" if attempt.passed else "failed")
        for verb in verbs:
            statements.append(_statement(report.cohort, attempt, task, verb, base, names.get(attempt.trainee_id)))
    return statements


def _statement(cohort: Cohort, attempt: Attempt, task: Task, verb: str, base: str, name: str | None) -> dict[str, Any]:
    key = f"{attempt.sandbox_id}/{attempt.trainee_id}/{attempt.pack_id}/{attempt.task_id}/{attempt.attempt}"
    actor: dict[str, Any] = {"objectType": "Agent", "account": {"homePage": base, "name": attempt.trainee_id}}
    if name:
        actor["name"] = name
    statement: dict[str, Any] = {
        "id": str(uuid.uuid5(XAPI_NAMESPACE, f"{key}/{verb}")),
        "actor": actor,
        "verb": {"id": VERBS[verb], "display": {"en-US": verb}},
        "object": {
            "objectType": "Activity",
            "id": f"{base}/tasks/{attempt.pack_id}/{attempt.task_id}",
            "definition": {
                "name": {"en-US": task.title},
                "description": {"en-US": task.instructions},
                "type": ASSESSMENT,
            },
        },
        "context": {
            "registration": str(uuid.uuid5(XAPI_NAMESPACE, key)),
            "platform": "ehr-sandbox",
            "contextActivities": {
                "parent": [{"objectType": "Activity", "id": f"{base}/tasks/{attempt.pack_id}"}],
                "grouping": [
                    {
                        "objectType": "Activity",
                        "id": f"{base}/cohorts/{cohort.id}",
                        "definition": {"name": {"en-US": cohort.name}},
                    }
                ],
            },
        },
        "timestamp": (attempt.started_at if verb == "attempted" else attempt.ended_at or attempt.started_at)[:23] + "Z",
    }
    if verb != "attempted":
        timed_out = attempt.status == TIMED_OUT
        statement["result"] = {
            "score": {"scaled": attempt.scaled, "raw": attempt.score, "min": 0, "max": attempt.max_score},
            "success": attempt.passed,
            # Completion says whether the learner finished the activity, apart from success (xAPI 1.0.3 Result):
            # an attempt the time limit closed was not finished, whatever it scored.
            "completion": not timed_out,
            # A timed-out attempt ended at its deadline, so this is the limit: never longer than allowed.
            "duration": iso_duration(attempt.seconds_on_task),
        }
        if task.time_limit_minutes:
            # Neither xAPI nor cmi5 defines a time limit in a statement (SCORM 2004's cmi.max_time_allowed has no
            # counterpart): extensions under our own IRIs say the limit and whether it ended the attempt.
            statement["result"]["extensions"] = {
                f"{base}/xapi/extensions/time-limit": iso_duration(task.time_limit_minutes * 60),
                f"{base}/xapi/extensions/timed-out": timed_out,
            }
    return statement


def iso_duration(seconds: float) -> str:
    """ISO 8601 duration to 0.01 s, as xAPI asks: ``PT1H2M3.45S``."""
    centis = round(seconds * 100)
    hours, rest = divmod(centis, 360000)
    minutes, centis = divmod(rest, 6000)
    text = "PT" + (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    whole, frac = divmod(centis, 100)
    return text + (f"{whole}.{frac:02d}S" if frac else f"{whole}S")
