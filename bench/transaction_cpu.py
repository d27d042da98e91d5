"""CPU per transaction Bundle, in process: the bundles of ``bench.fhir_server`` through ``POST [base]``'s own
processing (``bundle_routes.process``), with no HTTP and no outbox consumers.

    python -m bench.transaction_cpu --backend sqlite|postgresql [--patients 1000] [--bundles 300] [--rounds 3]

Loads a store (``bench.population``, as ``bench.fhir_server`` does) unless ``--workdir`` / ``--pg-url`` already
holds one, then posts ``--bundles`` 10-entry Bundles (an Encounter and nine Observations tied by ``urn:uuid:``
references) per round, one at a time, and reports the CPU time of the thread that ran them per Bundle, with the
parts of it: planning (validation, index rows), the write transaction, its inserts and its commit.  On
PostgreSQL it adds the CPU of the database's own processes serving this database (``/proc``), which runs on the
same machine.  CPU time rather than wall time: other work on the machine changes it much less.  Prints one
JSON line: each part's median over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import default

from bench.fhir_server import _transaction
from bench.population import load
from sandbox.fhir import bundle_routes, transaction
from sandbox.fhir.context import FhirContext
from sandbox.fhir.interactions import Interactions
from sandbox.fhir.search_params import registry
from sandbox.fhir.validation import dump_json
from sandbox.store import repository
from sandbox.store.database import Database
from sandbox.store.layers import DEFAULT_SANDBOX, resolve_view
from sandbox.store.repository import Actor, Repository
from sandbox.store.schema import resources

WARM_UP = 30


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.transaction_cpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["sqlite", "postgresql"], required=True)
    p.add_argument("--pg-url", help="a PostgreSQL database of the benchmark's own (loaded if empty)")
    p.add_argument("--workdir", help="keep (and reuse) the SQLite store here")
    p.add_argument("--patients", type=int, default=1000)
    p.add_argument("--bundles", type=int, default=300, help="Bundles per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    scratch: Path | None = None
    if args.backend == "postgresql":
        if not args.pg_url:
            p.error("--pg-url is required with --backend postgresql")
        url = args.pg_url
    else:
        work = Path(args.workdir) if args.workdir else (scratch := Path(tempfile.mkdtemp(prefix="ehr-bench-tx-")))
        work.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{work / 'bench.db'}"
    db = Database(url)
    db.create_schema()
    with db.read() as conn:
        if conn.execute(select(func.count()).select_from(resources)).scalar_one() == 0:
            load(db, args.patients, seed=args.seed)
            db.analyze()
    reg = registry()
    fhir = Interactions(Repository(reg), reg)
    with db.read() as conn:
        view = resolve_view(conn, DEFAULT_SANDBOX)
        patients = list(conn.execute(select(resources.c.id).where(resources.c.resource_type == "Patient")).scalars())
    ctx = FhirContext(db, fhir, view, Actor(), "http://127.0.0.1/fhir")
    rng = random.Random(args.seed + 2)
    rounds = []
    with _parts() as parts:
        for n in range(args.rounds):
            bodies = [
                dump_json(_transaction(rng, patients, 10)) for _ in range(args.bundles + (WARM_UP if n == 0 else 0))
            ]
            if n == 0:
                for body in bodies[:WARM_UP]:
                    bundle_routes.process(ctx, body, "minimal")
                bodies = bodies[WARM_UP:]
            parts.clear()
            database_cpu = _database_cpu(db)
            started = time.thread_time()
            for body in bodies:
                bundle_routes.process(ctx, body, "minimal")
            figures = {"total": time.thread_time() - started, **parts}
            if not db.is_sqlite:
                figures["postgresql_processes"] = _database_cpu(db) - database_cpu
            rounds.append({name: seconds * 1000 / len(bodies) for name, seconds in figures.items()})
    db.dispose()
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
    report: dict[str, Any] = {
        "bench": "transaction_cpu",
        "backend": args.backend,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {"patients": args.patients, "bundles": args.bundles, "rounds": args.rounds, "entries": 10},
        "cpu_ms_per_bundle": {name: round(statistics.median(r[name] for r in rounds), 3) for name in rounds[0]},
        "total_each_round": [round(r["total"], 3) for r in rounds],
    }
    print(json.dumps(report), flush=True)
    return 0


@contextmanager
def _parts() -> Iterator[Counter[str]]:
    """The thread CPU spent in each part of a Bundle's processing, added up while the block runs."""
    spent: Counter[str] = Counter()
    hooks: list[tuple[Any, str, Callable[..., Any]]] = []

    def wrap(owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                spent[label] += time.thread_time() - started

        hooks.append((owner, name, original))
        setattr(owner, name, timed)

    wrap(bundle_routes, "plan_transaction", "planning")
    wrap(transaction, "validate", "validation")  # the planner's, which is every resource's and the Bundle's
    wrap(transaction, "prepare_creates", "index_rows_and_json")
    wrap(transaction.BundleProcessor, "_transaction", "write_transaction")
    wrap(repository, "_insert_many", "inserts")
    wrap(default.DefaultDialect, "do_commit", "commit")
    try:
        yield spent
    finally:
        for owner, name, original in reversed(hooks):
            setattr(owner, name, original)


def _database_cpu(db: Database) -> float:
    """CPU seconds used so far by the PostgreSQL processes serving ``db``'s database (0 on SQLite)."""
    if db.is_sqlite:
        return 0.0
    with db.read() as conn:
        pids = conn.exec_driver_sql("SELECT pid FROM pg_stat_activity WHERE datname = current_database()").scalars()
        total = 0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone, or on another machine
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    raise SystemExit(main())
