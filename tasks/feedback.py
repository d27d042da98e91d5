"""Learner feedback after a task: one question ("how useful was this task?", 1 to 5) and an optional comment.

Stored per attempt, so a trainer can read it beside the attempt's score.  Answering again replaces the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from sandbox.fhir.values import instant_now
from sandbox.store.schema import task_feedback

QUESTION = "How useful was this task for your work?"
RATINGS = {1: "Not useful", 2: "A little useful", 3: "Useful", 4: "Very useful", 5: "Essential"}
MAX_COMMENT = 2000


@dataclass(frozen=True)
class Feedback:
    sandbox_id: str
    trainee_id: str
    pack_id: str
    task_id: str
    attempt: int
    rating: int
    comment: str
    created_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "sandbox": self.sandbox_id,
            "trainee": self.trainee_id,
            "pack": self.pack_id,
            "task": self.task_id,
            "attempt": self.attempt,
            "question": QUESTION,
            "rating": self.rating,
            "comment": self.comment,
            "created": self.created_at[:23] + "Z",
        }


def record_feedback(
    conn: Connection,
    sandbox_id: str,
    trainee_id: str,
    pack_id: str,
    task_id: str,
    attempt: int,
    rating: int,
    comment: str = "",
) -> Feedback:
    if rating not in RATINGS:
        raise ValueError(f"The rating is a whole number from 1 to 5, not {rating!r}")
    if len(comment) > MAX_COMMENT:
        raise ValueError(f"The comment is at most {MAX_COMMENT} characters")
    t = task_feedback.c
    key = (
        (t.sandbox_id == sandbox_id)
        & (t.trainee_id == trainee_id)
        & (t.pack_id == pack_id)
        & (t.task_id == task_id)
        & (t.attempt == attempt)
    )
    conn.execute(delete(task_feedback).where(key))
    now = instant_now()[1]
    values = {
        "sandbox_id": sandbox_id,
        "trainee_id": trainee_id,
        "pack_id": pack_id,
        "task_id": task_id,
        "attempt": attempt,
        "rating": rating,
        "comment": comment or None,
        "created_at": now,
    }
    conn.execute(insert(task_feedback).values(**values))
    return Feedback(sandbox_id, trainee_id, pack_id, task_id, attempt, rating, comment, now)


def list_feedback(
    conn: Connection, *, sandbox_ids: list[str] | None = None, pack_id: str | None = None
) -> list[Feedback]:
    """Answers, optionally of some sandboxes (a cohort's) or of one pack; oldest first."""
    query = select(task_feedback)
    if sandbox_ids is not None:
        query = query.where(task_feedback.c.sandbox_id.in_(sandbox_ids))
    if pack_id is not None:
        query = query.where(task_feedback.c.pack_id == pack_id)
    rows = conn.execute(query.order_by(task_feedback.c.created_at)).all()
    return [
        Feedback(r.sandbox_id, r.trainee_id, r.pack_id, r.task_id, r.attempt, r.rating, r.comment or "", r.created_at)
        for r in rows
    ]
