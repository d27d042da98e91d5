"""Attempts at tasks: start, check now, hint, submit, retry; and re-checking a sandbox's active attempts.

An attempt fixes its placeholders when it starts (the case's Patient, the
patient's in-progress Encounter, the start time), so that later checks judge
against the same encounter the trainee was asked about.  Results are stored
on the attempt row after every check run.

A task with a ``time_limit`` gives each attempt a deadline, its start plus the
limit (``tasks.timing``; derived, not stored).  Once it has passed, the attempt
is closed as ``timed-out``: judged a last time as the sandbox stood at the
deadline (the trainee's later writes and CDS Hooks actions are set aside) and
ended at the deadline, so its time on task is the limit.  The live worker
closes such attempts within one poll of the deadline (``close_timed_out``);
any action on the attempt before then closes it first (check, hint, submit,
retry, start, ``latest``, a sandbox re-check), so nobody sees it still open.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, and_, delete, insert, or_, select, update

from sandbox.fhir.interactions import Interactions
from sandbox.fhir.validation import parse_json
from sandbox.store.database import Database
from sandbox.store.layers import UnknownSandbox, View, resolve_view
from sandbox.store.repository import Actor
from sandbox.store.sandboxes import reset_sandbox
from sandbox.store.schema import cds_calls, cds_decisions, hl7v2_messages, resource_versions, task_attempts
from tasks import timing
from tasks.checks import CheckResult, Scope, run_checks
from tasks.library import Library
from tasks.model import Hint, Pack, Task
from tasks.scoring import Score, score

ENGINE_ACTOR = Actor("system:tasks", "tasks")
ACTIVE, SUBMITTED, ABANDONED, TIMED_OUT = "active", "submitted", "abandoned", "timed-out"


class TaskFailure(Exception):
    """Something the caller asked that cannot be done (no such sandbox, no attempt to check): one line."""


class TimeIsUp(TaskFailure):
    """A hint or a submit after the attempt's deadline: the attempt is closed (timed-out) with its final score."""

    def __init__(self, attempt: Attempt, task: Task) -> None:
        limit = f" of {task.time_limit_minutes} minutes" if task.time_limit_minutes else ""
        super().__init__(
            f"Time is up: attempt {attempt.attempt} at task '{task.id}' closed at its time limit{limit}, scoring"
            f" {attempt.score:g}/{attempt.max_score:g} ({'passed' if attempt.passed else 'not passed'});"
            " retry to start again"
        )
        self.attempt = attempt


@dataclass(frozen=True)
class Attempt:
    sandbox_id: str
    trainee_id: str
    pack_id: str
    task_id: str
    attempt: int
    cohort_id: str | None
    status: str
    started_at: str
    ended_at: str | None
    context: dict[str, str]
    hints_used: int
    score: float
    max_score: float
    passed: bool
    results: list[CheckResult]
    checked_at: str | None

    @property
    def seconds_on_task(self) -> float:
        end = self.ended_at or self.checked_at or self.started_at
        return max(0.0, (_parse(end) - _parse(self.started_at)).total_seconds())

    @property
    def scaled(self) -> float:
        return round(self.score / self.max_score, 4) if self.max_score else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "sandbox": self.sandbox_id,
            "trainee": self.trainee_id,
            "pack": self.pack_id,
            "task": self.task_id,
            "attempt": self.attempt,
            "cohort": self.cohort_id,
            "status": self.status,
            "started": _instant(self.started_at),
            "ended": _instant(self.ended_at) if self.ended_at else None,
            "score": self.score,
            "max_score": self.max_score,
            "scaled": self.scaled,
            "passed": self.passed,
            "hints_used": self.hints_used,
            "seconds_on_task": round(self.seconds_on_task, 3),
            "checks": [r.to_json() for r in self.results],
        }


def _parse(index_form: str) -> datetime:
    # fromisoformat reads the fixed-width index form (YYYY-MM-DDTHH:MM:SS.ffffff) ten times faster than strptime,
    # which was most of the cost of a 100-trainee progress matrix.
    return datetime.fromisoformat(index_form)


def _instant(index_form: str) -> str:
    return index_form[:23] + "Z"


