"""A web process killed (SIGKILL) in the middle of transaction bundles, again and again.

Each round posts a transaction bundle (a Patient and orders for it, tied by
``urn:uuid:`` references, all tagged with the round's identifier) to an
``ehr-sandbox serve --no-worker`` process and kills the process at a random
moment while the bundle is in flight; then starts a new one on the same
database.  Afterwards it checks that:

- each bundle is all there or not there at all (no partial bundle), and a
  bundle the client saw succeed is all there;
- the server came back every time (``/readyz``);
- the outbox worker (a separate process, not killed) delivered one ORM per
  committed order to a receiving system on a socket, and none twice.

``python -m bench.crash_bundles --rounds 10 [--database-url postgresql://...]`` prints one JSON line.
The test suite runs a short version (tests/production/test_crash.py).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.processes import ADMIN_TOKEN, MllpPeer, Server, Worker, fresh_schema, wait_for
from sandbox.hl7v2.er7 import parse

TAG_SYSTEM = "urn:ehr-sandbox:crash-round"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass
class Outcome:
    rounds: int = 0
    committed: int = 0  # bundles found whole after the restart
    absent: int = 0  # bundles found not at all
    partial: int = 0  # bundles found in part: must stay 0
    acknowledged_but_missing: int = 0  # the client got 200 and the bundle is not whole: must stay 0
    restart_seconds: list[float] = field(default_factory=list)
    orders_committed: int = 0
    orders_delivered: int = 0  # distinct committed orders the receiver got
    deliveries_duplicated: int = 0  # orders the receiver got more than once: must stay 0

    def ok(self) -> bool:
        return (
            self.partial == 0
            and self.acknowledged_but_missing == 0
            and self.deliveries_duplicated == 0
            and self.orders_delivered == self.orders_committed
        )

    def to_json(self) -> dict[str, Any]:
        restarts = sorted(self.restart_seconds)
        return {
            "rounds": self.rounds,
            "committed": self.committed,
            "absent": self.absent,
            "partial": self.partial,
            "acknowledged_but_missing": self.acknowledged_but_missing,
            "orders_committed": self.orders_committed,
            "orders_delivered": self.orders_delivered,
            "deliveries_duplicated": self.deliveries_duplicated,
            "restart_s_median": round(restarts[len(restarts) // 2], 2) if restarts else None,
            "ok": self.ok(),
        }


def bundle(tag: str, orders: int) -> dict[str, Any]:
    patient = f"urn:uuid:{uuid.uuid4()}"
    ident = [{"system": TAG_SYSTEM, "value": tag}]
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": patient,
            "resource": {"resourceType": "Patient", "identifier": ident, "name": [{"family": "Crash", "given": [tag]}]},
            "request": {"method": "POST", "url": "Patient"},
        }
    ]
    for n in range(orders):
        entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": {
                    "resourceType": "ServiceRequest",
                    "identifier": ident,
                    "status": "active",
                    "intent": "order",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "58410-2", "display": "CBC panel"}]},
                    "subject": {"reference": patient},
                    "note": [{"text": f"order {n}"}],
                },
                "request": {"method": "POST", "url": "ServiceRequest"},
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _ids(base: str, rtype: str, tag: str) -> list[str]:
    found = httpx.get(
        f"{base}/fhir/{rtype}", params={"identifier": f"{TAG_SYSTEM}|{tag}", "_count": 1000}, timeout=60
    ).json()
    return [e["resource"]["id"] for e in found.get("entry", [])]


def run(database_url: str, work: Path, *, rounds: int, orders: int = 40, seed: int = 7) -> Outcome:
    rng = random.Random(seed)
    outcome = Outcome()
    run_id = uuid.uuid4().hex[:8]
    with ExitStack() as stack:
        peer = MllpPeer()
        stack.callback(peer.close)
        server = Server(database_url, work / "serve-0", "serve-0", "--no-worker")
        stack.callback(lambda: server.stop())
        server.wait_ready()
        destination = httpx.put(
            f"{server.base}/sandboxes/default/hl7v2/destinations/lab",
            json={"host": "127.0.0.1", "port": peer.port, "receiving_application": "LIS", "receiving_facility": "LAB"},
            headers=ADMIN,
        )
        destination.raise_for_status()
        worker = Worker(database_url, work / "worker", "worker")
        stack.callback(worker.stop)
        worker.wait_started()

        # One undisturbed bundle tells how long a bundle takes here: the kills land inside that span.
        started = time.monotonic()
        httpx.post(f"{server.base}/fhir", json=bundle(f"{run_id}-warmup", orders), timeout=120).raise_for_status()
        span = time.monotonic() - started
        tags = [f"{run_id}-warmup"]
        for n in range(rounds):
            tag = f"{run_id}-{n}"
            tags.append(tag)
            answer: dict[str, Any] = {}

            def post(
                body: dict[str, Any] = bundle(tag, orders), into: dict[str, Any] = answer, to: str = server.base
            ) -> None:
                try:
                    into["status"] = httpx.post(f"{to}/fhir", json=body, timeout=120).status_code
                except httpx.TransportError as exc:
                    into["error"] = type(exc).__name__

            sender = threading.Thread(target=post)
            sender.start()
            time.sleep(rng.uniform(0.1, 1.0) * span)
            server.kill()
            sender.join()
            restarted = time.monotonic()
            server = Server(database_url, work / f"serve-{n + 1}", f"serve-{n + 1}", "--no-worker")
            server.wait_ready()
            outcome.restart_seconds.append(time.monotonic() - restarted)
            found = len(_ids(server.base, "Patient", tag)) + len(_ids(server.base, "ServiceRequest", tag))
            outcome.rounds += 1
            if found == orders + 1:
                outcome.committed += 1
            elif found == 0:
                outcome.absent += 1
            else:
                outcome.partial += 1
            if answer.get("status") == 200 and found != orders + 1:
                outcome.acknowledged_but_missing += 1

        committed_orders = {oid for tag in tags for oid in _ids(server.base, "ServiceRequest", tag)}
        outcome.orders_committed = len(committed_orders)

        def delivered() -> Counter[str]:
            return Counter(parse(m).first("ORC").get(2) for m in peer.messages())

        wait_for(lambda: committed_orders <= set(delivered()), timeout=300, interval=0.5)
        time.sleep(2)  # a few more polls of the worker: a second delivery would show now
        counts = delivered()
        outcome.orders_delivered = len(committed_orders & set(counts))
        outcome.deliveries_duplicated = sum(1 for oid in committed_orders if counts[oid] > 1)
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.crash_bundles", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--orders", type=int, default=40, help="orders per bundle (plus one Patient)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--database-url", default=None, help="a PostgreSQL URL (a schema of its own is made); SQLite file if unset"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="crash-bundles-") as tmp:
        work = Path(tmp)
        if args.database_url:
            with fresh_schema(args.database_url) as url:
                outcome = run(url, work, rounds=args.rounds, orders=args.orders, seed=args.seed)
            backend = "postgresql"
        else:
            outcome = run(
                f"sqlite:///{work / 'crash.db'}", work, rounds=args.rounds, orders=args.orders, seed=args.seed
            )
            backend = "sqlite"
    print(
        json.dumps(
            {"bench": "crash_bundles", "backend": backend, "orders_per_bundle": args.orders, **outcome.to_json()}
        )
    )
    return 0 if outcome.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
