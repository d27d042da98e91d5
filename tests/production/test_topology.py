"""Several ``ehr-sandbox serve`` processes and outbox workers on one PostgreSQL behave as one server.

The docker-compose topology, without Docker: two web processes that start at
the same moment on an empty schema, two ``ehr-sandbox worker`` processes, and
a receiving HL7 v2 system on a socket.  What one web process writes, the
other reads and searches at once; a task re-check and an outbound HL7 v2
message are handled by whichever worker is free, and delivered once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import func, select

from bench.processes import ADMIN_TOKEN, MllpPeer, Server, Worker, fresh_schema, wait_for
from sandbox.accounts.cohorts import add_member, create_cohort
from sandbox.accounts.tokens import issue_token
from sandbox.accounts.users import create_user
from sandbox.fhir.interactions import Interactions
from sandbox.fhir.search_params import registry
from sandbox.hl7v2 import TRANSLATOR
from sandbox.store.database import Database
from sandbox.store.outbox import lags as outbox_lags
from sandbox.store.repository import Repository
from sandbox.store.schema import hl7v2_messages, outbox, outbox_cursors, resources
from tasks.cases import load_case_baseline
from tasks.engine import TaskEngine
from tasks.library import Library
from tasks.live import CONSUMER
from tests.conftest import PG_URL

pytestmark = pytest.mark.postgres

ALLERGY_TASK = "core-clinical/allergy-with-reaction"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass
class Topology:
    a: Server
    b: Server
    workers: list[Worker]
    db: Database
    fhir: Interactions
    baseline: str
    sandbox: str
    trainee_id: str
    trainee: dict[str, str]  # the trainee's Authorization header


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    if not PG_URL:
        pytest.skip("EHR_SANDBOX_TEST_DATABASE_URL is not set")
    tmp = tmp_path_factory.mktemp("topology")
    with fresh_schema(PG_URL) as url:
        # Both start at once on an empty schema: creating the tables and the default sandbox must not race.
        # The second is itself two web processes behind one port (serve --workers 2), as in docker-compose.yml.
        servers = [
            Server(url, tmp / "serve-1", "serve-1", "--no-worker"),
            Server(url, tmp / "serve-2", "serve-2", "--no-worker", "--workers", "2"),
        ]
        workers: list[Worker] = []
        db = Database(url)
        try:
            for server in servers:
                server.wait_ready()
            reg = registry()
            fhir = Interactions(Repository(reg), reg)
            baseline = load_case_baseline(db, fhir, "Topology cases")
            with db.write() as conn:
                trainer = create_user(conn, "Tess Trainer", "tess@topology.invalid", "trainer")
                trainee = create_user(conn, "Ann Trainee", "ann@topology.invalid", "trainee")
                cohort = create_cohort(conn, "Topology cohort", trainer.id, baseline_id=baseline)
                sandbox = add_member(conn, cohort.id, trainee.id).sandbox_id
                token = issue_token(conn, trainee.id)[1]
            workers = [Worker(url, tmp / f"worker-{n}", f"worker-{n}") for n in (1, 2)]
            for worker in workers:
                worker.wait_started()
            yield Topology(
                *servers, workers, db, fhir, baseline, sandbox, trainee.id, {"Authorization": f"Bearer {token}"}
            )
        finally:
            for process in [*servers, *workers]:
                process.stop()
            db.dispose()


def test_both_servers_started_together_on_an_empty_schema(topology: Topology) -> None:
    for server in (topology.a, topology.b):
        assert httpx.get(f"{server.base}/readyz").json() == {"status": "ready", "database": "ok"}
        assert "Traceback" not in server.output()


def test_the_multi_process_server_adds_up_its_processes_metrics(topology: Topology) -> None:
    for _ in range(6):  # spread over both of its web processes
        assert httpx.get(f"{topology.b.base}/fhir/metadata").status_code == 200
    metrics = httpx.get(f"{topology.b.base}/metrics").text
    [line] = [
        m
        for m in metrics.splitlines()
        if m.startswith('ehr_sandbox_http_requests_total{method="GET",route="/fhir/metadata"')
    ]
    assert float(line.split()[-1]) >= 6


def test_what_one_server_writes_the_other_reads_and_searches_at_once(topology: Topology) -> None:
    fhir_a = f"{topology.a.base}/sandboxes/{topology.sandbox}/fhir"
    fhir_b = f"{topology.b.base}/sandboxes/{topology.sandbox}/fhir"
    family = f"Topo{uuid.uuid4().hex[:8]}"
    created = httpx.post(
        f"{fhir_a}/Patient", json={"resourceType": "Patient", "name": [{"family": family}]}, headers=topology.trainee
    )
    assert created.status_code == 201, created.text
    pid = created.json()["id"]

    read = httpx.get(f"{fhir_b}/Patient/{pid}", headers=topology.trainee)
    assert read.status_code == 200 and read.json()["name"] == [{"family": family}]
    found = httpx.get(f"{fhir_b}/Patient", params={"family": family}, headers=topology.trainee).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [pid]

    updated = httpx.put(
        f"{fhir_b}/Patient/{pid}",
        json={"resourceType": "Patient", "id": pid, "name": [{"family": family}], "gender": "female"},
        headers={**topology.trainee, "If-Match": 'W/"1"'},
    )
    assert updated.status_code == 200, updated.text
    again = httpx.get(f"{fhir_a}/Patient/{pid}", headers=topology.trainee)
    assert again.json()["meta"]["versionId"] == "2" and again.json()["gender"] == "female"
    stale = httpx.put(
        f"{fhir_a}/Patient/{pid}",
        json={"resourceType": "Patient", "id": pid, "gender": "male"},
        headers={**topology.trainee, "If-Match": 'W/"1"'},
    )
    assert stale.status_code == 412  # server A knows server B's update: no lost update


def test_a_sandbox_deleted_and_made_again_on_one_server_is_seen_so_by_the_other(topology: Topology) -> None:
    sid = f"topo-{uuid.uuid4().hex[:8]}"
    made = httpx.post(f"{topology.a.base}/admin/sandboxes", json={"name": "Scratch", "id": sid}, headers=ADMIN)
    assert made.status_code == 201, made.text
    on_b = f"{topology.b.base}/sandboxes/{sid}/fhir"
    assert httpx.get(f"{on_b}/Patient", headers=ADMIN).status_code == 200  # B has cached the sandbox's View now

    assert httpx.delete(f"{topology.a.base}/admin/sandboxes/{sid}", headers=ADMIN).status_code == 204
    assert httpx.get(f"{on_b}/Patient", headers=ADMIN).status_code == 404
    gone = httpx.post(f"{on_b}/Patient", json={"resourceType": "Patient"}, headers=ADMIN)
    assert gone.status_code == 404
    with topology.db.read() as conn:
        assert (
            conn.execute(select(func.count()).select_from(resources).where(resources.c.layer_id == sid)).scalar() == 0
        )

    # The same id again, now on the cases baseline: B must see the baseline's patients, not its old View.
    remade = httpx.post(
        f"{topology.a.base}/admin/sandboxes",
        json={"name": "Scratch again", "id": sid, "baseline": topology.baseline},
        headers=ADMIN,
    )
    assert remade.status_code == 201, remade.text
    bundle = httpx.get(f"{on_b}/Patient", params={"_summary": "count"}, headers=ADMIN).json()
    assert bundle["total"] > 0


def test_a_task_re_check_and_an_hl7_delivery_are_done_once_by_whichever_worker_is_free(topology: Topology) -> None:
    peer = MllpPeer()
    try:
        fhir_a = f"{topology.a.base}/sandboxes/{topology.sandbox}/fhir"
        fhir_b = f"{topology.b.base}/sandboxes/{topology.sandbox}/fhir"
        destination = httpx.put(
            f"{topology.a.base}/sandboxes/{topology.sandbox}/hl7v2/destinations/lab",
            json={"host": "127.0.0.1", "port": peer.port, "receiving_application": "LIS", "receiving_facility": "LAB"},
            headers=ADMIN,
        )
        assert destination.status_code == 200, destination.text
        engine = TaskEngine(topology.db, topology.fhir, Library.builtin())
        attempt = engine.start(topology.sandbox, topology.trainee_id, ALLERGY_TASK)
        patient = attempt.context["patient"]

        allergy = {
            "resourceType": "AllergyIntolerance",
            "clinicalStatus": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}
                ]
            },
            "verificationStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                        "code": "confirmed",
                    }
                ]
            },
            "type": "allergy",
            "category": ["medication"],
            "criticality": "high",
            "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "29046"}]},
            "patient": {"reference": patient},
            "reaction": [
                {
                    "manifestation": [{"coding": [{"system": "http://snomed.info/sct", "code": "41291007"}]}],
                    "severity": "severe",
                }
            ],
        }
        assert httpx.post(f"{fhir_a}/AllergyIntolerance", json=allergy, headers=topology.trainee).status_code == 201
        order = {
            "resourceType": "ServiceRequest",
            "status": "active",
            "intent": "order",
            "code": {"coding": [{"system": "http://loinc.org", "code": "58410-2", "display": "CBC panel"}]},
            "subject": {"reference": patient},
        }
        placed = httpx.post(f"{fhir_b}/ServiceRequest", json=order, headers=topology.trainee)
        assert placed.status_code == 201, placed.text
        order_id = placed.json()["id"]

        def passed() -> bool:
            latest = engine.latest(topology.sandbox, topology.trainee_id, ALLERGY_TASK)
            return latest is not None and latest.passed

        wait_for(passed)  # no server process re-checks (--no-worker): a worker process did
        wait_for(lambda: any(order_id in m for m in peer.messages()))

        def drained() -> bool:
            with topology.db.read() as conn:
                translator_lag = outbox_lags(conn)[TRANSLATOR]
                newest = conn.execute(select(func.max(outbox.c.seq))).scalar()
                cursor = conn.execute(
                    select(outbox_cursors.c.last_seq).where(outbox_cursors.c.consumer == CONSUMER)
                ).scalar()
                pending = conn.execute(
                    select(func.count()).select_from(hl7v2_messages).where(hl7v2_messages.c.status == "pending")
                )
                return translator_lag == 0 and cursor == newest and pending.scalar() == 0

        wait_for(drained)
        for worker in topology.workers:
            assert worker.alive(), worker.output()
        sent = [m for m in peer.messages() if order_id in m]
        assert len(sent) == 1 and "ORM^O01" in sent[0]
        log = httpx.get(
            f"{topology.b.base}/sandboxes/{topology.sandbox}/hl7v2/messages",
            params={"direction": "outbound"},
            headers=ADMIN,
        ).json()["messages"]
        [entry] = [m for m in log if f"ServiceRequest/{order_id}/_history/1" in m["resources"]]
        assert entry["status"] == "delivered" and entry["ack_code"] == "AA" and entry["attempts"] == 1
    finally:
        peer.close()
