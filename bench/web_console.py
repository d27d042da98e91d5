"""The trainer and vendor consoles: server time of their pages, and the cost of the FHIR request log.

``python -m bench.web_console [--backend sqlite|postgresql] [--trainees 100] [--repeats 60]`` prints one JSON line.

The store: a cohort of ``--trainees`` trainees on an empty baseline with every built-in pack assigned (the
JSON line's ``tasks``), and for each trainee an attempt row at most tasks (passed, failed, in progress; about
one in ten not started; the JSON line's ``attempts``), with one stored result per check, as the task engine
leaves them.  Attempt rows are inserted directly: the matrix reads attempts, not the FHIR data that produced
them, and grading them is ``bench.task_checks``'s business.

Measured, as server time in-process (the ASGI app through Starlette's TestClient, signed in as the trainer;
no network; wall and CPU time, the latter being what a request costs on cores it does not share): p50 and p95
of the progress matrix [target p95 < 150 ms], the cohort page, one attempt's
drill-down, the CSV export, and the vendor home with a full request log (500 rows).  The request log's hot-path
cost (one ``record`` call, in microseconds) and the time to write a queue of 1,000 entries for one sandbox
(of which the newest 500, the per-sandbox cap, are written).  Wall and CPU
time and the load average, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import statistics
import tempfile
import time
from pathlib import Path

import orjson
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import insert, text

from bench.stores import fresh_database
from sandbox.accounts import passwords
from sandbox.accounts.cohorts import create_cohort
from sandbox.accounts.roster import RosterLine
from sandbox.accounts.users import create_user
from sandbox.app import create_app
from sandbox.config import Settings
from sandbox.fhir.request_log import RequestLog
from sandbox.fhir.values import instant_now
from sandbox.store.database import Database
from sandbox.store.sandboxes import create_baseline
from sandbox.store.schema import task_attempts
from tasks.checks import CheckResult
from tasks.library import Library

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/ehr_bench_console"
PASSWORD = "bench password"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.web_console", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--database-url", default=None, help=f"PostgreSQL URL (default {PG_DEFAULT}, recreated)")
    parser.add_argument("--trainees", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=60)
    args = parser.parse_args(argv)
    # Sign-in is not what is measured: cheap password hashing.
    passwords._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    with tempfile.TemporaryDirectory() as tmp:
        db = fresh_database(args.backend, Path(tmp), args.database_url or PG_DEFAULT)
        try:
            print(json.dumps(run(db, Path(tmp), args.trainees, args.repeats) | {"backend": args.backend}))
        finally:
            db.dispose()
    return 0


def _attempt_rows(library: Library, cohort_id: str, members: list[tuple[str, str]]) -> list[dict[str, object]]:
    """Per trainee and task: nothing (1 in 10), in progress, passed or failed, with one result per check."""
    rng = random.Random(7)
    now = instant_now()[1]
    rows = []
    for user_id, sandbox_id in members:
        for pack, task in library.tasks():
            kind = rng.choices(["none", "active", "passed", "failed"], [1, 2, 5, 2])[0]
            if kind == "none":
                continue
            results = [
                CheckResult(
                    c.id,
                    c.title,
                    "fail" if kind == "failed" and i == 0 else "pass",
                    0.0 if kind == "failed" and i == 0 else c.points,
                    c.points,
                    "Found 1 matching resource written by you since the task started",
                    c.feedback,
                    c.critical,
                ).to_json()
                for i, c in enumerate(task.checks)
            ]
            score = sum(r["points"] for r in results)
            rows.append(
                {
                    "sandbox_id": sandbox_id,
                    "trainee_id": user_id,
                    "pack_id": pack.id,
                    "task_id": task.id,
                    "attempt": 1,
                    "cohort_id": cohort_id,
                    "status": "active" if kind == "active" else "submitted",
                    "started_at": now,
                    "ended_at": None if kind == "active" else now,
                    "context": orjson.dumps({"patient": f"Patient/{task.case}"}).decode(),
                    "hints_used": 0,
                    "score": score,
                    "max_score": task.max_points,
                    "passed": kind == "passed",
                    "results": orjson.dumps(results).decode(),
                    "checked_at": now,
                }
            )
    return rows


def _timed(client: TestClient, path: str, repeats: int) -> dict[str, float]:
    for _ in range(3):  # warm the pool, the templates, the caches
        assert client.get(path).status_code == 200, path
    times, cpu = [], []
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        answer = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - cpu_started) * 1000)
        assert answer.status_code == 200, path
    # CPU time of this process (server and in-process client): what a request costs when the cores are not shared.
    return {
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(_p95(times), 1),
        "cpu_p50_ms": round(statistics.median(cpu), 1),
        "cpu_p95_ms": round(_p95(cpu), 1),
    }


def run(db: Database, tmp: Path, trainees: int, repeats: int) -> dict[str, object]:
    library = Library.builtin()
    settings = Settings(database_url=db.url, admin_token="bench-admin", data_dir=tmp)
    app = create_app(settings, db=db)
    with db.write() as conn:
        baseline = create_baseline(conn, "bench baseline").id
        trainer = create_user(conn, "Bench Trainer", "trainer@bench.invalid", "trainer", password=PASSWORD)
        vendor = create_user(conn, "Bench Vendor", "vendor@bench.invalid", "vendor", password=PASSWORD)
        roster = [RosterLine(f"Trainee {n:03d}", f"t{n:03d}@bench.invalid") for n in range(trainees)]
        cohort = create_cohort(
            conn, "Bench cohort", trainer.id, baseline_id=baseline, roster=roster, packs=list(library.packs)
        )
        members = [(m.user.id, m.sandbox_id) for m in cohort.members]
        conn.execute(insert(task_attempts), _attempt_rows(library, cohort.id, members))
        vendors = create_cohort(
            conn, "Bench vendors", trainer.id, roster=[RosterLine("Bench Vendor", vendor.email, "vendor")]
        )
        vendor_sandbox = vendors.members[0].sandbox_id
    if not db.is_sqlite:
        with db.engine.begin() as conn:
            conn.execute(text("ANALYZE"))

    # The request log: the hot path's cost, one batch's write, and a full log for the vendor page.
    log: RequestLog = app.state.request_log
    calls = 100_000
    started = time.perf_counter()
    for n in range(calls):
        log.record(vendor_sandbox, "GET", f"/sandboxes/{vendor_sandbox}/fhir/Patient/{n}", 200, time.time(), 1.0)
    record_us = (time.perf_counter() - started) / calls * 1e6
    log._pending.clear()
    for n in range(1000):
        log.record(vendor_sandbox, "GET", f"/sandboxes/{vendor_sandbox}/fhir/Patient/{n}", 200, time.time(), 1.0)
    started = time.perf_counter()
    written = log.flush()
    flush_ms = (time.perf_counter() - started) * 1000

    wall, cpu = time.perf_counter(), time.process_time()
    figures: dict[str, object] = {}
    with TestClient(app, base_url="http://bench") as client:
        _sign_in(client, trainer.email)
        user_id, _sandbox = members[0]
        found = re.search(
            r'href="(/trainer/cohorts/[^"]+/tasks/[^"]+)"', client.get(f"/trainer/cohorts/{cohort.id}/progress").text
        )
        assert found is not None
        figures["progress_matrix"] = _timed(client, f"/trainer/cohorts/{cohort.id}/progress", repeats)
        figures["cohort_page"] = _timed(client, f"/trainer/cohorts/{cohort.id}", repeats)
        figures["attempt_page"] = _timed(client, found.group(1), repeats)
        figures["progress_csv"] = _timed(client, f"/trainer/cohorts/{cohort.id}/progress.csv", repeats)
        client.cookies.clear()
        _sign_in(client, vendor.email)
        figures["vendor_home"] = _timed(client, "/vendor", repeats)
    return {
        "bench": "web_console",
        "trainees": trainees,
        "tasks": len(library.tasks()),
        "attempts": sum(1 for _ in _attempt_rows(library, cohort.id, members)),
        "pages": figures,
        "request_log": {
            "record_us": round(record_us, 3),
            "flush_ms": round(flush_ms, 1),
            "queued": 1000,
            "written": written,
        },
        "wall_s": round(time.perf_counter() - wall, 2),
        "cpu_s": round(time.process_time() - cpu, 2),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
    }


def _sign_in(client: TestClient, email: str) -> None:
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert token is not None
    answer = client.post(
        "/login", data={"email": email, "password": PASSWORD, "csrf_token": token.group(1)}, follow_redirects=False
    )
    assert answer.status_code == 303


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


if __name__ == "__main__":
    raise SystemExit(main())
