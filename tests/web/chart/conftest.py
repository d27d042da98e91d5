"""Fixtures for the trainee EHR's route tests: the demo cohort (training-case baseline, a trainer, two trainees)
and a TestClient signed in as a trainee."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sandbox.demo import Demo, create_demo
from web.csrf import LOGIN_COOKIE


@pytest.fixture
def demo(app: FastAPI, tmp_path: Path) -> Demo:
    return create_demo(app.state.db, app.state.fhir, tmp_path / "demo")


def password_of(demo: Demo, email: str) -> str:
    return next(password for e, _role, password in demo.accounts if e == email)


def sign_in(client: TestClient, demo: Demo, email: str) -> str:
    """Sign the client in; answers the session's CSRF token (every signed-in page carries it)."""
    client.get("/login")
    response = client.post(
        "/login",
        data={"email": email, "password": password_of(demo, email), "csrf_token": client.cookies[LOGIN_COOKIE]},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/").text)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


@pytest.fixture
def ada(client: TestClient, demo: Demo) -> str:
    """The client, signed in as the trainee Ada; answers her CSRF token."""
    return sign_in(client, demo, "ada@demo.invalid")


@pytest.fixture
def ada_sandbox(demo: Demo) -> str:
    return demo.sandboxes["ada@demo.invalid"]
