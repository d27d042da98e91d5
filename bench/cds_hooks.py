"""CDS Hooks: what a hook call costs the chart with the built-in demo services.

``python -m bench.cds_hooks [--calls 200]`` prints one JSON line (SQLite in a temporary directory).

A baseline with the training cases, one sandbox on it.  Measured, each ``--calls`` times, through the
chart's service layer (``CdsClient``): ``patient-view`` for Mr Okafor (the demo AI model: prefetch of the
patient, conditions and observations, a signed request, the ASGI call, card validation, the log write),
and ``order-select`` of an amoxicillin draft (two services called concurrently: the allergy check and the
duplicate check).  p50 and p95 in ms, and the load average, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sandbox.cdshooks.client import CdsClient
from sandbox.cdshooks.hooks import HookUser
from sandbox.fhir.context import Views
from sandbox.fhir.interactions import Interactions
from sandbox.fhir.search_params import registry
from sandbox.store.database import Database
from sandbox.store.repository import Repository
from sandbox.store.sandboxes import create_sandbox
from tasks.cases import load_case_baseline

PATIENT = "chest-pain-cardiology"
AMOXICILLIN = {
    "resourceType": "MedicationRequest",
    "id": "draft-1",
    "status": "draft",
    "intent": "order",
    "medicationCodeableConcept": {
        "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "308182"}]
    },
    "subject": {"reference": f"Patient/{PATIENT}"},
}


async def _timed(calls: int, make: Callable[[], Awaitable[Any]]) -> dict[str, float]:
    await make()  # warm: the signing key, the compiled SQL
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        await make()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"p50_ms": round(statistics.median(times), 2), "p95_ms": round(times[int(len(times) * 0.95) - 1], 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cds_hooks", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'bench.db'}")
        db.create_schema()
        reg = registry()
        fhir = Interactions(Repository(reg), reg)
        load_case_baseline(db, fhir, "Training cases", baseline_id="cases")
        with db.write() as conn:
            create_sandbox(conn, "Bench", "cases", sandbox_id="bench")
        client = CdsClient(db, fhir, Views(db))
        user, root = HookUser("bench"), "http://localhost"

        async def run() -> dict[str, Any]:
            return {
                "patient_view": await _timed(
                    args.calls, lambda: client.patient_view("bench", user, PATIENT, root=root)
                ),
                "order_select": await _timed(
                    args.calls, lambda: client.order_select("bench", user, PATIENT, None, [AMOXICILLIN], root=root)
                ),
            }

        figures = asyncio.run(run())
        db.dispose()
    print(
        json.dumps(
            {
                "bench": "cds_hooks",
                "backend": "sqlite",
                "calls": args.calls,
                **figures,
                "loadavg": os.getloadavg()[0],
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
