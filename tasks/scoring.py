"""A task's score from its check results: points earned less hints used, against the pack's threshold."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.checks import FAIL, CheckResult
from tasks.model import Task


@dataclass(frozen=True)
class Score:
    score: float
    max_score: float
    passed: bool

    @property
    def scaled(self) -> float:
        return round(self.score / self.max_score, 4) if self.max_score else 0.0


def score(task: Task, results: list[CheckResult], threshold: float, hints_used: int = 0) -> Score:
    earned = sum(r.points for r in results)
    possible = sum(r.max_points for r in results)
    earned = max(0.0, earned - sum(h.cost for h in task.hints[:hints_used]))
    critical_failed = any(r.critical and r.status == FAIL for r in results)
    # A rounding margin: 0.8 of 10 points is 8.0 however the floats fall.
    passed = possible > 0 and not critical_failed and earned + 1e-9 >= threshold * possible
    return Score(round(earned, 4), round(possible, 4), passed)
