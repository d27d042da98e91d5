"""Checking tasks: one task's checks, and a whole cohort's.

``python -m bench.task_checks [--backend sqlite|postgresql] [--trainees 100] [--tasks 20]`` prints one JSON line.

The store: a baseline with the training cases (``tasks.cases``), one sandbox per
trainee on it.  The built-in tasks are repeated under several pack ids until
there are ``--tasks`` of them, and each trainee writes the reference solution of
every one (``tests/tasks/solutions``), as a competent trainee would; writing is
not what is measured.

Measured (issue 5's targets in brackets):
- one task checked again and again in one sandbox (``TaskEngine.check``, which
  runs the searches, FHIRPath and scoring and stores the results): p50, p95
  [p95 under 20 ms], and per built-in task;
- the whole cohort, ``--trainees`` x ``--tasks`` attempts, re-checked sandbox by
  sandbox as the outbox consumer does (``TaskEngine.recheck_sandbox``) [under 5 s].
Wall and CPU time, and the load average, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from sqlalchemy import text

from bench.stores import fresh_database
from sandbox.fhir.interactions import Interactions
from sandbox.fhir.search_params import registry
from sandbox.hl7v2 import destinations
from sandbox.store.database import Database
from sandbox.store.repository import Repository
from sandbox.store.sandboxes import create_sandbox
from tasks.cases import load_case_baseline
from tasks.engine import TaskEngine
from tasks.library import Library
from tasks.model import Pack
from tests.sandbox.hl7v2.test_outbound import Destination
from tests.tasks.reference_writes import deliver_outbound, load_solutions, write_as_trainee

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/ehr_bench_tasks"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.task_checks", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--database-url", default=None, help=f"PostgreSQL URL (default {PG_DEFAULT}, recreated)")
    parser.add_argument("--trainees", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=200, help="checks of one task, for its percentiles")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        db = fresh_database(args.backend, Path(tmp), args.database_url or PG_DEFAULT)
        try:
            print(json.dumps(run(db, args.trainees, args.tasks, args.repeats) | {"backend": args.backend}))
        finally:
            db.dispose()
    return 0


def _library(count: int) -> Library:
    """The built-in tasks, repeated under pack ids ``core-clinical-r2``, ... until there are ``count``."""
    base = list(Library.builtin().packs.values())
    packs: list[Pack] = []
    round_ = 0
    while sum(len(p.tasks) for p in packs) < count:
        round_ += 1
        for pack in base:
            room = count - sum(len(p.tasks) for p in packs)
            if room <= 0:
                break
            pack_id = pack.id if round_ == 1 else f"{pack.id}-r{round_}"
            tasks = tuple(replace(t, pack_id=pack_id) for t in pack.tasks[:room])
            packs.append(replace(pack, id=pack_id, tasks=tasks))
    return Library(packs)


def run(db: Database, trainees: int, task_count: int, repeats: int) -> dict[str, object]:
    reg = registry()
    fhir = Interactions(Repository(reg), reg)
    library = _library(task_count)
    engine = TaskEngine(db, fhir, library)
    solutions = {s.task.split("/")[1]: s for s in load_solutions()}
    load_started = time.perf_counter()
    baseline = load_case_baseline(db, fhir, "bench cases", baseline_id="bench-cases")
    if not db.is_sqlite:
        with db.engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    refs = [f"{p.id}/{t.id}" for p, t in library.tasks()]
    sandboxes = []
    lab = Destination()  # the lab's MLLP interface on a socket, for the tasks whose checks read the HL7 v2 log
    for n in range(trainees):
        with db.write() as conn:
            sandbox = create_sandbox(conn, f"trainee {n}", baseline, sandbox_id=f"bench-{n}").id
            destinations.put(conn, sandbox, "lab", {"host": "127.0.0.1", "port": lab.port})
        sandboxes.append(sandbox)
        for ref in refs:
            attempt = engine.start(sandbox, f"t{n}", ref)
            write_as_trainee(db, fhir, sandbox, f"t{n}", attempt.context, solutions[ref.split("/")[1]].reference)
        deliver_outbound(db, fhir)
    lab.close()
    setup_seconds = time.perf_counter() - load_started

    # One task, checked again and again (the first few warm caches and the pool).
    per_task: dict[str, dict[str, float]] = {}
    all_ms: list[float] = []
    cpu_ms: list[float] = []  # CPU time of this process: what the check costs when the machine is not shared
    timed = [(p, t) for p, t in library.tasks() if not re.search(r"-r\d+$", p.id)]  # each task once
    for pack, task in timed:
        ref = f"{pack.id}/{task.id}"
        for _ in range(5):
            engine.check(sandboxes[0], "t0", ref)
        times = []
        for _ in range(max(repeats // len(timed), 10)):
            started, cpu = time.perf_counter(), time.process_time()
            graded = engine.check(sandboxes[0], "t0", ref)
            times.append((time.perf_counter() - started) * 1000)
            cpu_ms.append((time.process_time() - cpu) * 1000)
            assert graded.passed, (ref, [r.message for r in graded.results if r.status != "pass"])
        per_task[task.id] = {"p50_ms": round(statistics.median(times), 2), "p95_ms": round(_p95(times), 2)}
        all_ms.extend(times)

    # The cohort: every sandbox's active attempts re-checked, as after a write in each.
    load_before = os.getloadavg()[0]
    cpu_before = time.process_time()
    started = time.perf_counter()
    checked = 0
    for sandbox in sandboxes:
        with db.write() as conn:
            checked += len(engine.recheck_sandbox(conn, sandbox))
    cohort_seconds = time.perf_counter() - started
    cohort_cpu = time.process_time() - cpu_before
    return {
        "bench": "task_checks",
        "trainees": trainees,
        "tasks_per_trainee": len(refs),
        "attempts_checked": checked,
        "check_one_task_p50_ms": round(statistics.median(all_ms), 2),
        "check_one_task_p95_ms": round(_p95(all_ms), 2),
        "check_one_task_cpu_p50_ms": round(statistics.median(cpu_ms), 2),
        "check_one_task_cpu_p95_ms": round(_p95(cpu_ms), 2),
        "per_task": per_task,
        "cohort_seconds": round(cohort_seconds, 2),
        "cohort_cpu_seconds": round(cohort_cpu, 2),
        "cohort_ms_per_attempt": round(cohort_seconds * 1000 / max(checked, 1), 2),
        "setup_seconds": round(setup_seconds, 1),
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


if __name__ == "__main__":
    sys.exit(main())