class TaskEngine:
    def __init__(
        self, db: Database, fhir: Interactions, library: Library, *, clock: Callable[[], datetime] = timing.utc_now
    ) -> None:
        self.db = db
        self.fhir = fhir
        self.library = library
        self.clock = clock  # timezone-aware; tests pass their own to move time on

    def now(self) -> str:
        """The engine's time in the store's index form (what ``started_at`` and deadlines are compared with)."""
        return timing.index_form(self.clock())

    # ---- the trainee's actions -----------------------------------------------------------------

    def start(self, sandbox_id: str, trainee_id: str, task_ref: str, *, cohort_id: str | None = None) -> Attempt:
        """A new attempt, or the active one if there is one already.  An attempt that ran out of time is
        returned closed, not replaced: the trainee sees that time is up, and a retry starts the next one with
        the reset the pack asks for."""
        pack, task = self.library.find(task_ref)
        with self.db.write() as conn:
            current = self._latest(conn, sandbox_id, trainee_id, pack.id, task.id)
            if current is not None:
                current = self._expire(conn, current, pack, task)
                if current.status in (ACTIVE, TIMED_OUT):
                    return current
            return self._start(
                conn, sandbox_id, trainee_id, pack, task, cohort_id, (current.attempt if current else 0) + 1
            )

    def check(self, sandbox_id: str, trainee_id: str, task_ref: str) -> Attempt:
        """Run the checks of the trainee's latest attempt now and store the results (a closed attempt, or one
        whose time is up, is returned closed with its final results)."""
        pack, task = self.library.find(task_ref)
        with self.db.write() as conn:
            attempt = self._require_latest(conn, sandbox_id, trainee_id, pack, task)
            return self._check(conn, attempt, pack, task)

    def hint(self, sandbox_id: str, trainee_id: str, task_ref: str) -> Hint:
        """The next hint; using it may cost points (the pack says how many)."""
        pack, task = self.library.find(task_ref)
        with self.db.write() as conn:
            attempt = self._open_or_closed(conn, sandbox_id, trainee_id, pack, task)
            if attempt.status == ACTIVE:
                if attempt.hints_used >= len(task.hints):
                    raise TaskFailure(f"Task '{task.id}' has no more hints")
                self._update(conn, attempt, hints_used=attempt.hints_used + 1)
                return task.hints[attempt.hints_used]
        raise self._not_open(attempt, task)  # after the commit: closing it at its deadline is kept

    def submit(self, sandbox_id: str, trainee_id: str, task_ref: str) -> Attempt:
        """Check a last time and close the attempt; its score is final."""
        pack, task = self.library.find(task_ref)
        with self.db.write() as conn:
            attempt = self._open_or_closed(conn, sandbox_id, trainee_id, pack, task)
            if attempt.status == ACTIVE:
                attempt = self._check(conn, attempt, pack, task)  # closes it instead if the deadline just passed
            if attempt.status == ACTIVE:
                end = attempt.checked_at or self.now()
                limit_end = timing.deadline(attempt.started_at, task.time_limit_minutes)
                # A submit in the last milliseconds ends at the deadline at the latest: time on task <= the limit.
                self._update(conn, attempt, status=SUBMITTED, ended_at=min(end, limit_end) if limit_end else end)
                return self._reload(conn, attempt)
        raise self._not_open(attempt, task)

    def retry(self, sandbox_id: str, trainee_id: str, task_ref: str) -> Attempt:
        """Close the latest attempt, reset what the pack says (the task's writes, or the sandbox), start anew."""
        pack, task = self.library.find(task_ref)
        with self.db.write() as conn:
            attempt = self._require_latest(conn, sandbox_id, trainee_id, pack, task)
            attempt = self._expire(conn, attempt, pack, task)  # out of time: on record as timed-out, not abandoned
            if attempt.status == ACTIVE:
                self._update(conn, attempt, status=ABANDONED, ended_at=self.now())
            if task.retry == "sandbox":
                reset_sandbox(conn, sandbox_id)
            else:
                self._undo(conn, _view(conn, sandbox_id), f"user:{trainee_id}", attempt.started_at)
            return self._start(conn, sandbox_id, trainee_id, pack, task, attempt.cohort_id, attempt.attempt + 1)

    # ---- live re-checks ------------------------------------------------------------------------

    def recheck_sandbox(self, conn: Connection, sandbox_id: str) -> list[Attempt]:
        """Re-run the checks of every active attempt in the sandbox (after its data changed); one whose time is
        up is closed instead, judged without the writes made after its deadline."""
        rows = conn.execute(
            select(task_attempts).where(task_attempts.c.sandbox_id == sandbox_id, task_attempts.c.status == ACTIVE)
        ).all()
        done = []
        for row in rows:
            attempt = _attempt(row)
            try:
                pack, task = self.library.find(f"{attempt.pack_id}/{attempt.task_id}")
            except LookupError:
                continue  # a pack removed since the attempt started: nothing to judge against
            done.append(self._check(conn, attempt, pack, task))
        return done

    def close_timed_out(self) -> list[Attempt]:
        """Close every active attempt whose deadline has passed (the live worker calls this on each poll).

        A read first, so a poll with nothing to close takes no write lock; on PostgreSQL the rows are taken
        ``FOR UPDATE SKIP LOCKED``, so several workers share the work and never close one attempt twice."""
        timed = {(p.id, t.id): (p, t, t.time_limit_minutes) for p, t in self.library.tasks() if t.time_limit_minutes}
        if not timed:
            return []
        t = task_attempts.c
        now = self.now()
        started_too_early = [
            and_(t.pack_id == pack_id, t.task_id == task_id, t.started_at <= timing.cutoff(now, limit))
            for (pack_id, task_id), (_, _, limit) in timed.items()
        ]
        overdue = and_(t.status == ACTIVE, or_(*started_too_early))
        with self.db.read() as conn:
            if conn.execute(select(t.attempt).where(overdue).limit(1)).first() is None:
                return []
        closed = []
        with self.db.write() as conn:
            query = select(task_attempts).where(overdue)
            if conn.dialect.name != "sqlite":
                query = query.with_for_update(skip_locked=True)
            for row in conn.execute(query).all():
                attempt = _attempt(row)
                pack, task, _ = timed[(attempt.pack_id, attempt.task_id)]
                closed.append(self._expire(conn, attempt, pack, task))
        return closed

    # ---- reads ---------------------------------------------------------------------------------

    def attempts(
        self,
        conn: Connection,
        *,
        cohort_id: str | None = None,
        sandbox_id: str | None = None,
        sandbox_ids: Collection[str] | None = None,
        with_results: bool = True,
    ) -> list[Attempt]:
        """Attempts, by trainee, pack, task and number.  ``with_results=False`` leaves each attempt's check results
        out (``results`` empty): a progress matrix needs scores, not the results' JSON."""
        query = select(*(c for c in task_attempts.c if with_results or c.name != "results"))
        if cohort_id is not None:
            query = query.where(task_attempts.c.cohort_id == cohort_id)
        if sandbox_id is not None:
            query = query.where(task_attempts.c.sandbox_id == sandbox_id)
        if sandbox_ids is not None:
            query = query.where(task_attempts.c.sandbox_id.in_(list(sandbox_ids)))
        order = (task_attempts.c.trainee_id, task_attempts.c.pack_id, task_attempts.c.task_id, task_attempts.c.attempt)
        return [_attempt(row, with_results) for row in conn.execute(query.order_by(*order)).all()]

    def latest(self, sandbox_id: str, trainee_id: str, task_ref: str) -> Attempt | None:
        """The latest attempt; one whose time is up is closed first (a write only then)."""
        pack, task = self.library.find(task_ref)
        with self.db.read() as conn:
            attempt = self._latest(conn, sandbox_id, trainee_id, pack.id, task.id)
        if attempt is None or not self._out_of_time(attempt, task):
            return attempt
        with self.db.write() as conn:
            return self._expire(conn, self._reload(conn, attempt), pack, task)

    # ---- inside ----------------------------------------------------------------------------------

    def _start(
        self, conn: Connection, sandbox_id: str, trainee_id: str, pack: Pack, task: Task, cohort_id: str | None, n: int
    ) -> Attempt:
        view = _view(conn, sandbox_id)
        patient = self.fhir.repo.current(conn, view, "Patient", task.case)
        if patient is None or patient.deleted:
            raise TaskFailure(
                f"Sandbox '{sandbox_id}' has no Patient/{task.case}: load the case '{task.case}' into its baseline"
            )
        started = self.now()
        context = {
            "patient": f"Patient/{task.case}",
            "encounter": self._current_encounter(conn, view, task.case),
            "task.started": _instant(started),
            "trainee": f"user:{trainee_id}",
        }
        conn.execute(
            insert(task_attempts).values(
                sandbox_id=sandbox_id,
                trainee_id=trainee_id,
                pack_id=pack.id,
                task_id=task.id,
                attempt=n,
                cohort_id=cohort_id,
                status=ACTIVE,
                started_at=started,
                context=orjson.dumps(context).decode(),
                hints_used=0,
                score=0.0,
                max_score=task.max_points,
                passed=False,
                results=None,
            )
        )
        return self._latest(conn, sandbox_id, trainee_id, pack.id, task.id)  # type: ignore[return-value]

    def _current_encounter(self, conn: Connection, view: View, patient_id: str) -> str:
        query = [("patient", f"Patient/{patient_id}"), ("status", "in-progress"), ("_sort", "-date"), ("_count", "1")]
        found = self.fhir.search(conn, view, "Encounter", query).matches
        return f"Encounter/{found[0].id}" if found else ""

    def _check(self, conn: Connection, attempt: Attempt, pack: Pack, task: Task) -> Attempt:
        attempt = self._expire(conn, attempt, pack, task)
        if attempt.status != ACTIVE:
            return attempt  # a closed attempt keeps its final score
        results, scored = self._judge(conn, attempt, pack, task)
        now = self.now()
        if not self._update(conn, attempt, **_scored_values(results, scored, now)):
            return self._reload(conn, attempt)  # closed meanwhile by another worker: its final score stands
        return replace(
            attempt,
            score=scored.score,
            max_score=scored.max_score,
            passed=scored.passed,
            results=results,
            checked_at=now,
        )

    def _judge(self, conn: Connection, attempt: Attempt, pack: Pack, task: Task) -> tuple[list[CheckResult], Score]:
        scope = Scope(
            conn,
            self.fhir,
            _view(conn, attempt.sandbox_id),
            f"user:{attempt.trainee_id}",
            attempt.started_at,
            dict(attempt.context),
        )
        results = run_checks(task, scope)
        return results, score(task, results, pack.threshold, attempt.hints_used)

    def _out_of_time(self, attempt: Attempt, task: Task) -> bool:
        return attempt.status == ACTIVE and timing.time_is_up(attempt.started_at, task.time_limit_minutes, self.now())

    def _expire(self, conn: Connection, attempt: Attempt, pack: Pack, task: Task) -> Attempt:
        """The attempt as it is, or, if its time is up, closed as timed-out and judged as at its deadline."""
        if not self._out_of_time(attempt, task):
            return attempt
        end = timing.deadline(attempt.started_at, task.time_limit_minutes)
        assert end is not None
        # Judge the sandbox as it stood at the deadline: in a savepoint, undo what the trainee did since (FHIR
        # writes, CDS Hooks calls and card decisions, and the HL7 v2 messages logged since), run the checks, and
        # roll all of that back.  Writes by
        # others (an inbound HL7 v2 message, say) between the deadline and this close still count: the live
        # worker closes within one poll of the deadline, so that window is its interval.
        try:
            view = _view(conn, attempt.sandbox_id)
        except TaskFailure:  # the sandbox was deleted: nothing left to judge, the last results stand
            self._update(conn, attempt, status=TIMED_OUT, ended_at=end)
            return self._reload(conn, attempt)
        actor = f"user:{attempt.trainee_id}"
        as_at_deadline = conn.begin_nested()
        try:
            self._undo(conn, view, actor, end)
            v, c, d = resource_versions.c, cds_calls.c, cds_decisions.c
            conn.execute(
                delete(resource_versions).where(v.layer_id == view.overlay, v.actor == actor, v.last_updated >= end)
            )
            conn.execute(delete(cds_calls).where(c.layer_id == view.overlay, c.actor == actor, c.created_at >= end))
            conn.execute(delete(cds_decisions).where(d.layer_id == view.overlay, d.actor == actor, d.created_at >= end))
            m = hl7v2_messages.c
            conn.execute(delete(hl7v2_messages).where(m.layer_id == view.overlay, m.created_at >= end))
            results, scored = self._judge(conn, attempt, pack, task)
        finally:
            as_at_deadline.rollback()
        self._update(conn, attempt, status=TIMED_OUT, ended_at=end, **_scored_values(results, scored, self.now()))
        return self._reload(conn, attempt)  # closed by us, or a moment earlier by another worker

    def _undo(self, conn: Connection, view: View, actor_id: str, since: str) -> None:
        """Put back every resource the trainee wrote since ``since`` as it was before (or delete it if new)."""
        v = resource_versions.c
        touched = conn.execute(
            select(v.resource_type, v.id)
            .where(v.layer_id == view.overlay, v.actor == actor_id, v.last_updated >= since)
            .distinct()
        ).all()
        for rtype, rid in touched:
            before = conn.execute(
                select(v.version_id, v.deleted, v.content)
                .where(v.layer_id.in_(view.layers), v.resource_type == rtype, v.id == rid, v.last_updated < since)
                .order_by(v.version_id.desc())
                .limit(1)
            ).first()
            current = self.fhir.repo.current(conn, view, rtype, rid)
            if current is None:
                continue
            if before is None or before.deleted or before.content is None:
                if not current.deleted:
                    self.fhir.repo.write(
                        conn, view, None, ENGINE_ACTOR, rtype=rtype, rid=rid, method="DELETE", previous=current
                    )
                continue
            restored = parse_json(before.content)
            restored.pop("meta", None)
            self.fhir.repo.write(
                conn, view, restored, ENGINE_ACTOR, rtype=rtype, rid=rid, method="PUT", previous=current
            )

    def _latest(self, conn: Connection, sandbox_id: str, trainee_id: str, pack_id: str, task_id: str) -> Attempt | None:
        t = task_attempts.c
        row = conn.execute(
            select(task_attempts)
            .where(t.sandbox_id == sandbox_id, t.trainee_id == trainee_id, t.pack_id == pack_id, t.task_id == task_id)
            .order_by(t.attempt.desc())
            .limit(1)
        ).first()
        return _attempt(row) if row is not None else None

    def _require_latest(self, conn: Connection, sandbox_id: str, trainee_id: str, pack: Pack, task: Task) -> Attempt:
        attempt = self._latest(conn, sandbox_id, trainee_id, pack.id, task.id)
        if attempt is None:
            raise TaskFailure(f"Trainee '{trainee_id}' has not started task '{task.id}' in sandbox '{sandbox_id}'")
        return attempt

    def _open_or_closed(self, conn: Connection, sandbox_id: str, trainee_id: str, pack: Pack, task: Task) -> Attempt:
        """The latest attempt, closed first if its time is up; the caller acts on an active one and otherwise
        raises ``_not_open`` once this transaction has committed the close."""
        attempt = self._require_latest(conn, sandbox_id, trainee_id, pack, task)
        return self._expire(conn, attempt, pack, task)

    def _not_open(self, attempt: Attempt, task: Task) -> TaskFailure:
        if attempt.status == TIMED_OUT:
            return TimeIsUp(attempt, task)
        return TaskFailure(f"Attempt {attempt.attempt} at task '{task.id}' is {attempt.status}; retry to start again")

    def _update(self, conn: Connection, attempt: Attempt, **values: Any) -> bool:
        """Change an active attempt; ``False`` if it is no longer active (closed by another worker meanwhile)."""
        t = task_attempts.c
        result = conn.execute(update(task_attempts).where(_key(attempt), t.status == ACTIVE).values(**values))
        return result.rowcount == 1

    def _reload(self, conn: Connection, attempt: Attempt) -> Attempt:
        return _attempt(conn.execute(select(task_attempts).where(_key(attempt))).one())


