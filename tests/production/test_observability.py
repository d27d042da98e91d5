"""Health, readiness, Prometheus metrics, request ids and JSON log lines."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import create_engine

from sandbox.app import create_app
from sandbox.config import Settings
from sandbox.logs import JsonLines, request_id_from
from sandbox.metrics import message_type_label
from sandbox.store.database import Database
from tests.sandbox.hl7v2.conftest import adt


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_healthz_and_readyz_answer_when_the_database_does(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "database": "ok"}


def test_readyz_is_503_when_the_database_cannot_be_reached(tmp_path, settings: Settings) -> None:
    db = Database(f"sqlite:///{tmp_path / 'ok.db'}")
    app = create_app(settings, db=db)
    with TestClient(app) as client:
        # The database goes away under the running app: a file in a directory that does not exist cannot be opened.
        db.engine = create_engine(f"sqlite:///{tmp_path / 'gone' / 'x.db'}")
        db._autocommit = db.engine.execution_options(isolation_level="AUTOCOMMIT")
        assert client.get("/healthz").status_code == 200  # alive: restarting it would not help
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json() == {"status": "unavailable", "database": "OperationalError"}


def test_requests_are_counted_by_route_template_and_status(client: TestClient) -> None:
    route = "/fhir/{rtype}/{rid}"
    ok_before = _sample("ehr_sandbox_http_requests_total", method="GET", route=route, status="200")
    missing_before = _sample("ehr_sandbox_http_requests_total", method="GET", route=route, status="404")
    timed_before = _sample("ehr_sandbox_http_request_duration_seconds_count", method="GET", route=route)
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
    assert client.get(f"/fhir/Patient/{pid}").status_code == 200
    assert client.get("/fhir/Patient/no-such-one").status_code == 404
    assert client.get("/no/route/at/all").status_code == 404

    assert _sample("ehr_sandbox_http_requests_total", method="GET", route=route, status="200") == ok_before + 1
    assert _sample("ehr_sandbox_http_requests_total", method="GET", route=route, status="404") == missing_before + 1
    assert _sample("ehr_sandbox_http_request_duration_seconds_count", method="GET", route=route) == timed_before + 2
    body = client.get("/metrics").text
    assert f'route="{pid}"' not in body and "no/route" not in body  # templates only: series do not grow with URLs
    assert 'route="unmatched"' in body


def test_metrics_show_the_outbox_depth(client: TestClient) -> None:
    def depth(consumer: str) -> float:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith(f'ehr_sandbox_outbox_depth{{consumer="{consumer}"}}'):
                return float(line.split()[-1])
        raise AssertionError(f"no outbox depth for {consumer}")

    before = depth("hl7v2-translate")
    client.post("/fhir/Patient", json={"resourceType": "Patient"})
    client.post("/fhir/Patient", json={"resourceType": "Patient"})
    assert depth("hl7v2-translate") == before + 2  # no worker runs in this app: the events wait
    assert depth("hl7v2-deliver") == 0


def test_mllp_messages_are_counted_by_type_and_ack_code(mllp_port: int) -> None:
    from sandbox.hl7v2.mllp import Client

    accepted = _sample("ehr_sandbox_mllp_messages_total", direction="inbound", message_type="ADT^A04", ack_code="AA")
    rejected = _sample("ehr_sandbox_mllp_messages_total", direction="inbound", message_type="unknown", ack_code="AR")
    with Client("127.0.0.1", mllp_port, timeout=10) as client:
        client.send(adt("A04", "MET0001"))
        client.send("this is not HL7\r")
    assert (
        _sample("ehr_sandbox_mllp_messages_total", direction="inbound", message_type="ADT^A04", ack_code="AA")
        == accepted + 1
    )
    assert (
        _sample("ehr_sandbox_mllp_messages_total", direction="inbound", message_type="unknown", ack_code="AR")
        == rejected + 1
    )


def test_message_type_labels_stay_few_whatever_arrives() -> None:
    assert message_type_label("MSH|^~\\&|A|B|C|D|20240101||ORU^R01^ORU_R01|1|P|2.5.1\r") == "ORU^R01"
    assert message_type_label("MSH|^~\\&|A|B|C|D|20240101||ZZZ^Z99|1|P|2.5.1\r") == "ZZZ^Z99"
    assert message_type_label("MSH|^~\\&|A|B|C|D|20240101||<script>^x|1|P|2.5.1\r") == "unknown"
    assert message_type_label(b"\x00\xff garbage") == "unknown"
    assert message_type_label("MSH") == "unknown"


def test_every_response_carries_a_request_id(client: TestClient) -> None:
    generated = client.get("/fhir/metadata").headers["x-request-id"]
    assert len(generated) == 32 and client.get("/fhir/metadata").headers["x-request-id"] != generated
    assert client.get("/fhir/metadata", headers={"X-Request-ID": "trace-42"}).headers["x-request-id"] == "trace-42"
    hostile = client.get("/fhir/metadata", headers={"X-Request-ID": 'a" injected=1 <script>'})
    assert hostile.headers["x-request-id"] != 'a" injected=1 <script>'  # only plain ids reach the logs


def test_a_forked_process_makes_request_ids_of_its_own() -> None:
    """New ids are a per-process random prefix and a counter: a forked worker draws its own prefix."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report one id and leave without running anything else of pytest's
        os.write(write, request_id_from(None).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    os.close(read)
    mine = request_id_from(None)
    assert len(child) == len(mine) == 32 and child[:16] != mine[:16]


@pytest.fixture
def json_lines() -> io.StringIO:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLines())
    logger = logging.getLogger("ehr_sandbox")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_json_access_lines_carry_the_request_id_route_and_status(settings: Settings, db, json_lines) -> None:
    app = create_app(Settings(**{**settings.__dict__, "log_format": "json"}), db=db)
    with TestClient(app) as client:
        client.get("/fhir/Patient/nobody", headers={"X-Request-ID": "req-7"})
    [line] = [json.loads(raw) for raw in json_lines.getvalue().splitlines()]
    assert line["logger"] == "ehr_sandbox.access" and line["request_id"] == "req-7"
    assert line["method"] == "GET" and line["path"] == "/fhir/Patient/nobody" and line["status"] == 404
    assert line["route"] == "/fhir/{rtype}/{rid}" and line["duration_ms"] >= 0


