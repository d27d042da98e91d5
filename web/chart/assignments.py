"""What a trainee is assigned, and which sandboxes a signed-in person may open a chart in.

A trainee's assignments are the tasks of the packs assigned to each of the trainee's cohorts (``cohort_packs``;
every pack of the server's library when the cohort has none assigned) whose training case is a patient in the
trainee's sandbox, plus any other task the trainee attempted there.  Each comes with the latest attempt.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, select

from sandbox.accounts.cohorts import can_reach, pack_ids
from sandbox.accounts.users import User
from sandbox.fhir.interactions import Interactions
from sandbox.store.layers import UnknownSandbox, resolve_view
from sandbox.store.schema import cohort_members, cohorts, layers
from tasks.engine import ACTIVE, SUBMITTED, TIMED_OUT, Attempt, TaskEngine
from tasks.model import Pack, Task

CHART_ROLES = ("trainee", "trainer", "admin", "vendor")


@dataclass(frozen=True)
class Membership:
    cohort_id: str
    cohort_name: str
    sandbox_id: str
    sandbox_name: str


@dataclass(frozen=True)
class Assignment:
    membership: Membership
    pack: Pack
    task: Task
    attempt: Attempt | None

    @property
    def ref(self) -> str:
        return f"{self.pack.id}/{self.task.id}"

    @property
    def status(self) -> str:
        if self.attempt is None:
            return "Not started"
        if self.attempt.status == ACTIVE:
            return "In progress"
        if self.attempt.status == SUBMITTED:
            return "Passed" if self.attempt.passed else "Not passed"
        if self.attempt.status == TIMED_OUT:
            return "Time is up: " + ("passed" if self.attempt.passed else "not passed")
        return "Abandoned"


def memberships(conn: Connection, user: User) -> list[Membership]:
    m, c, lay = cohort_members.c, cohorts.c, layers.c
    rows = conn.execute(
        select(m.cohort_id, c.name, m.sandbox_id, lay.name.label("sandbox_name"))
        .join(cohorts, c.id == m.cohort_id)
        .join(layers, lay.id == m.sandbox_id)
        .where(m.user_id == user.id)
        .order_by(c.name, m.cohort_id)
    ).all()
    return [Membership(r.cohort_id, r.name, r.sandbox_id, r.sandbox_name) for r in rows]


def may_open(conn: Connection, user: User, sandbox_id: str) -> bool:
    """Trainees and vendors: only the sandboxes their cohorts gave them (the ones the vendor console lists), not
    the default one.  Trainers: their cohorts' sandboxes.  Admins: all."""
    if user.role in ("trainee", "vendor"):
        return any(ms.sandbox_id == sandbox_id for ms in memberships(conn, user))
    return user.role in ("trainer", "admin") and can_reach(conn, user, sandbox_id)


def assignments_for(conn: Connection, engine: TaskEngine, fhir: Interactions, user: User) -> list[Assignment]:
    found = []
    for membership in memberships(conn, user):
        try:
            view = resolve_view(conn, membership.sandbox_id)
        except UnknownSandbox:
            continue
        present: dict[str, bool] = {}
        attempts = {
            (a.pack_id, a.task_id): a
            for a in engine.attempts(conn, sandbox_id=membership.sandbox_id)
            if a.trainee_id == user.id
        }  # ordered by attempt: the last one kept is the latest
        assigned = set(pack_ids(conn, membership.cohort_id)) or set(engine.library.packs)
        for pack, task in engine.library.tasks():
            if pack.id not in assigned and (pack.id, task.id) not in attempts:
                continue
            if task.case not in present:
                stored = fhir.repo.current(conn, view, "Patient", task.case)
                present[task.case] = stored is not None and not stored.deleted
            if present[task.case]:
                found.append(Assignment(membership, pack, task, attempts.get((pack.id, task.id))))
    return found
