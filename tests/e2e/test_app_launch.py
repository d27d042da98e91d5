"""A SMART app launched from the chart in Chromium: in an iframe under the patient banner (the page's CSP lets
that frame load the app's origin) and in a new tab (the form's redirect to the app is allowed by form-action).
The app is a local HTTP server on another port (another origin) that shows what it was launched with
(``app_origin``, tests/e2e/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from sandbox.auth.clients import delete_client, register_client
from tests.e2e.conftest import LiveServer

ADA = "ada@demo.invalid"
PATIENT = "chest-pain-cardiology"


@pytest.fixture
def registered_app(live_server: LiveServer, app_origin: str) -> Iterator[str]:
    data = {
        "client_id": "e2e-launch-app",
        "public": True,
        "redirect_uris": [f"{app_origin}/callback"],
        "scopes": "launch openid fhirUser patient/*.rs",
        "launch_url": f"{app_origin}/launch",
    }
    with live_server.db.write() as conn:
        register_client(conn, data)
    yield "e2e-launch-app"
    with live_server.db.write() as conn:  # the live server is shared by the session's browser tests
        delete_client(conn, "e2e-launch-app")


def test_an_app_is_launched_embedded_and_in_a_new_tab(
    live_server: LiveServer, page: Page, registered_app: str, artifacts: Path
) -> None:
    assert live_server.demo is not None
    sandbox = live_server.demo.sandboxes[ADA]
    iss = f"{live_server.url}/sandboxes/{sandbox}/fhir"
    live_server.sign_in(page, ADA)
    page.goto(f"{live_server.url}/chart/{sandbox}/patients/{PATIENT}")

    page.get_by_role("button", name=f"Launch {registered_app} in the chart").click()
    frame = page.frame_locator("#app-frame")
    expect(frame.locator("#launched")).to_have_text(f"launched with iss {iss}")
    expect(page.locator("#banner")).to_be_visible()
    page.screenshot(path=artifacts / "chart-embedded-app.png", full_page=True)

    page.get_by_role("link", name="Close the app").click()
    with page.expect_popup() as popup:
        page.get_by_role("button", name=f"Launch {registered_app} in a new tab").click()
    app_tab = popup.value
    expect(app_tab.locator("#launched")).to_have_text(f"launched with iss {iss}")
    assert "launch=" in app_tab.url
