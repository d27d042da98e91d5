"""The demo cohort `ehr-sandbox serve` sets up on its first start, so a new install has something to practise on.

A baseline holding the generator's training cases (the patients the built-in
task packs are about), a trainer, two trainees with a private sandbox each
(each sending its lab orders to the built-in demo lab, ``sandbox.hl7v2.demo_lab``),
and a cohort tying them together.  Passwords are generated, saved beside the
admin token (mode 0600) and printed once, like the admin token.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from sandbox.accounts.cohorts import add_member, create_cohort
from sandbox.accounts.users import create_user
from sandbox.fhir.interactions import Interactions
from sandbox.store.database import Database
from sandbox.store.schema import cohorts, layers
from tasks.cases import load_case_baseline
from tasks.library import Library

DEMO_BASELINE = "demo-cases"
PEOPLE = (
    ("Demo Trainer", "trainer@demo.invalid", "trainer"),
    ("Ada Trainee", "ada@demo.invalid", "trainee"),
    ("Ben Trainee", "ben@demo.invalid", "trainee"),
)


@dataclass(frozen=True)
class Demo:
    cohort_id: str
    baseline_id: str
    accounts: list[tuple[str, str, str]]  # (email, role, password)
    sandboxes: dict[str, str]  # trainee email -> sandbox id
    saved_to: Path


def needs_demo(db: Database) -> bool:
    """Only on a store that has nothing but the default sandbox: never touch a store someone has set up."""
    with db.read() as conn:
        other_layers = conn.execute(select(func.count()).select_from(layers).where(layers.c.id != "default")).scalar()
        any_cohort = conn.execute(select(func.count()).select_from(cohorts)).scalar()
    return not other_layers and not any_cohort


def create_demo(db: Database, fhir: Interactions, data_dir: Path, *, lab: tuple[str, int] | None = None) -> Demo:
    """``lab`` (host, port) of the built-in demo lab: each trainee sandbox sends its lab orders there."""
    baseline = load_case_baseline(db, fhir, "Demo: training cases", baseline_id=DEMO_BASELINE)
    db.analyze()  # the planner's statistics on an empty store pick slow plans for the cases' charts
    accounts: list[tuple[str, str, str]] = []
    with db.write() as conn:
        users = []
        for name, email, role in PEOPLE:
            password = secrets.token_urlsafe(12)
            users.append(create_user(conn, name, email, role, password=password))
            accounts.append((email, role, password))
        # Every built-in pack: the trainer console's progress matrix shows their tasks from the start.
        packs = list(Library.builtin().packs)
        cohort = create_cohort(conn, "Demo cohort", users[0].id, baseline_id=baseline, packs=packs, lab=lab)
        sandboxes = {user.email: add_member(conn, cohort.id, user.id, lab=lab).sandbox_id for user in users[1:]}
    saved_to = data_dir / "demo-accounts.txt"
    data_dir.mkdir(parents=True, exist_ok=True)
    saved_to.write_text("".join(f"{email}\t{role}\t{password}\n" for email, role, password in accounts))
    saved_to.chmod(0o600)
    return Demo(cohort.id, baseline, accounts, sandboxes, saved_to)
