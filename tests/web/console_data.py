"""Data for the console tests: a small baseline holding the vitals task's patient, people, a cohort, and a
trainee's attempt at the vitals task (written through the task engine and the FHIR interactions, as a
trainee's chart entries would be)."""

from __future__ import annotations

import re

from fastapi import FastAPI
from fastapi.testclient import TestClient

from sandbox.accounts.users import User, create_user
from sandbox.store.database import Database
from sandbox.store.repository import Actor
from sandbox.store.sandboxes import baseline_view_for_loading, create_baseline
from tasks.engine import Attempt
from tests.tasks.reference_writes import load_solutions, write_as_trainee
from web.task_engine import task_engine

PASSWORD = "correct horse battery"
CASE = "chest-pain-cardiology"
VITALS = "core-clinical/vitals-current-encounter"
VITALS_SOLUTION = next(s for s in load_solutions() if s.task == VITALS)
LOADER = Actor("system:test-loader", "loader")


def small_case_baseline(app: FastAPI, baseline_id: str = "chest-pain") -> str:
    """A baseline with the vitals task's patient and their in-progress encounter (a few rows, not the whole
    synthetic population: the console tests need the case, not the crowd)."""
    db: Database = app.state.db
    fhir = app.state.fhir
    with db.write() as conn:
        create_baseline(conn, "Chest pain case", baseline_id=baseline_id)
        view = baseline_view_for_loading(conn, baseline_id)
        patient = {"resourceType": "Patient", "id": CASE, "name": [{"family": "Okafor", "given": ["Chidi"]}]}
        fhir.update(conn, view, "Patient", CASE, patient, LOADER)
        encounter = {
            "resourceType": "Encounter",
            "id": "today",
            "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{CASE}"},
            "period": {"start": "2026-01-01T15:00:00Z"},
        }
        fhir.update(conn, view, "Encounter", "today", encounter, LOADER)
    return baseline_id


def make_user(db: Database, name: str, email: str, role: str) -> User:
    with db.write() as conn:
        return create_user(conn, name, email, role, password=PASSWORD)


def sign_in(client: TestClient, email: str) -> None:
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    answer = client.post(
        "/login", data={"email": email, "password": PASSWORD, "csrf_token": token.group(1)}, follow_redirects=False
    )
    assert answer.status_code == 303, answer.text


def csrf_token(client: TestClient, path: str = "/") -> str:
    """The session's CSRF token, as a signed-in page carries it."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text)
    assert found is not None
    return found.group(1)


def do_vitals(app: FastAPI, sandbox_id: str, trainee_id: str, cohort_id: str, *, submit: bool = True) -> Attempt:
    """The trainee starts the vitals task, charts the reference solution, and (optionally) submits."""
    engine = task_engine(app)
    attempt = engine.start(sandbox_id, trainee_id, VITALS, cohort_id=cohort_id)
    write_as_trainee(app.state.db, app.state.fhir, sandbox_id, trainee_id, attempt.context, VITALS_SOLUTION.reference)
    return engine.submit(sandbox_id, trainee_id, VITALS) if submit else engine.check(sandbox_id, trainee_id, VITALS)
