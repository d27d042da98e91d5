"""SMART tests sign web users in to approve apps: the web tests' cheap password hashing applies here too.

``live`` serves the app with uvicorn on a real socket, for clients that need one (fhirclient, a browser).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvicorn

from sandbox.app import create_app
from sandbox.config import Settings
from sandbox.store.database import Database
from tests.web.conftest import cheap_password_hashing  # noqa: F401


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Live:
    root: str


@pytest.fixture
def live(settings: Settings, db: Database) -> Iterator[Live]:
    port = free_port()
    root = f"http://127.0.0.1:{port}"
    app = create_app(Settings(**{**settings.__dict__, "base_url": root}), db=db)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield Live(root)
    server.should_exit = True
    thread.join(10)
