"""Server time of the trainee EHR's pages over a large baseline.

``python -m bench.web_pages [--backend sqlite|postgresql] [--patients 1000] [--rounds 20]`` prints one JSON line.

The store: a baseline holding ``--patients`` synthetic patients (``synthetic_data.generate_population``,
loaded through the transaction processor as ``ehr-sandbox load`` does; the first patients are the training
cases), a cohort on it with one trainee, who starts the vitals task.  A signed-in client then asks for
every page of the chart (assignments, patient search, the patient list and its next page, the chart's own
URL (which fires CDS Hooks patient-view), each chart section, entry forms) for random patients, ``--rounds``
times each, and saves the vitals form (a write, then the task re-check).

Server time is measured inside the server: an ASGI wrapper times each request from its arrival to the
last byte of its response, so the test client's own cost is not counted.  Figures: p50 and p95 per page
in milliseconds [issue 6: p95 under 150 ms with 1,000 patients], the load time, and the machine.  Beside
the wall time, the process's CPU time over each request (the client waits meanwhile, so this is nearly
all the server's): on a shared machine wall times grow with the load average, CPU times much less.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import platform
import random
import re
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from bench.stores import fresh_database
from sandbox.accounts.cohorts import add_member, create_cohort
from sandbox.accounts.users import create_user
from sandbox.app import create_app
from sandbox.config import Settings
from sandbox.fhir.context import FhirContext
from sandbox.fhir.transaction import BundleProcessor
from sandbox.store.database import Database
from sandbox.store.repository import Actor
from sandbox.store.sandboxes import baseline_view_for_loading, create_baseline
from synthetic_data import generate_population
from web.csrf import LOGIN_COOKIE

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/ehr_bench_web"
PASSWORD = "bench trainee password"
TASK = "core-clinical/vitals-current-encounter"
CASE = "chest-pain-cardiology"
SECTIONS = ("summary", "problems", "medications", "allergies", "vitals", "results", "notes", "orders",
            "referrals", "encounters", "immunizations")  # fmt: skip
FORMS = ("vitals", "referral", "med-order", "code-status")

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class ServerTimer:
    """ASGI middleware: each HTTP request's time inside the app, under the label the bench set for it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.label = "other"
        self.times: dict[str, list[float]] = defaultdict(list)
        self.cpu: dict[str, list[float]] = defaultdict(list)

    async def __call__(
        self, scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]
    ) -> None:  # noqa: E501
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, cpu = time.perf_counter(), time.process_time()
        await self.app(scope, receive, send)
        self.times[self.label].append((time.perf_counter() - started) * 1000)
        self.cpu[self.label].append((time.process_time() - cpu) * 1000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.web_pages", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--database-url", default=None, help=f"PostgreSQL URL (default {PG_DEFAULT}, recreated)")
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20, help="requests per page")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.patients < 3:
        parser.error("--patients must be at least 3 (the training cases come first)")
    if args.backend == "postgresql" and args.database_url is None:
        args.database_url = PG_DEFAULT
    with tempfile.TemporaryDirectory() as tmp:
        db = fresh_database(args.backend, Path(tmp), args.database_url or PG_DEFAULT)
        try:
            print(json.dumps(run(db, Path(tmp), args.patients, args.rounds, args.seed) | {"backend": args.backend}))
        finally:
            db.dispose()
    return 0


