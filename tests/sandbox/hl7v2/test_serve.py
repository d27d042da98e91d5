"""``ehr-sandbox serve`` end to end: its MLLP listener takes messages, and its worker delivers an order to a
destination (a test's, or the built-in demo lab the demo cohort's sandboxes send to), all over real sockets
between real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandbox.hl7v2.er7 import parse
from sandbox.hl7v2.mllp import Client
from tests.sandbox.hl7v2.conftest import adt, msa
from tests.sandbox.hl7v2.test_outbound import ORDER, Destination


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, int, int, Path]]:
    """(base URL, MLLP port, demo lab port, data dir) of a running ``serve`` with its demo cohort."""
    http_port, mllp_port, lab_port = _free_port(), _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EHR_SANDBOX_")}
    env["EHR_SANDBOX_DATA_DIR"] = str(tmp_path)
    env["EHR_SANDBOX_MLLP_PORT"] = str(mllp_port)  # the environment variable, not the flag
    env["EHR_SANDBOX_DEMO_LAB_PORT"] = str(lab_port)  # likewise
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox.cli", "serve", "--port", str(http_port), "--no-access-log"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{http_port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("the server did not start")
        yield base, mllp_port, lab_port, tmp_path
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert f"127.0.0.1:{mllp_port}" in output  # the banner says where MLLP listens
    assert f"Demo lab (takes orders, ACKs AA): 127.0.0.1:{lab_port}" in output  # and where the demo lab does


def test_serve_listens_for_mllp_and_delivers_orders(served):
    base, mllp_port, _lab_port, _data_dir = served
    with Client("127.0.0.1", mllp_port) as client:
        assert msa(client.send(adt())) == ("AA", "MSG0001")
    patient = httpx.get(f"{base}/fhir/Patient?identifier=12345").json()["entry"][0]["resource"]
    lab = Destination()
    try:
        httpx.put(f"{base}/sandboxes/default/hl7v2/destinations/lab", json={"host": "127.0.0.1", "port": lab.port})
        httpx.post(f"{base}/fhir/ServiceRequest", json={**ORDER, "subject": {"reference": f"Patient/{patient['id']}"}})
        for _ in range(200):  # the worker polls every half second
            if lab.received:
                break
            time.sleep(0.1)
        assert [parse(m).message_type for m in lab.received] == ["ORM^O01"]
        for _ in range(100):
            log = httpx.get(f"{base}/sandboxes/default/hl7v2/messages?direction=outbound").json()["messages"]
            if log and log[0]["status"] == "delivered":
                break
            time.sleep(0.1)
        assert log[0]["status"] == "delivered" and log[0]["ack_code"] == "AA"
    finally:
        lab.close()


def _delivered(base: str, sandbox: str, headers: dict[str, str]) -> list[dict]:
    for _ in range(200):  # the worker polls every half second
        log = httpx.get(f"{base}/sandboxes/{sandbox}/hl7v2/messages?direction=outbound", headers=headers)
        messages = log.json()["messages"]
        if messages and messages[0]["status"] == "delivered":
            return messages
        time.sleep(0.1)
    pytest.fail(f"nothing was delivered: {messages}")


def test_a_demo_trainees_lab_order_reaches_the_built_in_lab_and_is_acknowledged(served):
    base, _mllp_port, lab_port, data_dir = served
    admin = {"Authorization": "Bearer " + (data_dir / "admin-token").read_text().strip()}
    [cohort] = httpx.get(f"{base}/admin/cohorts", headers=admin).json()["cohorts"]
    sandboxes = [member["sandbox"] for member in cohort["members"]]
    for sandbox in sandboxes:  # the lab is configured out of the box, as an API client sees it
        found = httpx.get(f"{base}/sandboxes/{sandbox}/hl7v2/destinations", headers=admin).json()["destinations"]
        assert [(d["id"], d["host"], d["port"], d["message_types"], d["enabled"]) for d in found] == [
            ("demo-lab", "127.0.0.1", lab_port, ["ORM^O01"], True)
        ]
    hba1c = {"coding": [{"system": "http://loinc.org", "code": "4548-4", "display": "Hemoglobin A1c"}]}
    order = {**ORDER, "code": hba1c, "subject": {"reference": "Patient/diabetes-uncontrolled"}}
    created = httpx.post(f"{base}/sandboxes/{sandboxes[0]}/fhir/ServiceRequest", json=order, headers=admin)
    assert created.status_code == 201, created.text
    [sent] = _delivered(base, sandboxes[0], admin)
    assert (sent["message_type"], sent["ack_code"], sent["peer"]) == ("ORM^O01", "AA", "demo-lab")
    assert (
        httpx.get(  # the other trainee's sandbox sent nothing: its log is its own
            f"{base}/sandboxes/{sandboxes[1]}/hl7v2/messages?direction=outbound", headers=admin
        ).json()["messages"]
        == []
    )


@pytest.mark.parametrize(
    "command",
    [
        ["worker"],  # the outbox worker of a deployment where no single-process `serve` runs the lab
        ["serve", "--workers", "2", "--no-demo", "--mllp-port", "0"],  # the supervising process runs it
    ],
)
def test_the_other_delivering_processes_run_the_demo_lab_when_asked(command: list[str], tmp_path: Path) -> None:
    lab_port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EHR_SANDBOX_")}
    env["EHR_SANDBOX_DATA_DIR"] = str(tmp_path)
    argv = [sys.executable, "-m", "sandbox.cli", *command, "--demo-lab-port", str(lab_port)]
    if command[0] == "serve":
        argv += ["--port", str(_free_port()), "--no-access-log"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    try:
        lines: list[str] = []
        while not any("Demo lab" in line for line in lines):  # the banner, printed once the process is up
            line = proc.stdout.readline()
            assert line, "".join(lines)  # the process ended without saying where its demo lab is
            lines.append(line)
        assert f"Demo lab (takes orders, ACKs AA): 127.0.0.1:{lab_port}" in "".join(lines)
        for _ in range(300):  # serve's supervisor prints the banner just before it binds the lab
            try:
                client = Client("127.0.0.1", lab_port)
                break
            except ConnectionRefusedError:
                time.sleep(0.1)
        else:
            pytest.fail("the demo lab did not start")
        with client:
            assert msa(client.send(adt("A04", "LAB0001"))) == ("AA", "LAB0001")
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
