"""What building each search shape once saves: searches with the statement cache warm, and with it emptied
before every search (as every search cost before ``search_values.py``).

    python -m bench.search_statements [--patients 300] [--searches 1000] [--rounds 3] [--workdir DIR]

In-process on SQLite (no HTTP): the patient-scoped search of ``bench.fhir_server``
(``Observation?patient=X&code=http://loinc.org|C&_sort=-date&_count=10``) over
``--patients`` charts from ``bench.population``.  Cold and warm runs alternate over
``--rounds`` so both see the same machine.  Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import select

from bench.population import LOINC, SEARCH_CODES, load
from sandbox.fhir import search
from sandbox.fhir.interactions import Interactions
from sandbox.fhir.search_params import registry
from sandbox.store.database import Database
from sandbox.store.layers import resolve_view
from sandbox.store.repository import Repository
from sandbox.store.schema import resources


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.search_statements", description=__doc__.split("\n\n")[0])
    p.add_argument("--patients", type=int, default=300)
    p.add_argument("--searches", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workdir", help="keep (and reuse) the SQLite store here")
    args = p.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ehr-bench-search-"))
    work.mkdir(parents=True, exist_ok=True)
    db = Database(f"sqlite:///{work / 'bench.db'}")
    db.create_schema()
    with db.read() as conn:
        loaded = conn.execute(select(resources.c.id).limit(1)).first() is not None
    if not loaded:
        load(db, args.patients)
        db.analyze()
    reg = registry()
    fhir = Interactions(Repository(reg), reg)
    with db.read() as conn:
        patients = conn.execute(select(resources.c.id).where(resources.c.resource_type == "Patient")).scalars().all()
        view = resolve_view(conn, "default")
    rng = random.Random(1)
    queries = [
        [("patient", rng.choice(patients)), ("code", f"{LOINC}|{rng.choice(SEARCH_CODES)}"), ("_sort", "-date")]
        + [("_count", "10")]
        for _ in range(args.searches)
    ]

    def run(cold: bool) -> float:
        started = time.perf_counter()
        for query in queries:
            if cold:  # neither built nor compiled into the driver's SQL
                search._BUILT.clear()
                search._DRIVER.clear()
            with db.read() as conn:
                fhir.search(conn, view, "Observation", query)
        return (time.perf_counter() - started) / len(queries) * 1000

    run(False)  # warm the page cache and the compiled-SQL cache
    cold, warm = [], []
    for _ in range(args.rounds):
        cold.append(run(True))
        warm.append(run(False))
    print(
        json.dumps(
            {
                "bench": "search_statements",
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "load_average": [round(x, 1) for x in os.getloadavg()],
                "patients": len(patients),
                "searches_per_round": len(queries),
                "cold_ms_per_search": round(statistics.median(cold), 3),
                "warm_ms_per_search": round(statistics.median(warm), 3),
                "speedup": round(statistics.median(cold) / statistics.median(warm), 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
