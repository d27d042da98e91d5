"""Fixtures for the task engine: a baseline holding the training cases, sandboxes made from it, the engine."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from sandbox.fhir.interactions import Interactions
from sandbox.fhir.search_params import registry
from sandbox.store.database import Database
from sandbox.store.repository import Repository
from sandbox.store.sandboxes import create_sandbox
from tasks.cases import load_case_baseline
from tasks.engine import TaskEngine
from tasks.library import Library


@pytest.fixture(scope="session")
def library() -> Library:
    return Library.builtin()


@pytest.fixture
def fhir() -> Interactions:
    reg = registry()
    return Interactions(Repository(reg), reg)


class Clock:
    """The engine's time: the real time moved by ``offset``.  FHIR writes keep the real time, so a test moves the
    engine's clock back to start an attempt in the past, and forward to be past a deadline, without sleeping."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(db: Database, fhir: Interactions, library: Library, clock: Clock) -> TaskEngine:
    return TaskEngine(db, fhir, library, clock=clock)


@pytest.fixture
def case_baseline(db: Database, fhir: Interactions) -> str:
    return load_case_baseline(db, fhir, "Training cases", baseline_id="cases")


@pytest.fixture
def new_sandbox(db: Database, case_baseline: str) -> Callable[[str], str]:
    """Make a sandbox on the cases baseline (one row: cheap), named as asked."""

    def make(name: str) -> str:
        with db.write() as conn:
            return create_sandbox(conn, name, case_baseline, sandbox_id=name).id

    return make
