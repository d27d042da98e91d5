"""Benchmark the FHIR server: reads, patient-scoped search, ingest, peak memory.

    python -m bench.fhir_server --backend sqlite|postgresql [--patients 1000] [--rounds 5] [--duration 10]

Loads a fresh store (``--patients`` charts of about 100 resources each, through
``Repository.write``), starts ONE ``ehr-sandbox serve`` process on it, and drives
it with ``wrk`` (Debian package ``wrk``) and ``bench/wrk/requests.lua``: the
load generator is C, so it leaves this machine's CPU to the server.  Every
round measures the trivial endpoint (``/healthz``) next to the FHIR reads, so
the ratio between the two is taken under the same machine conditions; the
figures printed are medians over the rounds (this machine's speed swings
several-fold between minutes).  Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from bench.population import LOINC, SEARCH_CODES, load, load_generated, patient_chart
from sandbox.fhir.validation import dump_json
from sandbox.store.database import Database
from sandbox.store.outbox import lags as outbox_lags
from sandbox.store.schema import resources

LUA = Path(__file__).parent / "wrk" / "requests.lua"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/ehr_bench"
READ_SAMPLE = 20_000


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ehr-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    url = _fresh_database(args, work)
    db = Database(url)
    started = time.perf_counter()
    if args.reuse and _count(db) > 0:
        loaded = {"reused": True}
    else:
        loader = load_generated if args.data == "generator" else load
        result = loader(db, args.patients, seed=args.seed, progress=args.verbose)
        seconds = time.perf_counter() - started
        loaded = {"seconds": round(seconds, 1), "resources_per_s": round(result.resources / seconds)}
    db.analyze()
    total = _count(db)
    files = _request_files(db, work, args)
    db.dispose()

    args.port = args.port or _free_port()
    # Stopping the benchmark stops its server too (the finally below), rather than leaving it holding the port.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    server = _start_server(args, url, work)
    try:
        base = f"http://127.0.0.1:{args.port}"
        drained = _drain_outbox(url)
        # Warm up: the first requests compile statements, fill caches and page the database in.
        for name in ("read", "search"):
            _wrk(base, args, files[name], duration=max(2, args.duration // 2))
        rounds: list[dict[str, Any]] = []
        for n in range(args.rounds):
            figures = {
                "healthz": _wrk(base, args, None, path="/healthz"),
                "read": _wrk(base, args, files["read"]),
                "search": _wrk(base, args, files["search"]),
                "create": _wrk(base, args, files["create"]),
            }
            if "transaction" in files:
                figures["transaction"] = _wrk(base, args, files["transaction"])
            rounds.append(figures)
            if args.verbose:
                print(f"round {n + 1}: " + json.dumps({k: v["rps"] for k, v in figures.items()}), flush=True)
        memory = _memory(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)

    report = {
        "bench": "fhir_server",
        "backend": args.backend,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": _machine(),
        "store": {"patients": args.patients, "data": args.data, "resources": total, "load": loaded},
        "settings": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "connections": args.connections,
            "wrk_threads": args.threads,
            "transaction_entries": args.bundle_entries if "transaction" in files else None,
        },
        "healthz": _summary(rounds, "healthz"),
        "read": _summary(rounds, "read"),
        "read_to_healthz": _median_ratio(rounds, "read", "healthz"),
        "search": _summary(rounds, "search"),
        "create": _summary(rounds, "create"),
        "server_memory_mb": memory,
        "outbox_drain_s": drained,
    }
    if "transaction" in files:
        report["transaction"] = _summary(rounds, "transaction", per_request=args.bundle_entries)
    print(json.dumps(report), flush=True)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.fhir_server", description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["sqlite", "postgresql"], required=True)
    p.add_argument("--pg-url", default=DEFAULT_PG, help=f"PostgreSQL database to (re)create (default {DEFAULT_PG})")
    p.add_argument("--patients", type=int, default=1000, help="charts to load, about 100 resources each")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--data",
        choices=["charts", "generator"],
        default="charts",
        help="charts: bench/population.py, bulk-stored (fast); generator: synthetic_data through the transaction "
        "processor (realistic, about 130 resources/s to load)",
    )
    p.add_argument("--rounds", type=int, default=5, help="rounds of measurements; figures are their medians")
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    p.add_argument("--connections", type=int, default=8, help="wrk connections (Medplum's published run used 8)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads")
    p.add_argument("--bundle-entries", type=int, default=10, help="entries per transaction bundle")
    p.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    p.add_argument("--workdir", help="keep the SQLite file, request files and server log here")
    p.add_argument("--reuse", action="store_true", help="keep an existing store in --workdir / --pg-url")
    p.add_argument("--no-transactions", action="store_true", help="measure single creates only")
    p.add_argument("--verbose", action="store_true")
    return p


# ---- the store -------------------------------------------------------------------------------------


def _fresh_database(args: argparse.Namespace, work: Path) -> str:
    if args.backend == "sqlite":
        path = work / "bench.db"
        if not args.reuse:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{path}"
    url = make_url(args.pg_url)
    name = url.database
    if not name or name in ("test", "postgres"):
        raise SystemExit(f"bench: refusing to recreate database '{name}'; name a database of the benchmark's own")
    if args.reuse:
        return args.pg_url
    admin = Database(url.set(database="postgres").render_as_string(hide_password=False))
    with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return args.pg_url


def _count(db: Database) -> int:
    db.create_schema()
    with db.read() as conn:
        return conn.execute(select(func.count()).select_from(resources)).scalar_one()


def _request_files(db: Database, work: Path, args: argparse.Namespace) -> dict[str, Path]:
    """What the load generator asks for: stored ids, patients x codes, and bodies to POST."""
    r = resources
    with db.read() as conn:
        keys = conn.execute(
            select(r.c.resource_type, r.c.id).where(r.c.deleted.is_(False)).order_by(func.random()).limit(READ_SAMPLE)
        ).all()
        patients = conn.execute(select(r.c.id).where(r.c.resource_type == "Patient").order_by(r.c.id)).scalars().all()
    files = {"read": work / "read.txt", "search": work / "search.txt", "create": work / "create.txt"}
    files["read"].write_text("".join(f"/fhir/{t}/{i}\n" for t, i in keys))
    system_code = [quote(f"{LOINC}|{code}", safe="") for code in SEARCH_CODES]
    files["search"].write_text(
        "".join(
            f"/fhir/Observation?patient={pid}&code={code}&_sort=-date&_count=10\n"
            for pid in patients
            for code in system_code
        )
    )
    rng = random.Random(args.seed + 1)
    observations = _new_observations(rng, patients, 500)
    files["create"].write_text("/fhir/Observation\n" + "".join(dump_json(o).decode() + "\n" for o in observations))
    if not args.no_transactions and _has_transactions():
        files["transaction"] = work / "transaction.txt"
        bundles = [_transaction(rng, patients, args.bundle_entries) for _ in range(200)]
        files["transaction"].write_text("/fhir\n" + "".join(dump_json(b).decode() + "\n" for b in bundles))
    return files


def _new_observations(rng: random.Random, patients: list[str], n: int) -> list[dict[str, Any]]:
    """Observations for existing patients, taken from generated charts (without ids: the server assigns them)."""
    found: list[dict[str, Any]] = []
    while len(found) < n:
        chart = patient_chart(rng)
        pid = rng.choice(patients)
        for resource in chart:
            if resource["resourceType"] == "Observation":
                obs = {k: v for k, v in resource.items() if k not in ("id", "encounter")}
                obs["subject"] = {"reference": f"Patient/{pid}"}
                found.append(obs)
    return found[:n]


def _transaction(rng: random.Random, patients: list[str], entries: int) -> dict[str, Any]:
    """A visit as a transaction: an Encounter and its Observations, tied together by ``urn:uuid:`` references."""
    chart = patient_chart(rng)
    pid = rng.choice(patients)
    encounter = next(r for r in chart if r["resourceType"] == "Encounter")
    enc_urn = f"urn:uuid:{encounter['id']}"
    bundle_entries = [
        {
            "fullUrl": enc_urn,
            "resource": {**_without_id(encounter), "subject": {"reference": f"Patient/{pid}"}},
            "request": {"method": "POST", "url": "Encounter"},
        }
    ]
    for obs in (r for r in chart if r["resourceType"] == "Observation"):
        if len(bundle_entries) >= entries:
            break
        body = {**_without_id(obs), "subject": {"reference": f"Patient/{pid}"}, "encounter": {"reference": enc_urn}}
        bundle_entries.append(
            {"fullUrl": f"urn:uuid:{obs['id']}", "resource": body, "request": {"method": "POST", "url": "Observation"}}
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": bundle_entries}


def _without_id(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "id"}


def _has_transactions() -> bool:
    """Whether the server processes transaction bundles yet (sandbox/fhir/transaction.py)."""
    try:
        import sandbox.fhir.transaction  # noqa: F401
    except ImportError:
        return False
    return True


# ---- the server and the load generator ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(args: argparse.Namespace, url: str, work: Path) -> subprocess.Popen[bytes]:
    exe = shutil.which("ehr-sandbox")
    if exe is None:
        raise SystemExit("bench: ehr-sandbox is not on PATH (pip install -e .)")
    env = {
        **os.environ,
        "EHR_SANDBOX_DATABASE_URL": url,
        "EHR_SANDBOX_DATA_DIR": str(work),
        "EHR_SANDBOX_ADMIN_TOKEN": secrets.token_urlsafe(16),
        "EHR_SANDBOX_MLLP_PORT": "0",  # any free port: another server on this machine may hold 2575
        "EHR_SANDBOX_DEMO_LAB_PORT": "off",
    }
    log = (work / "server.log").open("wb")
    cmd = [exe, "serve", "--port", str(args.port), "--no-access-log", "--log-level", "warning", "--no-demo"]
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"bench: the server exited with {server.returncode}; see {work / 'server.log'}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{args.port}/healthz", timeout=2) as response:
                ours = _listening_pid(args.port) == server.pid
                if response.status == 200 and ours:
                    return server
                if not ours:  # another process holds the port: measuring it would be measuring the wrong server
                    time.sleep(0.5)
                    continue
        except OSError:
            time.sleep(0.2)
    server.terminate()
    raise SystemExit("bench: the server did not answer /healthz within 60 s")


def _drain_outbox(url: str, timeout: float = 900) -> float:
    """Wait until the server's outbox consumers have taken up the load's events; return the seconds it took.

    Every stored resource leaves an outbox event, and the server's consumers (the HL7 v2 translator) work
    through them after start, holding SQLite's write lock a batch at a time: measured on top of that
    backlog, the first round's writes ran at a few requests a second.
    """
    db = Database(url)
    started = time.perf_counter()
    try:
        while time.perf_counter() - started < timeout:
            with db.read() as conn:
                if not any(outbox_lags(conn).values()):
                    break
            time.sleep(1)
    finally:
        db.dispose()
    return round(time.perf_counter() - started, 1)


def _listening_pid(port: int) -> int | None:
    """The process listening on 127.0.0.1:``port``, from /proc (socket inode -> owning process)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(fields[9])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return int(proc.name)
        except OSError:
            continue
    return None


