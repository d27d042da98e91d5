"""Benchmark HL7 v2 inbound: ADT^A04 over MLLP, each acknowledged, over one connection and over ten.

    python -m bench.hl7_ingest [--backend sqlite|postgresql] [--messages 2000] [--connections 10]

Starts ONE ``ehr-sandbox serve`` process on a fresh store and sends ADT^A04
messages (each a new patient and visit: a conditional update of the Patient by
PID-3, a new Encounter, the message log row and the control id, in one
transaction), each waiting for its ACK before the next on that connection.
Prints one JSON line: messages per second (wall), the server's CPU time per
message (less sensitive to a busy machine), and the load average during the run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sandbox.hl7v2.er7 import parse
from sandbox.hl7v2.mllp import Client

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/ehr_bench_hl7"


def a04(n: int, prefix: str) -> str:
    return (
        "\r".join(
            [
                f"MSH|^~\\&|BENCH|HOSP|EHR|default|20240101120000||ADT^A04^ADT_A01|{prefix}{n}|P|2.5.1",
                "EVN|A04|20240101120000",
                f"PID|1||{prefix}{n}^^^HOSP^MR||Doe{n}^John^Q||19800102|M|||1 Main St^^Boston^MA^02110||555-1234",
                f"PV1|1|O|CLINIC^101^1^HOSP||||1234^Smith^Jane^^^Dr||||||||||||V{prefix}{n}^^^HOSP^VN",
            ]
        )
        + "\r"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _send(port: int, first: int, count: int, prefix: str, failures: list[str]) -> None:
    with Client("127.0.0.1", port, timeout=60) as client:
        for n in range(first, first + count):
            reply = parse(client.send(a04(n, prefix)))
            msa = reply.first("MSA")
            if msa is None or msa.get(1) != "AA":
                failures.append(f"{prefix}{n}: {msa.get(1) if msa else '?'}")


def run(port: int, pid: int, messages: int, connections: int, prefix: str) -> dict[str, Any]:
    failures: list[str] = []
    per = messages // connections
    threads = [threading.Thread(target=_send, args=(port, i * per, per, prefix, failures)) for i in range(connections)]
    cpu = _cpu_seconds(pid)
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    cpu = _cpu_seconds(pid) - cpu
    sent = per * connections
    return {
        "connections": connections,
        "messages": sent,
        "seconds": round(wall, 2),
        "messages_per_s": round(sent / wall),
        "server_cpu_ms_per_message": round(1000 * cpu / sent, 2),
        "failures": len(failures),
        "load_average_1m": round(os.getloadavg()[0], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hl7_ingest")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--database-url", default=None, help=f"PostgreSQL URL (default {DEFAULT_PG}, recreated)")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument(
        "--analyze",
        action="store_true",
        help="PostgreSQL: ANALYZE after the warm-up (for a server with autovacuum off, where the fresh tables "
        "keep no statistics and a conditional update's search took a nested loop over every patient)",
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ehr-bench-hl7-"))
    env = {**os.environ, "EHR_SANDBOX_DATA_DIR": str(work), "EHR_SANDBOX_ADMIN_TOKEN": "bench"}
    if args.backend == "postgresql":
        env["EHR_SANDBOX_DATABASE_URL"] = _fresh_pg(args.database_url or DEFAULT_PG)
    else:
        env["EHR_SANDBOX_DATABASE_URL"] = f"sqlite:///{work / 'bench.db'}"
    http_port, mllp_port = _free_port(), _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "sandbox.cli", "serve", "--port", str(http_port), "--mllp-port", str(mllp_port)]
        + ["--no-access-log", "--log-level", "warning", "--no-demo", "--demo-lab-port", "off"],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait(mllp_port, server)
        load_before = os.getloadavg()[0]
        _send(mllp_port, 0, 200, "W", [])  # warm-up: statement caches, connection pool, page cache
        if args.analyze and args.backend == "postgresql":
            _analyze(env["EHR_SANDBOX_DATABASE_URL"])
        one = run(mllp_port, server.pid, args.messages, 1, "A")
        many = run(mllp_port, server.pid, args.messages, args.connections, "B")
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(
        json.dumps(
            {
                "benchmark": "hl7_ingest",
                "backend": args.backend,
                "message": "ADT^A04 (new patient + encounter), ACK awaited per message",
                "analyzed_after_warm_up": args.analyze and args.backend == "postgresql",
                "one_connection": one,
                "many_connections": many,
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "load_average_1m_before": round(load_before, 1),
                },
            }
        )
    )
    return 0


def _wait(port: int, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("bench: the server exited before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("bench: the MLLP listener did not come up within 60 s")


def _analyze(url: str) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    engine = create_engine(make_url(url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()


def _fresh_pg(url: str) -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    target = make_url(url)
    server = target.set(database="postgres", drivername="postgresql+psycopg")
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{target.database}"'))
        conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()
    return url


if __name__ == "__main__":
    sys.exit(main())
