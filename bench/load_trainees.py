"""Simulated trainees working at once against the production shape on PostgreSQL.

Starts ``ehr-sandbox serve --workers W --no-worker`` and one ``ehr-sandbox worker`` on a PostgreSQL schema of
their own, loads the training-case baseline, makes a cohort with one private sandbox per trainee, and lets
each trainee (an asyncio task with its own bearer token) work a charting loop for the given time: open a
patient's chart (read, problems, allergies, medications, recent vitals), chart a set of vitals, sometimes
record an allergy or place an order, then look the chart up again.  Between actions a trainee thinks for a
random 0.5 to 2 seconds, as a person at a keyboard does.

``python -m bench.load_trainees --trainees 50 --minutes 10 --database-url postgresql://postgres@127.0.0.1/test``
prints one JSON line: requests, errors, p50/p95/p99 latency in milliseconds overall and per action.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.processes import Server, Worker, fresh_schema
from sandbox.accounts.cohorts import add_member, create_cohort
from sandbox.accounts.tokens import issue_token
from sandbox.accounts.users import create_user
from sandbox.fhir.interactions import Interactions
from sandbox.fhir.search_params import registry
from sandbox.store.database import Database
from sandbox.store.repository import Repository
from tasks.cases import load_case_baseline

LOINC = "http://loinc.org"


@dataclass
class Figures:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    error_samples: list[str] = field(default_factory=list)

    def record(self, action: str, seconds: float, response: httpx.Response | None, problem: str = "") -> None:
        self.latencies[action].append(seconds)
        if response is None or response.status_code >= 400:
            self.errors[action] += 1
            if len(self.error_samples) < 5:
                detail = problem or (f"{response.status_code} {response.text[:200]}" if response is not None else "")
                self.error_samples.append(f"{action}: {detail}")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


async def _call(
    figures: Figures, client: httpx.AsyncClient, action: str, method: str, url: str, **kwargs: Any
) -> httpx.Response | None:
    started = time.perf_counter()
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        figures.record(action, time.perf_counter() - started, None, type(exc).__name__)
        return None
    figures.record(action, time.perf_counter() - started, response)
    return response


def _vitals(patient: str, rng: random.Random) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}]},
        "subject": {"reference": patient},
        "effectiveDateTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "valueQuantity": {
            "value": rng.randint(55, 120),
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    }


def _allergy(patient: str) -> dict[str, Any]:
    return {
        "resourceType": "AllergyIntolerance",
        "clinicalStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}
            ]
        },
        "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "7980"}]},
        "patient": {"reference": patient},
    }


def _order(patient: str) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "code": {"coding": [{"system": LOINC, "code": "58410-2", "display": "CBC panel"}]},
        "subject": {"reference": patient},
    }


async def trainee(
    base: str, token: str, patients: list[str], until: float, figures: Figures, rng: random.Random
) -> None:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
        await asyncio.sleep(rng.uniform(0, 2))  # people do not all start on the same second
        while time.monotonic() < until:
            patient = rng.choice(patients)
            pid = patient.split("/", 1)[1]
            await _call(figures, client, "read patient", "GET", f"/{patient}")
            await _call(figures, client, "search problems", "GET", "/Condition", params={"patient": pid})
            await _call(figures, client, "search allergies", "GET", "/AllergyIntolerance", params={"patient": pid})
            await _call(figures, client, "search medications", "GET", "/MedicationRequest", params={"patient": pid})
            await _call(
                figures,
                client,
                "search vitals",
                "GET",
                "/Observation",
                params={"patient": pid, "category": "vital-signs", "_sort": "-date", "_count": "10"},
            )
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            await _call(figures, client, "chart vitals", "POST", "/Observation", json=_vitals(patient, rng))
            if rng.random() < 0.3:
                await _call(figures, client, "record allergy", "POST", "/AllergyIntolerance", json=_allergy(patient))
            if rng.random() < 0.3:
                await _call(figures, client, "place order", "POST", "/ServiceRequest", json=_order(patient))
            await asyncio.sleep(rng.uniform(0.5, 2.0))


def _setup(database_url: str, trainees: int) -> list[tuple[str, str]]:
    """The training-case baseline and a cohort on it: (sandbox id, bearer token) per trainee."""
    db = Database(database_url)
    try:
        reg = registry()
        fhir = Interactions(Repository(reg), reg)
        baseline = load_case_baseline(db, fhir, "Load: training cases")
        with db.write() as conn:
            trainer = create_user(conn, "Load Trainer", "trainer@load.invalid", "trainer")
            cohort = create_cohort(conn, "Load cohort", trainer.id, baseline_id=baseline)
            seats = []
            for n in range(trainees):
                user = create_user(conn, f"Trainee {n}", f"t{n}@load.invalid", "trainee")
                seats.append((add_member(conn, cohort.id, user.id).sandbox_id, issue_token(conn, user.id)[1]))
        db.analyze()
    finally:
        db.dispose()
    return seats


async def _run_load(base: str, seats: list[tuple[str, str]], seconds: float, seed: int) -> tuple[Figures, float]:
    figures = Figures()
    first_sandbox, first_token = seats[0]
    async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {first_token}"}) as client:
        found = (await client.get(f"{base}/sandboxes/{first_sandbox}/fhir/Patient", params={"_count": 100})).json()
    patients = [f"Patient/{e['resource']['id']}" for e in found.get("entry", [])]
    if not patients:
        raise SystemExit("the baseline has no patients")
    until = time.monotonic() + seconds
    started = time.monotonic()
    await asyncio.gather(
        *(
            trainee(f"{base}/sandboxes/{sandbox}/fhir", token, patients, until, figures, random.Random(seed + n))
            for n, (sandbox, token) in enumerate(seats)
        )
    )
    return figures, time.monotonic() - started


def summary(figures: Figures, elapsed: float) -> dict[str, Any]:
    everything = [s for values in figures.latencies.values() for s in values]
    total_errors = sum(figures.errors.values())
    return {
        "requests": len(everything),
        "errors": total_errors,
        "requests_per_s": round(len(everything) / elapsed, 1) if elapsed else None,
        "p50_ms": _ms(percentile(everything, 50)) if everything else None,
        "p95_ms": _ms(percentile(everything, 95)) if everything else None,
        "p99_ms": _ms(percentile(everything, 99)) if everything else None,
        "mean_ms": _ms(statistics.fmean(everything)) if everything else None,
        "by_action": {
            action: {
                "n": len(values),
                "p50_ms": _ms(percentile(values, 50)),
                "p95_ms": _ms(percentile(values, 95)),
                "errors": figures.errors.get(action, 0),
            }
            for action, values in sorted(figures.latencies.items())
        },
        "error_samples": figures.error_samples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load_trainees", description=__doc__.splitlines()[0])
    parser.add_argument("--trainees", type=int, default=50)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2, help="web processes (serve --workers)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--database-url", default=os.environ.get("EHR_SANDBOX_TEST_DATABASE_URL"))
    args = parser.parse_args(argv)
    if not args.database_url or not args.database_url.startswith("postgresql"):
        parser.error("--database-url must be a PostgreSQL URL (or set EHR_SANDBOX_TEST_DATABASE_URL)")
    with tempfile.TemporaryDirectory(prefix="load-trainees-") as tmp, fresh_schema(args.database_url) as url:
        work = Path(tmp)
        with ExitStack() as stack:
            server = Server(url, work / "serve", "serve", "--no-worker", "--workers", str(args.workers))
            stack.callback(server.stop)
            server.wait_ready()
            worker = Worker(url, work / "worker", "worker")
            stack.callback(worker.stop)
            worker.wait_started()
            seats = _setup(url, args.trainees)
            figures, elapsed = asyncio.run(_run_load(server.base, seats, args.minutes * 60, args.seed))
    line = {
        "bench": "load_trainees",
        "trainees": args.trainees,
        "minutes": args.minutes,
        "web_processes": args.workers,
        "backend": "postgresql",
        "cpus": os.cpu_count(),
        "load_average_at_end": [round(x, 1) for x in os.getloadavg()],
        "python": platform.python_version(),
        **summary(figures, elapsed),
    }
    print(json.dumps(line))
    return 0 if line["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