def _wrk(
    base: str, args: argparse.Namespace, file: Path | None, *, path: str = "", duration: int | None = None
) -> dict[str, Any]:
    cmd = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{duration or args.duration}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        base + path,
    ]
    if file is not None:
        method = "POST" if file.name in ("create.txt", "transaction.txt") else "GET"
        cmd += ["--", method, str(file)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    raw = json.loads(out.strip().splitlines()[-1])
    seconds = raw["duration_us"] / 1e6
    errors = sum(raw["errors"].values())
    return {
        "rps": raw["requests"] / seconds,
        "p50_ms": raw["latency_us"]["p50"] / 1000,
        "p95_ms": raw["latency_us"]["p95"] / 1000,
        "p99_ms": raw["latency_us"]["p99"] / 1000,
        "requests": raw["requests"],
        "errors": errors,
    }


def _memory(pid: int) -> dict[str, float]:
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return {"peak_rss_VmHWM": fields["VmHWM"], "rss_at_end": fields["VmRSS"]}


# ---- figures -----------------------------------------------------------------------------------------


def _summary(rounds: list[dict[str, Any]], name: str, *, per_request: int = 1) -> dict[str, Any]:
    runs = [r[name] for r in rounds]
    med: Callable[[str], float] = lambda key: statistics.median(run[key] for run in runs)  # noqa: E731
    summary: dict[str, Any] = {
        "rps": round(med("rps")),
        "p50_ms": round(med("p50_ms"), 2),
        "p95_ms": round(med("p95_ms"), 2),
        "rps_each_round": [round(run["rps"]) for run in runs],
        "errors": sum(run["errors"] for run in runs),
    }
    if per_request > 1:
        summary["resources_per_s"] = round(med("rps") * per_request)
    return summary


def _median_ratio(rounds: list[dict[str, Any]], name: str, reference: str) -> float:
    return round(statistics.median(r[name]["rps"] / r[reference]["rps"] for r in rounds), 3)


def _machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "python": sys.version.split()[0],
    }


if __name__ == "__main__":
    sys.exit(main())
