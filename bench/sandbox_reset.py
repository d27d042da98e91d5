"""Sandboxes over a large baseline: create, reset, snapshot, and read/search rates against a sandbox-less store.

``python -m bench.sandbox_reset [--backend sqlite|postgresql]`` prints one JSON line.

The store: ``--patients`` charts (about 100 resources each, from ``bench.population``)
in a baseline layer, and the same resources again in a layer of their own
(the "flat" store: what a server without sandboxes would hold), so that reads
and searches can be compared on the same data.  Rows go in by bulk inserts of
what ``Repository.write`` would store (same JSON, same index rows from the
same indexer), one transaction per patient: the loader is not what is measured.

Measured (issue 3's targets in brackets):
- create ``--sandboxes`` sandboxes on the baseline, one transaction each [100 in under 2 s];
- reset a sandbox holding ``--writes`` writes of its own (updates of baseline
  resources and new resources) [under 100 ms], ``--resets`` times;
- snapshot a sandbox into a new baseline (a flat copy; rare by design);
- reads by id and two searches, in the sandbox (with its writes) and in the
  flat store, alternated over ``--rounds`` rounds [sandbox at least 80% of flat].
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.engine import make_url

from bench.population import LOINC, SEARCH_CODES, charts
from sandbox.app import ensure_default_sandbox
from sandbox.fhir.interactions import Interactions
from sandbox.fhir.search_params import Registry, registry
from sandbox.fhir.validation import dump_json, parse_json
from sandbox.fhir.values import instant_now
from sandbox.store import sandboxes
from sandbox.store.database import Database
from sandbox.store.indexer import index_resource
from sandbox.store.layers import View, resolve_view
from sandbox.store.repository import Actor, Repository
from sandbox.store.schema import INDEX_TABLES, resource_versions, resources

FLAT = "bench-flat"
BASELINE_NAME = "bench baseline"
TRAINEE = Actor("user:bench-trainee", "fhir-api")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    db = Database(_database_url(args) if args.reuse else _fresh_database(args))
    db.create_schema()
    ensure_default_sandbox(db)
    reg = registry()
    fhir = Interactions(Repository(reg), reg)
    rng = random.Random(args.seed)

    with db.read() as conn:
        found = [b for b in sandboxes.list_layers(conn, "baseline") if b.name == BASELINE_NAME]
    if args.reuse and found:
        baseline, loaded, load_s = found[0].id, found[0].own_resources or 0, 0.0
    else:
        with db.write() as conn:
            baseline = sandboxes.create_baseline(conn, BASELINE_NAME).id
            sandboxes.create_sandbox(conn, "flat store", None, sandbox_id=FLAT)
        started = time.perf_counter()
        loaded = _bulk_load(db, reg, (baseline, FLAT), args.patients, args.seed)
        load_s = time.perf_counter() - started
        db.analyze()

    create_cpu = time.process_time()
    create_s = _timed(lambda: _create_sandboxes(db, baseline, args.sandboxes))
    create_cpu_s = time.process_time() - create_cpu
    with db.write() as conn:
        sandbox = sandboxes.create_sandbox(conn, "bench trainee", baseline).id
    with db.read() as conn:
        view = resolve_view(conn, sandbox)
        observations = _ids(conn, baseline, "Observation")
        patients = _ids(conn, baseline, "Patient")
    reset_ms: list[float] = []
    reset_cpu_ms: list[float] = []  # this process's CPU: on a busy machine, wall time is mostly waiting
    for _ in range(args.resets):
        _trainee_writes(db, fhir, view, rng, observations, patients, args.writes)
        cpu = time.process_time()
        reset_ms.append(_timed(lambda: _reset(db, sandbox)) * 1000)
        reset_cpu_ms.append((time.process_time() - cpu) * 1000)
    _trainee_writes(db, fhir, view, rng, observations, patients, args.writes)
    snapshot: dict[str, Any] | None = None
    if not args.skip_snapshot:
        started = time.perf_counter()
        copied = _snapshot(db, sandbox)
        snapshot = {"resources": copied, "seconds": round(time.perf_counter() - started, 2)}

    flat = View(FLAT, (FLAT,))
    with db.read() as conn:
        keys = conn.execute(
            select(resources.c.resource_type, resources.c.id).where(resources.c.layer_id == baseline)
        ).all()
    read_keys = rng.sample(keys, min(args.reads, len(keys)))
    searches = _search_queries(rng, patients, args.searches)
    rates: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for _ in range(args.rounds):
        for name, where in (("flat", flat), ("sandbox", view)):
            rates["read"][name].append(_rate(db, read_keys, lambda conn, k, w=where: fhir.repo.current(conn, w, *k)))
            for kind, queries in searches.items():
                rates[kind][name].append(_rate(db, queries, lambda conn, q, w=where: fhir.search(conn, w, q[0], q[1])))

    report = {
        "bench": "sandbox_reset",
        "backend": args.backend,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average": [round(x, 1) for x in os.getloadavg()],
        "machine": _machine(),
        "baseline": {
            "patients": args.patients,
            "resources": loaded,
            "load_s": round(load_s, 1),
            "note": "reused from an earlier run" if load_s == 0 else "loaded twice (baseline, flat store) in bulk",
        },
        "create": {
            "sandboxes": args.sandboxes,
            "total_s": round(create_s, 3),
            "per_sandbox_ms": round(create_s * 1000 / args.sandboxes, 2),
            "cpu_s": round(create_cpu_s, 3),
        },
        "reset": {
            "own_writes": args.writes,
            "runs": len(reset_ms),
            "median_ms": round(statistics.median(reset_ms), 1),
            "max_ms": round(max(reset_ms), 1),
            "median_cpu_ms": round(statistics.median(reset_cpu_ms), 1),
        },
        "snapshot": snapshot,
        "rates_per_s": {
            kind: {
                "flat": round(statistics.median(by["flat"])),
                "sandbox": round(statistics.median(by["sandbox"])),
                "sandbox_to_flat": round(statistics.median(by["sandbox"]) / statistics.median(by["flat"]), 2),
            }
            for kind, by in rates.items()
        },
    }
    print(json.dumps(report), flush=True)
    db.dispose()
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.sandbox_reset", description=__doc__.split("\n")[0])
    p.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    p.add_argument(
        "--pg-url",
        default="postgresql://postgres@127.0.0.1:5432/bench_sandboxes",
        help="a database of the benchmark's own: it is dropped and recreated",
    )
    p.add_argument("--workdir", help="where the SQLite file goes (default: a temporary directory)")
    p.add_argument("--reuse", action="store_true", help="keep the store an earlier run loaded (same --workdir)")
    p.add_argument("--skip-snapshot", action="store_true", help="do not measure a snapshot (a copy of the baseline)")
    p.add_argument("--patients", type=int, default=1000)
    p.add_argument("--sandboxes", type=int, default=100)
    p.add_argument("--writes", type=int, default=500)
    p.add_argument("--resets", type=int, default=5)
    p.add_argument("--reads", type=int, default=2000)
    p.add_argument("--searches", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    return p


# ---- the store ------------------------------------------------------------------------------------------


def _database_url(args: argparse.Namespace) -> str:
    if args.backend == "sqlite":
        return f"sqlite:///{Path(args.workdir or tempfile.mkdtemp(prefix='ehr-bench-sandboxes-')) / 'bench.db'}"
    return args.pg_url


def _fresh_database(args: argparse.Namespace) -> str:
    if args.backend == "sqlite":
        url = _database_url(args)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{url.removeprefix('sqlite:///')}{suffix}").unlink(missing_ok=True)
        return url
    url = make_url(args.pg_url)
    if not url.database or url.database in ("test", "postgres"):
        raise SystemExit(f"bench: refusing to recreate database '{url.database}'; name a database of its own")
    admin = Database(url.set(database="postgres").render_as_string(hide_password=False))
    with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{url.database}"'))
    admin.dispose()
    return args.pg_url


def _bulk_load(db: Database, reg: Registry, layer_ids: tuple[str, ...], patients: int, seed: int) -> int:
    """What ``Repository.write`` stores for a first version, inserted in bulk into each layer."""
    count = 0
    for chart in charts(patients, seed):
        current: list[dict[str, Any]] = []
        versions: list[dict[str, Any]] = []
        index_rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for resource in chart:
            rtype, rid = resource["resourceType"], resource["id"]
            instant, last_updated = instant_now()
            body = {"resourceType": rtype, "id": rid, "meta": {"versionId": "1", "lastUpdated": instant}}
            body.update((k, v) for k, v in resource.items() if k not in ("resourceType", "id", "meta"))
            content = dump_json(body)
            rows = index_resource(reg, body)
            for layer in layer_ids:
                key = {"layer_id": layer, "resource_type": rtype, "id": rid}
                row = {**key, "version_id": 1, "last_updated": last_updated, "deleted": False, "content": content}
                current.append(row)
                versions.append({**row, "method": "PUT", "actor": "bench-loader", "route": "loader"})
                for kind, values in rows.items():
                    index_rows[kind].extend(
                        {"layer_id": layer, "resource_type": rtype, "resource_id": rid, **v} for v in values
                    )
        with db.write() as conn:
            conn.execute(insert(resources), current)
            conn.execute(insert(resource_versions), versions)
            for kind, rows_of_kind in index_rows.items():
                conn.execute(insert(INDEX_TABLES[kind]), rows_of_kind)
        count += len(chart)
    return count


def _ids(conn: Any, layer_id: str, rtype: str) -> list[str]:
    r = resources
    return list(
        conn.execute(
            select(r.c.id).where(r.c.layer_id == layer_id, r.c.resource_type == rtype).order_by(r.c.id)
        ).scalars()
    )


# ---- what is measured ---------------------------------------------------------------------------------------


def _timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def _create_sandboxes(db: Database, baseline: str, n: int) -> None:
    for i in range(n):
        with db.write() as conn:
            sandboxes.create_sandbox(conn, f"bench cohort trainee {i}", baseline)


def _reset(db: Database, sandbox: str) -> None:
    with db.write() as conn:
        sandboxes.reset_sandbox(conn, sandbox)


def _snapshot(db: Database, sandbox: str) -> int:
    with db.write() as conn:
        return sandboxes.snapshot_sandbox(conn, sandbox, "bench snapshot").own_resources


def _trainee_writes(
    db: Database,
    fhir: Interactions,
    view: View,
    rng: random.Random,
    observations: list[str],
    patients: list[str],
    n: int,
) -> None:
    """Half updates of baseline observations (which shadow them), half new observations; 50 per transaction."""
    for start in range(0, n, 50):
        with db.write() as conn:
            for i in range(start, min(n, start + 50)):
                if i % 2 == 0:
                    rid = rng.choice(observations)
                    stored = fhir.read(conn, view, "Observation", rid)
                    body = parse_json(stored.content or b"{}")
                    body["status"] = "amended"
                    fhir.repo.write(conn, view, body, TRAINEE, rtype="Observation", rid=rid, method="PUT")
                else:
                    body = {
                        "resourceType": "Observation",
                        "status": "final",
                        "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
                        "subject": {"reference": f"Patient/{rng.choice(patients)}"},
                        "effectiveDateTime": "2026-11-26T10:00:00Z",
                        "valueQuantity": {"value": 70 + i % 30, "unit": "/min"},
                    }
                    fhir.create(conn, view, body, TRAINEE)


def _search_queries(
    rng: random.Random, patients: list[str], n: int
) -> dict[str, list[tuple[str, list[tuple[str, str]]]]]:
    """A patient's latest values of one code (the chart view), and a broad demographic search."""
    return {
        "search_patient_code": [
            (
                "Observation",
                [
                    ("patient", rng.choice(patients)),
                    ("code", f"{LOINC}|{rng.choice(SEARCH_CODES)}"),
                    ("_sort", "-date"),
                    ("_count", "10"),
                ],
            )
            for _ in range(n)
        ],
        "search_broad": [
            (
                "Patient",
                [
                    ("gender", rng.choice(["female", "male"])),
                    ("birthdate", f"ge{rng.randrange(1940, 2000)}"),
                    ("_count", "20"),
                ],
            )
            for _ in range(max(1, n // 5))
        ],
    }


def _rate(db: Database, items: list[Any], work: Callable[[Any, Any], object]) -> float:
    """Operations per second, each in its own connection checkout as a request would be."""
    started = time.perf_counter()
    for item in items:
        with db.read() as conn:
            work(conn, item)
    return len(items) / (time.perf_counter() - started)


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    with contextlib.suppress(ValueError, OSError):
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": memory_gb, "python": platform.python_version()}


if __name__ == "__main__":
    sys.exit(main())