def test_an_unexpected_error_is_logged_as_json_with_its_request_id(settings: Settings, db, json_lines) -> None:
    app = create_app(settings, db=db)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom")

    with TestClient(app, raise_server_exceptions=False) as client:
        failed = client.get("/boom", headers={"X-Request-ID": "req-8"})
    assert failed.status_code == 500 and failed.headers["x-request-id"] == "req-8"
    [line] = [json.loads(raw) for raw in json_lines.getvalue().splitlines() if "kaboom" in raw]
    assert line["level"] == "error" and line["request_id"] == "req-8" and "RuntimeError: kaboom" in line["exception"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["worker", "--interval", "0"], "--interval must be a positive number of seconds"),
        (["serve", "--workers", "0"], "--workers must be 1 or more"),
    ],
)
def test_bad_process_flags_print_one_line_and_fail(args: list[str], message: str, tmp_path) -> None:
    env = {"EHR_SANDBOX_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}
    result = subprocess.run([sys.executable, "-m", "sandbox.cli", *args], env=env, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr


def test_the_probes_lead_the_route_table(client: TestClient) -> None:
    """The router tries routes in order: the probes must not wait behind the hundreds of API and page routes."""
    paths = [getattr(route, "path", None) for route in client.app.routes]  # an included router has none
    probes = [paths.index(p) for p in ("/healthz", "/readyz", "/metrics")]
    first_router = paths.index(None)
    assert max(probes) < first_router
