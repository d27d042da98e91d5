"""The app's task engine over the built-in packs: one per app, made on first use, shared by every web page that
grades, checks or reports (the trainee chart and the trainer console alike)."""

from __future__ import annotations

from functools import cache

from starlette.applications import Starlette

from tasks.engine import TaskEngine
from tasks.library import Library


@cache
def builtin_library() -> Library:
    """Read and validated once per process: every app of the process grades against the same packs."""
    return Library.builtin()


def task_engine(app: Starlette) -> TaskEngine:
    """``app.state.tasks``, made on first use."""
    engine = getattr(app.state, "tasks", None)
    if engine is None:
        engine = app.state.tasks = TaskEngine(app.state.db, app.state.fhir, builtin_library())
    return engine
