"""``ehr-sandbox serve`` end to end: its MLLP listener takes messages, and its worker delivers an order to a
destination, all over real sockets between real processes."""

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
def served(tmp_path: Path) -> Iterator[tuple[str, int]]:
    http_port, mllp_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EHR_SANDBOX_")}
    env["EHR_SANDBOX_DATA_DIR"] = str(tmp_path)
    env["EHR_SANDBOX_MLLP_PORT"] = str(mllp_port)  # the environment variable, not the flag
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
        yield base, mllp_port
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert f"127.0.0.1:{mllp_port}" in output  # the banner says where MLLP listens


def test_serve_listens_for_mllp_and_delivers_orders(served):
    base, mllp_port = served
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
