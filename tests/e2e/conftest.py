"""Browser tests: a live server in a background thread, and Debian's Chromium driven by Playwright.

- ``live_server`` (one per test session): uvicorn serving a fresh app on a free loopback port, over a new
  SQLite database seeded like ``serve``'s first start (``sandbox.demo``: the training-case baseline, a
  trainer, the trainees Ada and Ben with a sandbox each, the demo cohort; the built-in packs), with the
  live re-check worker running as under ``serve``.  It has
  ``.url``, ``.app``, ``.db``, ``.demo``, ``.password(email)`` and ``.sign_in(page, email)``.
- ``browser`` (one per test session) and ``page`` (a fresh browser context per test, so no cookies leak
  between tests).
- ``app_origin``: a SMART app of sorts, a local HTTP server on another port (another origin) whose page shows
  the ``iss`` it was launched with (``<p id="launched">``).
- ``artifacts``: where screenshots go: ``$EHR_SANDBOX_E2E_ARTIFACTS``, else a directory under pytest's tmp.

Chromium is Debian's (``/usr/bin/chromium``, or ``$EHR_SANDBOX_CHROMIUM``); Playwright never downloads one.
Without it these tests are skipped, saying why (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import uvicorn
from argon2 import PasswordHasher
from fastapi import FastAPI
from playwright import sync_api as playwright_api

from sandbox.accounts import passwords
from sandbox.app import create_app
from sandbox.config import Settings
from sandbox.demo import Demo, create_demo
from sandbox.store.database import Database
from tasks.live import start_live_checks


@dataclass
class LiveServer:
    url: str
    app: FastAPI
    db: Database
    demo: Demo | None = None  # None for ``fresh_server``, which holds nothing until a test writes

    def password(self, email: str) -> str:
        assert self.demo is not None, "fresh_server has no demo accounts"
        return next(password for e, _role, password in self.demo.accounts if e == email)

    def sign_in(self, page: playwright_api.Page, email: str) -> None:
        page.goto(self.url + "/login")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(self.password(email))
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(self.url + "/")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _serving(settings: Settings, db: Database, port: int) -> Iterator[FastAPI]:
    """The whole app on 127.0.0.1:``port`` in a thread, with the live task re-check worker as under ``serve``."""
    app = create_app(settings, db=db)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="e2e-uvicorn", daemon=True)
    thread.start()
    checker = start_live_checks(db, app.state.fhir)
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the live server did not start")
        time.sleep(0.05)
    try:
        yield app
    finally:
        checker.stop()
        server.should_exit = True
        thread.join(timeout=30)


def _settings(data_dir: Path, port: int) -> Settings:
    url = f"http://127.0.0.1:{port}"
    return Settings(
        database_url=f"sqlite:///{data_dir / 'ehr.db'}", admin_token="e2e-admin-token", data_dir=data_dir, base_url=url
    )


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the session, seeded like ``serve``'s first start (the demo cohort)."""
    # Sign-ins hash passwords: test-sized argon2 costs keep that to milliseconds.
    saved_hasher = passwords._hasher
    passwords._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    data_dir = tmp_path_factory.mktemp("live-server")
    port = _free_port()
    settings = _settings(data_dir, port)
    db = Database(settings.database_url)
    try:
        with _serving(settings, db, port) as app:
            demo = create_demo(db, app.state.fhir, data_dir)
            yield LiveServer(settings.public_base, app, db, demo)
    finally:
        passwords._hasher = saved_hasher


@pytest.fixture
def fresh_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveServer]:
    """A server of the test's own over an empty store, for tests that set up their own people and cohorts."""
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    port = _free_port()
    settings = _settings(tmp_path, port)
    db = Database(settings.database_url)
    with _serving(settings, db, port) as app:
        yield LiveServer(settings.public_base, app, db)


@pytest.fixture
def page(browser: playwright_api.Browser) -> Iterator[playwright_api.Page]:
    context = browser.new_context(viewport={"width": 1366, "height": 768})  # a laptop screen
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("EHR_SANDBOX_E2E_ARTIFACTS")
    path = Path(configured) if configured else tmp_path_factory.mktemp("e2e-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def app_origin() -> Iterator[str]:
    """The base URL of a local app that shows the ``iss`` it was launched with, on a port of its own."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            query = parse_qs(urlsplit(self.path).query)
            body = f'<p id="launched">launched with iss {escape(query.get("iss", ["?"])[0])}</p>'
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
