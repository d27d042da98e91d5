"""Cohorts and the built-in demo lab together: while ``serve`` runs the lab, each sandbox of a cohort (the demo
cohort, or one a trainer creates) sends its lab orders to the lab, and the built-in HbA1c lab-interface task passes
on what the lab acknowledged; a sandbox with no destination for the order is told so by the task."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sandbox.accounts.cohorts import get_cohort
from sandbox.accounts.users import find_by_email
from sandbox.app import app_from_env
from sandbox.cli import _env_for_children
from sandbox.config import Settings
from sandbox.demo import create_demo
from sandbox.hl7v2 import destinations, log
from sandbox.hl7v2.delivery import deliver_due, translate
from sandbox.hl7v2.demo_lab import reachable_host
from sandbox.store.layers import resolve_view
from sandbox.store.repository import Actor
from tasks.cases import load_case_baseline
from tasks.engine import TaskEngine
from tasks.library import Library
from tests.web.console_data import csrf_token, make_user, sign_in, small_case_baseline

TASK = "orders-and-charting/hba1c-lab-interface"
HBA1C = {
    "resourceType": "ServiceRequest",
    "status": "active",
    "intent": "order",
    "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4", "display": "Hemoglobin A1c"}]},
    "subject": {"reference": "Patient/diabetes-uncontrolled"},
}


def test_each_trainee_sandbox_has_the_demo_lab_for_orders(app: FastAPI, tmp_path: Path) -> None:
    demo = create_demo(app.state.db, app.state.fhir, tmp_path, lab=("127.0.0.1", 2599))
    assert len(demo.sandboxes) == 2
    with app.state.db.read() as conn:
        for sandbox in demo.sandboxes.values():
            assert [d.to_json() for d in destinations.listing(conn, sandbox)] == [
                {
                    "id": "demo-lab",
                    "host": "127.0.0.1",
                    "port": 2599,
                    "message_types": ["ORM^O01"],
                    "receiving_application": "demo-lab",
                    "receiving_facility": "demo-lab",
                    "enabled": True,
                }
            ]
        assert destinations.listing(conn, "default") == []  # the open default sandbox is nobody's: untouched


def test_with_the_lab_off_the_demo_configures_no_destination(app: FastAPI, tmp_path: Path) -> None:
    demo = create_demo(app.state.db, app.state.fhir, tmp_path)
    with app.state.db.read() as conn:
        assert all(destinations.listing(conn, sandbox) == [] for sandbox in demo.sandboxes.values())


def test_a_demo_trainees_hba1c_order_reaches_the_built_in_lab_and_the_task_passes_on_its_ack(
    app: FastAPI, lab_port: int, tmp_path: Path
) -> None:
    db, fhir = app.state.db, app.state.fhir
    demo = create_demo(db, fhir, tmp_path, lab=("127.0.0.1", lab_port))
    sandbox, other = demo.sandboxes["ada@demo.invalid"], demo.sandboxes["ben@demo.invalid"]
    with db.read() as conn:
        ada = find_by_email(conn, "ada@demo.invalid")
    assert ada is not None
    engine = TaskEngine(db, fhir, Library.builtin())
    engine.start(sandbox, ada.id, TASK)
    graded = engine.check(sandbox, ada.id, TASK)
    assert {r.check_id: r.status for r in graded.results}["lab-received"] == "fail"

    with db.write() as conn:
        fhir.create(conn, resolve_view(conn, sandbox), HBA1C, Actor(f"user:{ada.id}", "web-ui"))
    while translate(db, fhir, batch=5000):
        pass
    assert deliver_due(db, "test") == 1

    with db.read() as conn:
        [sent] = log.listing(conn, sandbox, direction="outbound")
        assert log.listing(conn, other, direction="outbound") == []  # the other trainee's sandbox sent nothing
    assert (sent.message_type, sent.peer, sent.status, sent.ack_code) == ("ORM^O01", "demo-lab", "delivered", "AA")
    assert sent.ack is not None and "Received by the demo lab" in sent.ack
    graded = engine.check(sandbox, ada.id, TASK)
    statuses = {r.check_id: r.status for r in graded.results}
    assert statuses["lab-received"] == "pass" and statuses["sent-once"] == "pass"
    assert statuses["ordered"] == "pass"


# ---- cohorts a trainer creates ----------------------------------------------------------------------------

DEMO_LAB = ("127.0.0.1", 2599)


def with_demo_lab(app: FastAPI, lab: tuple[str, int] | None) -> None:
    """The app as ``serve`` makes it when it runs the demo lab at ``lab`` (None: no demo lab)."""
    app.state.settings = replace(app.state.settings, demo_lab=lab)


def lab_destinations(app: FastAPI, sandbox: str) -> list[tuple[str, str, int, tuple[str, ...], bool]]:
    with app.state.db.read() as conn:
        return [(d.id, d.host, d.port, d.message_types, d.enabled) for d in destinations.listing(conn, sandbox)]


def trainer_cohort(client: TestClient, admin_headers: dict[str, str], baseline: str | None = None) -> dict[str, Any]:
    """A private cohort with one trainee (Ann), made by a trainer through the admin API."""
    body = {"name": "Night", "trainer": "tess@example.org", "members": [{"name": "Ann", "email": "ann@example.org"}]}
    created = client.post(
        "/admin/cohorts", json=body | ({"baseline": baseline} if baseline else {}), headers=admin_headers
    )
    assert created.status_code == 201, created.text
    return created.json()


def test_the_sandboxes_of_cohorts_a_trainer_creates_send_lab_orders_to_the_demo_lab_as_the_demo_cohorts_do(
    app: FastAPI, client: TestClient, admin_headers: dict[str, str], tmp_path: Path
) -> None:
    with_demo_lab(app, DEMO_LAB)
    demo = create_demo(app.state.db, app.state.fhir, tmp_path, lab=DEMO_LAB)
    expected = lab_destinations(app, demo.sandboxes["ada@demo.invalid"])
    assert expected == [("demo-lab", "127.0.0.1", 2599, ("ORM^O01",), True)]
    make_user(app.state.db, "Tess Trainer", "tess@example.org", "trainer")

    # The admin API: a private cohort with a roster, a member added later, and a cohort sharing one sandbox.
    private = trainer_cohort(client, admin_headers)
    added = client.post(
        f"/admin/cohorts/{private['id']}/members",
        json={"name": "Bob", "email": "bob@example.org", "role": "trainee"},
        headers=admin_headers,
    )
    assert added.status_code == 201, added.text
    shared = client.post(
        "/admin/cohorts",
        json={"name": "Day", "trainer": "tess@example.org", "sandbox_mode": "shared"},
        headers=admin_headers,
    ).json()
    # The trainer console: a cohort from a baseline, a pack and a roster file.
    baseline = small_case_baseline(app)
    sign_in(client, "tess@example.org")
    console = client.post(
        "/trainer/cohorts",
        data={"name": "Ward", "baseline": baseline, "pack": "orders-and-charting", "csrf_token": csrf_token(client)},
        files={"roster": ("roster.csv", b"name,email,role\nCara,cara@example.org,trainee\n", "text/csv")},
        follow_redirects=False,
    )
    assert console.status_code == 303, console.text
    ward_id = console.headers["location"].split("/")[3].split("?")[0]
    imported = client.post(
        f"/trainer/cohorts/{ward_id}/roster",
        data={"roster_text": "Dan,dan@example.org,trainee", "csrf_token": csrf_token(client)},
        follow_redirects=False,
    )
    assert imported.status_code == 303, imported.text
    with app.state.db.read() as conn:
        ward = get_cohort(conn, ward_id)

    made = [m["sandbox"] for m in private["members"] + added.json()["added"]]
    made += [shared["shared_sandbox"]] + [m.sandbox_id for m in ward.members]
    assert len(set(made)) == 5
    for sandbox in made:
        assert lab_destinations(app, sandbox) == expected, sandbox
    assert lab_destinations(app, "default") == []  # the open default sandbox is nobody's: untouched


def test_an_hba1c_order_in_a_trainer_created_cohort_reaches_the_demo_lab_and_the_task_passes(
    app: FastAPI, client: TestClient, admin_headers: dict[str, str], lab_port: int
) -> None:
    db, fhir = app.state.db, app.state.fhir
    with_demo_lab(app, ("127.0.0.1", lab_port))
    baseline = load_case_baseline(db, fhir, "Training cases")
    make_user(db, "Tess Trainer", "tess@example.org", "trainer")
    (ann,) = trainer_cohort(client, admin_headers, baseline)["members"]
    statuses = order_hba1c(app, ann["sandbox"], ann["id"])
    assert {check: status for check, (status, _message) in statuses.items()} == {
        "ordered": "pass",
        "indication": "fail",  # the order names no reason: not what this test is about
        "lab-received": "pass",
        "sent-once": "pass",
    }


def test_without_a_demo_lab_a_new_cohort_has_no_destination_and_the_task_says_what_is_missing(
    app: FastAPI, client: TestClient, admin_headers: dict[str, str]
) -> None:
    db, fhir = app.state.db, app.state.fhir
    with_demo_lab(app, None)
    baseline = load_case_baseline(db, fhir, "Training cases")
    make_user(db, "Tess Trainer", "tess@example.org", "trainer")
    (ann,) = trainer_cohort(client, admin_headers, baseline)["members"]
    assert lab_destinations(app, ann["sandbox"]) == []
    status, message = order_hba1c(app, ann["sandbox"], ann["id"])["lab-received"]
    assert status == "fail"
    assert message.endswith(
        "; this sandbox has no HL7 v2 destination that takes ORM^O01, so nothing is sent: your trainer adds one with"
        f" PUT /sandboxes/{ann['sandbox']}/hl7v2/destinations/{{name}}"
    )


def order_hba1c(app: FastAPI, sandbox: str, trainee_id: str) -> dict[str, tuple[str, str]]:
    """The trainee starts the HbA1c task, orders the HbA1c, the outbox worker delivers what it can: each check's
    (status, message)."""
    db, fhir = app.state.db, app.state.fhir
    engine = TaskEngine(db, fhir, Library.builtin())
    engine.start(sandbox, trainee_id, TASK)
    with db.write() as conn:
        fhir.create(conn, resolve_view(conn, sandbox), HBA1C, Actor(f"user:{trainee_id}", "web-ui"))
    while translate(db, fhir, batch=5000):
        pass
    deliver_due(db, "test")
    return {r.check_id: (r.status, r.message) for r in engine.check(sandbox, trainee_id, TASK).results}


@pytest.mark.parametrize(("lab_port", "expected"), [("2599", ("127.0.0.1", 2599)), ("off", None)])
def test_each_web_process_of_serve_with_workers_knows_the_demo_lab_its_supervisor_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, lab_port: str, expected: tuple[str, int] | None
) -> None:
    """The supervisor runs the lab; its children make the cohorts, so they get its address from the
    environment the supervisor sets for them (a wildcard bind is reached at 127.0.0.1)."""
    lab = (reachable_host("0.0.0.0"), int(lab_port)) if lab_port != "off" else None
    store = f"sqlite:///{tmp_path / 'store.db'}"
    settings = Settings(database_url=store, host="0.0.0.0", admin_token="t", data_dir=tmp_path, demo_lab=lab)
    for name, value in _env_for_children(settings, "info").items():
        monkeypatch.setenv(name, value)
    assert os.environ["EHR_SANDBOX_DEMO_LAB_PORT"] == lab_port
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        child = app_from_env()  # sets up the process's logging as a child's start does: put back after
        assert child.state.settings.demo_lab == expected
        child.state.db.dispose()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
