"""Bulk $export over a large baseline: system, Patient and Group level, in resources per second.

``python -m bench.bulk_export [--backend sqlite|postgresql] [--patients 1000]`` prints one JSON line.

The store: ``--patients`` charts (about 100 resources each, from ``bench.population``) bulk-loaded
into a baseline as ``bench.sandbox_reset`` loads it, and a sandbox on that baseline with a few
writes of its own, so every export reads through the layered View (overlay + baseline).  Each
level runs as the background worker runs it (``jobs.claim`` then ``export.run``, NDJSON parts stored
in the database); then its files are read back part by part as the download route streams them.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from bench.population import LOINC
from bench.sandbox_reset import _bulk_load, _fresh_database, _ids, _machine
from sandbox.app import ensure_default_sandbox
from sandbox.bulk import export, jobs
from sandbox.fhir.interactions import Interactions
from sandbox.fhir.search_params import registry
from sandbox.store import sandboxes
from sandbox.store.database import Database
from sandbox.store.layers import resolve_view
from sandbox.store.repository import Actor, Repository

VENDOR = Actor("client:bench-vendor", "fhir-api")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.workdir, args.reuse = None, False
    db = Database(_fresh_database(args))
    db.create_schema()
    ensure_default_sandbox(db)
    reg = registry()
    repo = Repository(reg)
    fhir = Interactions(repo, reg)
    with db.write() as conn:
        baseline = sandboxes.create_baseline(conn, "bench export baseline").id
    started = time.perf_counter()
    loaded = _bulk_load(db, reg, (baseline,), args.patients, args.seed)
    load_s = time.perf_counter() - started
    db.analyze()
    with db.write() as conn:
        sandbox = sandboxes.create_sandbox(conn, "bench vendor", baseline).id
        view = resolve_view(conn, sandbox)
        patients = _ids(conn, baseline, "Patient")
        for pid in patients[:50]:  # the sandbox's own writes: new observations in the overlay
            fhir.create(conn, view, _observation(pid), VENDOR)
        members = [{"entity": {"reference": f"Patient/{pid}"}} for pid in patients[: len(patients) // 2]]
        group = {"resourceType": "Group", "id": "cohort", "type": "person", "actual": True, "member": members}
        fhir.update(conn, view, "Group", "cohort", group, VENDOR)

    levels: dict[str, Any] = {}
    for level, group_id in (("system", None), ("patient", None), ("group", "cohort")):
        levels[level] = _run(db, repo, sandbox, level, group_id)
    report = {
        "bench": "bulk_export",
        "backend": args.backend,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average": [round(x, 1) for x in os.getloadavg()],
        "machine": _machine(),
        "baseline": {"patients": args.patients, "resources": loaded, "load_s": round(load_s, 1)},
        "export": levels,
    }
    print(json.dumps(report), flush=True)
    db.dispose()
    return 0


def _run(db: Database, repo: Repository, sandbox: str, level: str, group_id: str | None) -> dict[str, Any]:
    with db.write() as conn:
        job_id = jobs.create(
            conn,
            sandbox,
            level=level,
            group_id=group_id,
            patients=None,
            types=None,
            since=None,
            output_format="application/fhir+ndjson",
            request_url=f"bench:{level}",
            actor=VENDOR.id,
            requires_token=True,
        )
    started = time.perf_counter()
    job = jobs.claim(db, "bench-worker")
    assert job is not None and job.id == job_id
    export.run(db, repo, job, "bench-worker")
    export_s = time.perf_counter() - started
    with db.read() as conn:
        done = jobs.get(conn, sandbox, job_id)
        outputs = jobs.files(conn, sandbox, job_id)
    assert done is not None and done.status == "completed", done
    exported = sum(f.count for f in outputs if f.resource_type != "OperationOutcome")
    started = time.perf_counter()
    size = sum(len(part) for f in outputs for part in jobs.file_parts(db, sandbox, job_id, f.file_no))
    read_s = time.perf_counter() - started
    return {
        "resources": exported,
        "files": len(outputs),
        "export_s": round(export_s, 2),
        "export_resources_per_s": round(exported / export_s) if export_s else None,
        "ndjson_mb": round(size / 1e6, 1),
        "download_mb_per_s": round(size / 1e6 / read_s, 1) if read_s else None,
    }


def _observation(pid: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": "2026-11-26T10:00:00Z",
        "valueQuantity": {"value": 72, "unit": "/min"},
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.bulk_export", description=__doc__.split("\n")[0])
    p.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    p.add_argument(
        "--pg-url",
        default="postgresql://postgres@127.0.0.1:5432/bench_bulk_export",
        help="a database of the benchmark's own: it is dropped and recreated",
    )
    p.add_argument("--patients", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)
    return p


if __name__ == "__main__":
    raise SystemExit(main())
