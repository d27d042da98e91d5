"""Processes of the production shape for tests and benches: `ehr-sandbox serve` and `ehr-sandbox worker` on
free ports and one database (a PostgreSQL schema of their own), and a receiving HL7 v2 system on a socket."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import text

from sandbox.hl7v2 import ack as acks
from sandbox.hl7v2.er7 import parse
from sandbox.hl7v2.mllp import FrameReader, frame
from sandbox.store.database import Database

ADMIN_TOKEN = "topology-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def fresh_schema(pg_url: str) -> Iterator[str]:
    """A PostgreSQL schema nobody else uses; yields the database URL that puts it first on the search path."""
    schema = f"topo_{uuid.uuid4().hex[:12]}"
    admin = Database(pg_url)
    with admin.engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in pg_url else "?"
    try:
        yield f"{pg_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


class Process:
    """One ``ehr-sandbox`` subprocess; its output goes to a file, shown when something goes wrong."""

    def __init__(self, args: list[str], database_url: str, data_dir: Path, name: str) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("EHR_SANDBOX_")}
        env.update(
            EHR_SANDBOX_DATABASE_URL=database_url,
            EHR_SANDBOX_DATA_DIR=str(data_dir),
            EHR_SANDBOX_ADMIN_TOKEN=ADMIN_TOKEN,
        )
        self.name = name
        self.log_path = data_dir / f"{name}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox.cli", *args], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self._log.closed:
            return
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown of any kind, as when a host dies."""
        self.proc.kill()
        self.proc.wait()
        self._log.close()


class Server(Process):
    def __init__(self, database_url: str, data_dir: Path, name: str, *extra: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        args = ["serve", "--port", str(self.port), "--mllp-port", str(free_port()), "--no-access-log", "--no-demo"]
        args += ["--demo-lab-port", "off"]  # several servers on one machine: the demo lab's port is not shared
        super().__init__([*args, *extra], database_url, data_dir, name)

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"{self.name} exited:\n{self.output()}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.name} was not ready in {timeout} s:\n{self.output()}")


class Worker(Process):
    def __init__(self, database_url: str, data_dir: Path, name: str) -> None:
        super().__init__(["worker", "--interval", "0.2"], database_url, data_dir, name)

    def wait_started(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"{self.name} exited:\n{self.output()}")
            if "outbox worker on" in self.output():
                return
            time.sleep(0.2)
        raise AssertionError(f"{self.name} did not start in {timeout} s:\n{self.output()}")


class MllpPeer:
    """A receiving system on a real socket: records every message and answers AA."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: list[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            frames = FrameReader()
            while data := conn.recv(65536):
                for message in frames.feed(data):
                    with self._lock:
                        self.received.append(message.decode())
                    conn.sendall(frame(acks.build(parse(message), "AA")))

    def messages(self) -> list[str]:
        with self._lock:
            return list(self.received)

    def close(self) -> None:
        self.sock.close()


def wait_for(condition, timeout: float = 60, interval: float = 0.1):  # type: ignore[no-untyped-def]
    """Poll until ``condition()`` is truthy and return it; fail after ``timeout`` seconds (a hang, not a figure)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met in {timeout} s")