def _key(attempt: Attempt) -> Any:
    t = task_attempts.c
    return and_(
        t.sandbox_id == attempt.sandbox_id,
        t.trainee_id == attempt.trainee_id,
        t.pack_id == attempt.pack_id,
        t.task_id == attempt.task_id,
        t.attempt == attempt.attempt,
    )


def _scored_values(results: list[CheckResult], scored: Score, checked_at: str) -> dict[str, Any]:
    return {
        "score": scored.score,
        "max_score": scored.max_score,
        "passed": scored.passed,
        "results": orjson.dumps([r.to_json() for r in results]).decode(),
        "checked_at": checked_at,
    }


def _view(conn: Connection, sandbox_id: str) -> View:
    try:
        return resolve_view(conn, sandbox_id)
    except UnknownSandbox:
        raise TaskFailure(f"There is no sandbox '{sandbox_id}'") from None


def _attempt(row: Any, with_results: bool = True) -> Attempt:
    # One dict of the row's values: reading 16 attributes of a SQLAlchemy Row one by one cost more than the rest
    # of building an Attempt, which a 100-trainee progress matrix does 1,600 times.
    r = dict(zip(row._fields, row, strict=True))
    return Attempt(
        sandbox_id=r["sandbox_id"],
        trainee_id=r["trainee_id"],
        pack_id=r["pack_id"],
        task_id=r["task_id"],
        attempt=r["attempt"],
        cohort_id=r["cohort_id"],
        status=r["status"],
        started_at=r["started_at"],
        ended_at=r["ended_at"],
        context=orjson.loads(r["context"]),
        hints_used=r["hints_used"],
        score=r["score"],
        max_score=r["max_score"],
        passed=bool(r["passed"]),
        results=[CheckResult.from_json(x) for x in orjson.loads(r["results"])] if with_results and r["results"] else [],
        checked_at=r["checked_at"],
    )
