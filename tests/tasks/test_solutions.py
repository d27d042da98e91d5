"""Every built-in task, graded on its reference solution (full marks) and its common mistakes (each fails
exactly the check it is about, with that check's feedback, and nothing else fails)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sandbox.fhir.interactions import Interactions
from sandbox.store.database import Database
from tasks.engine import TaskEngine
from tasks.library import Library
from tests.tasks.reference_writes import Solution, load_solutions, write_as_trainee

SOLUTIONS = load_solutions()


def test_every_built_in_task_has_a_reference_solution_and_two_mistakes(library: Library) -> None:
    solved = {s.task: s for s in SOLUTIONS}
    for pack, task in library.tasks():
        ref = f"{pack.id}/{task.id}"
        assert ref in solved, f"{ref} has no reference solution"
        assert len(solved[ref].mistakes) >= 2, f"{ref} needs at least two common mistakes"


@pytest.mark.parametrize("solution", SOLUTIONS, ids=[s.task.split("/")[1] for s in SOLUTIONS])
def test_reference_scores_full_marks_and_each_mistake_fails_its_check(
    solution: Solution,
    db: Database,
    fhir: Interactions,
    engine: TaskEngine,
    library: Library,
    new_sandbox: Callable[[str], str],
) -> None:
    pack, task = library.find(solution.task)
    sandbox = new_sandbox("reference")
    attempt = engine.start(sandbox, "ana", solution.task)
    write_as_trainee(db, fhir, sandbox, "ana", attempt.context, solution.reference)
    graded = engine.check(sandbox, "ana", solution.task)
    failing = [(r.check_id, r.message) for r in graded.results if r.status != "pass" and r.max_points]
    assert failing == [], failing
    assert graded.score == graded.max_score == task.max_points
    assert graded.passed

    for n, mistake in enumerate(solution.mistakes):
        sandbox = new_sandbox(f"mistake-{n}")
        attempt = engine.start(sandbox, "ben", solution.task)
        write_as_trainee(db, fhir, sandbox, "ben", attempt.context, mistake.writes)
        graded = engine.check(sandbox, "ben", solution.task)
        failed = [r for r in graded.results if r.status == "fail"]
        assert [r.check_id for r in failed] == [mistake.fails], (
            mistake.name,
            [(r.check_id, r.message) for r in failed],
        )
        expected = next(c for c in task.checks if c.id == mistake.fails)
        assert failed[0].feedback == expected.feedback
        assert graded.score == graded.max_score - expected.points
