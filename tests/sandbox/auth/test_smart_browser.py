"""A real browser approves a standalone launch: Chromium signs in, picks a patient on the consent page and
clicks Allow, and the consent page's form may lead to the app (Chromium applies the page's CSP form-action to
the redirect that follows the form).  The app's redirect URI is a local HTTP server that records the callback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from sandbox.accounts.users import create_user
from sandbox.store.database import Database
from tests.conftest import ADMIN_TOKEN
from tests.sandbox.auth.conftest import Live
from tests.sandbox.auth.smart import pkce
from tests.web.test_signin import PASSWORD

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def callback() -> Iterator[tuple[str, list[dict[str, list[str]]]]]:
    seen: list[dict[str, list[str]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if urlsplit(self.path).path == "/callback":  # not the browser's /favicon.ico
                seen.append(parse_qs(urlsplit(self.path).query))
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<p>callback received</p>")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/callback", seen
    server.shutdown()
    server.server_close()


def test_a_person_approves_a_standalone_launch_in_chromium(live: Live, db: Database, browser: Any, callback) -> None:
    redirect_uri, seen = callback
    with db.write() as conn:
        create_user(conn, "Nora Nurse", "nurse@example.org", "trainee", password=PASSWORD)
    http = httpx.Client(base_url=live.root)
    base = f"{live.root}/fhir"
    ids = {}
    for family in ("Ames", "Baker"):
        r = http.post(f"{base}/Patient", json={"resourceType": "Patient", "name": [{"family": family}]}, headers=ADMIN)
        ids[family] = r.json()["id"]
    scope = "launch/patient patient/*.rs"
    client = {"client_id": "web-app", "redirect_uris": [redirect_uri], "scopes": scope, "public": True}
    assert http.post("/admin/clients", json=client, headers=ADMIN).status_code == 201
    verifier, challenge = pkce()
    query = {
        "response_type": "code",
        "client_id": "web-app",
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": "browser-state",
        "aud": base,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    page = browser.new_page()
    try:
        page.goto(f"{live.root}/auth/authorize?{urlencode(query)}")
        page.fill("#email", "nurse@example.org")  # sent to sign in first, then back to the request
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector("#patients")
        page.check(f"input[name=patient][value='{ids['Baker']}']")
        page.click("button[value=approve]")
        page.wait_for_url(redirect_uri + "*")
    finally:
        page.close()
    assert len(seen) == 1 and seen[0]["state"] == ["browser-state"]
    token = http.post(
        "/auth/token",
        data={
            "grant_type": "authorization_code",
            "code": seen[0]["code"][0],
            "redirect_uri": redirect_uri,
            "client_id": "web-app",
            "code_verifier": verifier,
        },
    ).json()
    assert token["patient"] == ids["Baker"]
    http.close()
