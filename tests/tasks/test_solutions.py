"""Every built-in task, graded on its reference solution (full marks) and its common mistakes (each fails
exactly the check it is about, with that check's feedback, and nothing else fails)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from sandbox.fhir.interactions import Interactions
from sandbox.hl7v2 import destinations
from sandbox.store.database import Database
from tasks.engine import TaskEngine
from tasks.library import Library
from tasks.model import Task
from tests.sandbox.hl7v2.test_outbound import Destination
from tests.tasks.reference_writes import Solution, deliver_outbound, load_solutions, write_as_trainee

SOLUTIONS = load_solutions()


def test_every_built_in_task_has_a_reference_solution_and_two_mistakes(library: Library) -> None:
    solved = {s.task: s for s in SOLUTIONS}
    for pack, task in library.tasks():
        ref = f"{pack.id}/{task.id}"
        assert ref in solved, f"{ref} has no reference solution"
        assert len(solved[ref].mistakes) >= 2, f"{ref} needs at least two common mistakes"


@pytest.fixture
def lab() -> Iterator[Destination]:
    """The lab's interface: a real MLLP peer on a socket that acknowledges every message with AA."""
    peer = Destination()
    yield peer
    peer.close()


def _work(
    db: Database, fhir: Interactions, sandbox: str, trainee: str, context: dict[str, str], writes: list, task: Task
) -> None:
    """The trainee's writes; for a task with HL7 v2 checks, also what the outbox worker does after them
    (the messages queued per destination and sent to it)."""
    write_as_trainee(db, fhir, sandbox, trainee, context, writes)
    if any(c.hl7 for c in task.checks):
        deliver_outbound(db, fhir)


@pytest.mark.parametrize("solution", SOLUTIONS, ids=[s.task.split("/")[1] for s in SOLUTIONS])
def test_reference_scores_full_marks_and_each_mistake_fails_its_check(
    solution: Solution,
    db: Database,
    fhir: Interactions,
    engine: TaskEngine,
    library: Library,
    new_sandbox: Callable[[str], str],
    lab: Destination,
) -> None:
    pack, task = library.find(solution.task)

    def sandbox_with_lab(name: str) -> str:
        sandbox = new_sandbox(name)
        with db.write() as conn:  # as the trainer sets it up: the lab's MLLP destination for this sandbox
            destinations.put(conn, sandbox, "lab", {"host": "127.0.0.1", "port": lab.port})
        return sandbox

    sandbox = sandbox_with_lab("reference")
    attempt = engine.start(sandbox, "ana", solution.task)
    _work(db, fhir, sandbox, "ana", attempt.context, solution.reference, task)
    graded = engine.check(sandbox, "ana", solution.task)
    failing = [(r.check_id, r.message) for r in graded.results if r.status != "pass" and r.max_points]
    assert failing == [], failing
    assert graded.score == graded.max_score == task.max_points
    assert graded.passed

    for n, mistake in enumerate(solution.mistakes):
        sandbox = sandbox_with_lab(f"mistake-{n}")
        attempt = engine.start(sandbox, "ben", solution.task)
        _work(db, fhir, sandbox, "ben", attempt.context, mistake.writes, task)
        graded = engine.check(sandbox, "ben", solution.task)
        failed = [r for r in graded.results if r.status == "fail"]
        assert [r.check_id for r in failed] == [mistake.fails], (
            mistake.name,
            [(r.check_id, r.message) for r in failed],
        )
        expected = next(c for c in task.checks if c.id == mistake.fails)
        assert failed[0].feedback == expected.feedback
        assert graded.score == graded.max_score - expected.points