def run(db: Database, tmp: Path, patients: int, rounds: int, seed: int) -> dict[str, Any]:
    settings = Settings(database_url=db.url, admin_token="bench-admin", data_dir=tmp)
    app = create_app(settings, db=db)
    started = time.perf_counter()
    resources = _load_baseline(db, app.state.fhir, patients, seed)
    load_seconds = time.perf_counter() - started
    with db.write() as conn:
        trainer = create_user(conn, "Bench Trainer", "trainer@bench.invalid", "trainer", password=PASSWORD)
        trainee = create_user(conn, "Bench Trainee", "trainee@bench.invalid", "trainee", password=PASSWORD)
        cohort = create_cohort(conn, "Bench cohort", trainer.id, baseline_id="bench-baseline")
        sandbox = add_member(conn, cohort.id, trainee.id).sandbox_id
    timer = ServerTimer(app)
    rng = random.Random(seed)
    with TestClient(timer, base_url="http://testserver") as client:  # type: ignore[arg-type]
        timer.label = "setup"  # signing in hashes a password: not a page
        token = _sign_in(client)
        timer.label = "start-task"
        client.post("/assignments/start", data={"csrf_token": token, "sandbox": sandbox, "task": TASK})
        timer.label = "setup"
        ids = _patient_ids(client, sandbox)
        for _ in range(rounds):
            patient = rng.choice(ids)
            _get(client, timer, "assignments", "/assignments")
            _get(client, timer, "patient-search", f"/chart/{sandbox}/patients", q=rng.choice("abcdefghjklmprstw"))
            timer.label = "patient-list"
            listed = client.get(f"/chart/{sandbox}/patients")
            found = re.search(r'<a href="([^"]+)" rel="next"', listed.text)
            assert found is not None, "the patient list has no next page"
            _get(client, timer, "patient-list-next", html.unescape(found.group(1)))
            # The chart's own URL: opening it fires CDS Hooks patient-view, which the sections do not.
            _get(client, timer, "chart-open", f"/chart/{sandbox}/patients/{patient}", task=TASK)
            for section in SECTIONS:
                _get(client, timer, f"chart-{section}", f"/chart/{sandbox}/patients/{patient}/{section}", task=TASK)
            for form in FORMS:
                _get(client, timer, f"form-{form}", f"/chart/{sandbox}/patients/{patient}/forms/{form}", task=TASK)
            _get(client, timer, "task-panel", f"/chart/{sandbox}/task/panel", task=TASK)
            timer.label = "save-vitals"
            saved = client.post(
                f"/chart/{sandbox}/patients/{CASE}/forms/vitals",
                data={"csrf_token": token, "task": TASK, "heart_rate": str(rng.randint(60, 100)), "temp_unit": "Cel"},
                follow_redirects=False,
            )
            assert saved.status_code == 303, saved.text[:300]
    pages = {
        label: _summary(times) | _summary(timer.cpu[label], "cpu_")
        for label, times in sorted(timer.times.items())
        if label != "setup"
    }
    worst = max(pages.items(), key=lambda item: item[1]["p95_ms"])
    worst_cpu = max(pages.items(), key=lambda item: item[1]["cpu_p95_ms"])
    return {
        "bench": "web_pages",
        "patients": patients,
        "resources": resources,
        "load_seconds": round(load_seconds, 1),
        "rounds": rounds,
        "pages": pages,
        "worst_p95": {"page": worst[0], "ms": worst[1]["p95_ms"]},
        "worst_cpu_p95": {"page": worst_cpu[0], "ms": worst_cpu[1]["cpu_p95_ms"]},
        "target_p95_ms": 150,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg": os.getloadavg()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _load_baseline(db: Database, fhir: Any, patients: int, seed: int) -> int:
    with db.write() as conn:
        create_baseline(conn, "Bench baseline", baseline_id="bench-baseline")
    with db.read() as conn:
        view = baseline_view_for_loading(conn, "bench-baseline")
    ctx = FhirContext(db, fhir, view, Actor("bench-loader", "loader"), "http://bench/fhir")
    count = 0
    for bundle in generate_population(patients=patients, seed=seed):
        BundleProcessor(ctx, prefer="minimal").process(bundle)
        count += len(bundle.get("entry", []))
    db.analyze()
    return count


def _sign_in(client: TestClient) -> str:
    client.get("/login")
    data = {"email": "trainee@bench.invalid", "password": PASSWORD, "csrf_token": client.cookies[LOGIN_COOKIE]}
    client.post("/login", data=data)
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/assignments").text)
    assert found is not None, "sign-in failed"
    return found.group(1)


def _patient_ids(client: TestClient, sandbox: str) -> list[str]:
    ids: set[str] = set()
    for letter in "abcdefghijklmnopqrstuvwxyz":
        page = client.get(f"/chart/{sandbox}/patients", params={"q": letter}).text
        ids.update(re.findall(rf'href="/chart/{re.escape(sandbox)}/patients/([^"?/]+)', page))
    return sorted(ids)


def _get(client: TestClient, timer: ServerTimer, label: str, path: str, **params: str) -> None:
    timer.label = label
    response = client.get(path, params=params)
    assert response.status_code == 200, f"{label}: {response.status_code} {response.text[:300]}"


def _summary(times: list[float], prefix: str = "") -> dict[str, float]:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    found = {f"{prefix}p50_ms": round(statistics.median(ordered), 1), f"{prefix}p95_ms": round(p95, 1)}
    return found if prefix else {"n": len(ordered), **found}


if __name__ == "__main__":
    raise SystemExit(main())
