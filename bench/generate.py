"""Benchmark the synthetic patient generator and the loader.

    python -m bench.generate [--patients 1000] [--years 5] [--backend sqlite|postgresql]

1. Generation, one process: patients per second per core (CPU time of this
   process), each with ``--years`` of history, including the JSON serialization
   the ``generate`` command does.
2. Generation on every core (one process per core, each making its share of the
   patients): the wall-clock rate of the whole machine.
3. Loading: ``--patients`` generated bundles (plus the directory bundle) into a
   fresh baseline through ``ehr-sandbox load``'s loader, i.e. the transaction
   bundle processor and ``Repository.write``, with as many worker processes as
   ``ehr-sandbox load`` starts (``--load-workers``): wall time, resources per
   second, and the CPU time of the loader and of its workers (PostgreSQL's own
   server processes are not counted).

Prints one JSON line.  This machine's speed varies from minute to minute (other
work shares it); CPU time is reported next to wall time for that reason.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from sandbox.fhir.validation import dump_json
from sandbox.store.database import Database
from synthetic_data.generator import Generator, GeneratorOptions
from synthetic_data.output import write_population

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/ehr_bench_generate"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    options = GeneratorOptions(args.patients, args.seed, history_years=args.years)
    result: dict[str, Any] = {
        "benchmark": "generate",
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": _machine(),
        "patients": args.patients,
        "history_years": args.years,
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
    }
    result["generate_one_process"] = _generate_one_process(options)
    result["generate_all_cores"] = _generate_all_cores(options, os.cpu_count() or 1)
    if not args.no_load:
        result["load"] = _load(args, options)
    result["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)  # other work on the machine slows wall time
    print(json.dumps(result))
    return 0


def _generate_one_process(options: GeneratorOptions) -> dict[str, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    generator = Generator(options)
    resources = 0
    size = len(dump_json(generator.directory_bundle()))
    for index in range(options.patients):
        bundle = generator.patient_bundle(index)
        resources += len(bundle["entry"])
        size += len(dump_json(bundle))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "patients_per_second_per_core": round(options.patients / cpu, 1),
        "resources": resources,
        "resources_per_patient": round(resources / max(options.patients, 1), 1),
        "megabytes_json": round(size / 1e6, 1),
    }


def _share(options: GeneratorOptions, start: int, stop: int) -> int:
    generator = Generator(options)
    return sum(len(dump_json(generator.patient_bundle(index))) for index in range(start, stop))


def _generate_all_cores(options: GeneratorOptions, cores: int) -> dict[str, Any]:
    bounds = [options.patients * n // cores for n in range(cores + 1)]
    wall = time.perf_counter()
    with ProcessPoolExecutor(cores) as pool:
        list(pool.map(_share, [options] * cores, bounds[:-1], bounds[1:]))
    wall = time.perf_counter() - wall
    return {"processes": cores, "seconds": round(wall, 2), "patients_per_second": round(options.patients / wall, 1)}


def _load(args: argparse.Namespace, options: GeneratorOptions) -> dict[str, Any]:
    from sandbox.app import ensure_default_sandbox
    from sandbox.store.sandboxes import baseline_view_for_loading, create_baseline
    from synthetic_data.loader import Loader

    work = Path(tempfile.mkdtemp(prefix="ehr-bench-generate-"))
    write_population(work / "out", options)
    url = _fresh_database(args, work)
    db = Database(url)
    db.create_schema()
    ensure_default_sandbox(db)
    with db.write() as conn:
        create_baseline(conn, "bench", baseline_id="bench")
        view = baseline_view_for_loading(conn, "bench")
    workers = (os.cpu_count() or 1) if args.load_workers is None else args.load_workers
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, cpu = time.perf_counter(), time.process_time()
    report = Loader(db, view, workers=workers).load(work / "out")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers have ended: their time is counted
    workers_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    db.dispose()
    shutil.rmtree(work, ignore_errors=True)
    return {
        "backend": args.backend,
        "seconds": round(wall, 1),
        "workers": workers,
        "cpu_seconds_main_process": round(cpu, 1),
        "cpu_seconds_workers": round(workers_cpu, 1),
        "resources": report.total,
        "rejected": len(report.rejected),
        "resources_per_second": round(report.total / wall, 1),
        "patients_per_second": round(options.patients / wall, 2),
    }


def _fresh_database(args: argparse.Namespace, work: Path) -> str:
    if args.backend == "sqlite":
        return f"sqlite:///{work / 'bench.db'}"
    url = make_url(args.pg_url)
    name = url.database
    if not name or name in ("test", "postgres"):
        raise SystemExit(f"bench: refusing to recreate database '{name}'; name a database of the benchmark's own")
    admin = Database(url.set(database="postgres").render_as_string(hide_password=False))
    with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return args.pg_url


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--years", type=int, default=5, help="years of history per patient")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--pg-url", default=DEFAULT_PG, help="a database of the benchmark's own; it is recreated")
    parser.add_argument("--no-load", action="store_true", help="measure generation only")
    parser.add_argument(
        "--load-workers", type=int, default=None, help="the loader's worker processes (default: one per core)"
    )
    return parser


def _machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": sys.version.split()[0]}


if __name__ == "__main__":
    sys.exit(main())
