"""``ehr-sandbox serve`` on a fresh machine: SQLite by default, prints its URLs, serves FHIR over real HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EHR_SANDBOX_")}
    env["EHR_SANDBOX_DATA_DIR"] = str(data_dir)
    return env


def _start(data_dir: Path, *extra: str) -> tuple[str, subprocess.Popen[str]]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox.cli", "serve", "--port", str(port), "--mllp-port", str(_free_port())]
        + ["--demo-lab-port", str(_free_port()), "--no-access-log", *extra],
        env=_env(data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                return base, proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    pytest.fail("the server did not start: " + (proc.stdout.read() if proc.stdout else ""))


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    return proc.communicate(timeout=10)[0]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    base, proc = _start(tmp_path)
    yield base, proc
    if proc.poll() is None:
        _stop(proc)


def test_serve_uses_sqlite_in_the_data_dir_and_prints_urls_and_the_generated_token(server, tmp_path):
    base, proc = server
    created = httpx.post(f"{base}/fhir/Patient", json={"resourceType": "Patient", "gender": "female"})
    assert created.status_code == 201
    assert httpx.get(created.headers["location"].split("/_history")[0]).json()["gender"] == "female"
    assert (tmp_path / "ehr-sandbox.db").exists()
    token = (tmp_path / "admin-token").read_text().strip()
    proc.terminate()
    output = proc.communicate(timeout=10)[0]
    assert f"{base}/fhir" in output
    assert token in output


def test_serve_on_a_taken_port_prints_one_line_and_fails(server, tmp_path):
    base, _ = server
    port = base.rsplit(":", 1)[1]
    result = subprocess.run(
        [sys.executable, "-m", "sandbox.cli", "serve", "--port", port, "--demo-lab-port", "off"],
        env=_env(tmp_path / "other"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"ehr-sandbox: the HTTP server cannot listen on 127.0.0.1:{port} (address already in use); choose another "
        "port with --port or $EHR_SANDBOX_PORT"
    )
    assert "Traceback" not in result.stderr and result.stderr.count("ehr-sandbox:") == 1
    assert "serving on" not in result.stdout
    assert not (tmp_path / "other" / "demo-accounts.txt").exists()  # said before the demo cohort is made


def test_first_start_sets_up_the_demo_cohort_once(server, tmp_path):
    base, proc = server
    admin = {"Authorization": "Bearer " + (tmp_path / "admin-token").read_text().strip()}
    cohorts = httpx.get(f"{base}/admin/cohorts", headers=admin).json()
    assert [c["name"] for c in cohorts["cohorts"]] == ["Demo cohort"]
    assert len(cohorts["cohorts"][0]["members"]) == 2
    assert cohorts["cohorts"][0]["packs"] == [
        "cds-and-ai-review",
        "core-clinical",
        "orders-and-charting",
        "registration-and-referrals",
    ]
    # The trainees' sandboxes stand on the training-case baseline: the chest-pain case is there.
    sandbox = cohorts["cohorts"][0]["members"][0]["sandbox"]
    assert httpx.get(f"{base}/sandboxes/{sandbox}/fhir/Patient/chest-pain-cardiology", headers=admin).status_code == 200
    accounts = (tmp_path / "demo-accounts.txt").read_text().splitlines()
    assert [line.split("\t")[1] for line in accounts] == ["trainer", "trainee", "trainee"]
    output = _stop(proc)
    assert "Demo cohort" in output and accounts[1].split("\t")[2] in output

    again, proc = _start(tmp_path)
    assert len(httpx.get(f"{again}/admin/cohorts", headers=admin).json()["cohorts"]) == 1
    assert "Demo cohort" not in _stop(proc)


def test_no_demo_leaves_a_fresh_store_empty(tmp_path):
    base, proc = _start(tmp_path, "--no-demo")
    admin = {"Authorization": "Bearer " + (tmp_path / "admin-token").read_text().strip()}
    assert httpx.get(f"{base}/admin/cohorts", headers=admin).json()["cohorts"] == []
    _stop(proc)
    assert not (tmp_path / "demo-accounts.txt").exists()


@pytest.mark.parametrize(
    ("taken_by", "says"),
    [
        (
            ["--demo-lab-port", "{port}"],
            "the demo lab cannot listen on 127.0.0.1:{port} (address already in use); choose another port with "
            "--demo-lab-port or $EHR_SANDBOX_DEMO_LAB_PORT, or off for no demo lab",
        ),
        (
            ["--env", "EHR_SANDBOX_DEMO_LAB_PORT={port}"],
            "the demo lab cannot listen on 127.0.0.1:{port} (address already in use); choose another port with "
            "--demo-lab-port or $EHR_SANDBOX_DEMO_LAB_PORT, or off for no demo lab",
        ),
        (
            ["--demo-lab-port", "{port}", "--workers", "2"],
            "the demo lab cannot listen on 127.0.0.1:{port} (address already in use); choose another port with "
            "--demo-lab-port or $EHR_SANDBOX_DEMO_LAB_PORT, or off for no demo lab",
        ),
        (
            ["--mllp-port", "{port}", "--demo-lab-port", "off"],
            "the HL7 v2 MLLP listener cannot listen on 127.0.0.1:{port} (address already in use); choose another "
            "port with --mllp-port or $EHR_SANDBOX_MLLP_PORT",
        ),
    ],
    ids=["demo lab flag", "demo lab variable", "demo lab with workers", "mllp"],
)
def test_serve_on_a_taken_demo_lab_or_mllp_port_says_which_in_one_line_and_sets_nothing_up(
    tmp_path: Path, taken_by: list[str], says: str
) -> None:
    with _port_in_use() as port:
        env = _env(tmp_path)
        argv = [sys.executable, "-m", "sandbox.cli", "serve", "--port", str(_free_port())]
        if "--mllp-port" not in taken_by:
            argv += ["--mllp-port", str(_free_port())]
        for flag, value in zip(taken_by[::2], taken_by[1::2], strict=True):
            if flag == "--env":
                name, _, raw = value.partition("=")
                env[name] = raw.format(port=port)
            else:
                argv += [flag, value.format(port=port)]
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"ehr-sandbox: {says.format(port=port)}"
    assert "Traceback" not in result.stderr and result.stderr.count("ehr-sandbox:") == 1
    assert "serving on" not in result.stdout
    assert not (tmp_path / "demo-accounts.txt").exists()  # the port is taken before the demo cohort is made


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (
            ["worker", "--demo-lab-port"],
            "the demo lab cannot listen on 127.0.0.1:{port} (address already in use); choose another port with "
            "--demo-lab-port",
        ),
        (
            ["mllp", "--port"],
            "the HL7 v2 MLLP listener cannot listen on 127.0.0.1:{port} (address already in use); choose another "
            "port with --port or $EHR_SANDBOX_MLLP_PORT",
        ),
    ],
    ids=["worker", "mllp"],
)
def test_the_worker_and_the_mllp_listener_on_a_taken_port_say_which_in_one_line(
    tmp_path: Path, command: list[str], says: str
) -> None:
    with _port_in_use() as port:
        result = subprocess.run(
            [sys.executable, "-m", "sandbox.cli", *command, port],
            env=_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"ehr-sandbox: {says.format(port=port)}"
    assert "Traceback" not in result.stderr and result.stderr.count("ehr-sandbox:") == 1


@contextmanager
def _port_in_use() -> Iterator[str]:
    """A loopback port another socket is listening on, for as long as the block lasts."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield str(taken.getsockname()[1])
