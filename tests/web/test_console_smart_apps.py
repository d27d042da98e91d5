"""The vendor console's SMART apps page: register, list, delete apps and switch their faults, each vendor its own."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from sandbox.auth.clients import find_client, list_clients, secret_matches
from sandbox.store.database import Database
from tests.web.console_data import csrf_token, make_user, sign_in

PAGE = "/vendor/smart-apps"


@pytest.fixture
def people(db: Database) -> None:
    make_user(db, "Acme Apps", "dev@acme.example", "vendor")
    make_user(db, "Other Apps", "dev@other.example", "vendor")
    make_user(db, "Ann Admin", "admin@example.org", "admin")
    make_user(db, "Tess Trainee", "tess@example.org", "trainee")


def register(client: TestClient, **fields: str) -> object:
    form = {
        "csrf_token": csrf_token(client, PAGE),
        "client_id": "acme-app",
        "kind": "public",
        "redirect_uris": "https://app.acme.example/callback",
        "launch_url": "https://app.acme.example/launch",
        "scopes": "launch openid fhirUser patient/*.rs",
    } | fields
    return client.post(PAGE, data=form, follow_redirects=False)


def test_a_vendor_registers_a_public_app_and_sees_it_listed(client: TestClient, db: Database, people: None) -> None:
    sign_in(client, "dev@acme.example")
    answer = register(client, auto_approve="on")
    assert answer.status_code == 303  # type: ignore[attr-defined]
    page = client.get(answer.headers["location"])  # type: ignore[attr-defined]
    assert "App registered." in page.text
    assert '<tr data-client="acme-app">' in page.text and "https://app.acme.example/launch" in page.text
    with db.read() as conn:
        app = find_client(conn, "acme-app")
    assert app is not None and app.public and app.auto_approve
    assert app.redirect_uris == ("https://app.acme.example/callback",)
    assert app.launch_url == "https://app.acme.example/launch"
    assert "SMART apps" in client.get("/vendor").text  # in the console's navigation


def test_a_confidential_apps_secret_is_shown_once(client: TestClient, db: Database, people: None) -> None:
    sign_in(client, "dev@acme.example")
    answer = register(client, kind="confidential")
    assert answer.status_code == 200  # type: ignore[attr-defined]
    text = answer.text  # type: ignore[attr-defined]
    assert "shown this once" in text
    secret = text.split("The client secret of <code>acme-app</code> is <code>")[1].split("</code>")[0]
    with db.read() as conn:
        assert secret_matches(conn, "acme-app", secret)
    assert secret not in client.get(PAGE).text


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"redirect_uris": "not-a-url"}, "redirect_uris", "absolute http(s) URL"),
        ({"redirect_uris": ""}, "redirect_uris", "at least one URL"),
        ({"client_id": "bad id!"}, "client_id", "client_id is 1-200 characters"),
        ({"scopes": "patient/Nothing.rs"}, "scopes", ""),
        ({"launch_url": "ftp://x"}, "launch_url", "launch_url must be"),
        ({"kind": "confidential", "jwks": "{not json"}, "jwks", "not JSON"),
        ({"kind": "confidential", "jwks": '{"keys": [{"kty": "RSA", "d": "x"}]}'}, "jwks", "private key"),
        ({"jwks_url": "https://keys.example/jwks"}, "kind", "public client has no keys"),
    ],
)
def test_a_bad_registration_shows_the_error_beside_the_field_and_registers_nothing(
    client: TestClient, db: Database, people: None, fields: dict[str, str], field: str, message: str
) -> None:
    sign_in(client, "dev@acme.example")
    answer = register(client, **fields)
    assert answer.status_code == 400  # type: ignore[attr-defined]
    text = answer.text  # type: ignore[attr-defined]
    assert f'id="{field}-error">' in text and message in text.split(f'id="{field}-error">')[1].split("</span>")[0]
    assert f'aria-describedby="{field}-error"' in text
    with db.read() as conn:
        assert list_clients(conn) == []


def test_a_client_id_already_taken_is_refused_beside_the_client_id(client: TestClient, people: None) -> None:
    sign_in(client, "dev@acme.example")
    register(client)
    answer = register(client)
    assert answer.status_code == 400  # type: ignore[attr-defined]
    assert "already registered" in answer.text.split('id="client_id-error">')[1]  # type: ignore[attr-defined]


def test_faults_are_switched_on_and_off(client: TestClient, db: Database, people: None) -> None:
    sign_in(client, "dev@acme.example")
    register(client)
    token = csrf_token(client, PAGE)
    on = {"csrf_token": token, "fault": ["expired_token", "denied_consent"]}
    assert client.post(f"{PAGE}/acme-app/faults", data=on, follow_redirects=False).status_code == 303
    with db.read() as conn:
        assert find_client(conn, "acme-app").faults == {"expired_token", "denied_consent"}  # type: ignore[union-attr]
    bad = {"csrf_token": token, "fault": ["made_up"]}
    assert client.post(f"{PAGE}/acme-app/faults", data=bad).status_code == 400
    assert client.post(f"{PAGE}/acme-app/faults", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    with db.read() as conn:
        assert find_client(conn, "acme-app").faults == frozenset()  # type: ignore[union-attr]


def test_vendors_see_and_change_only_their_own_apps_and_admins_all(
    client: TestClient, db: Database, people: None, admin_headers: dict[str, str]
) -> None:
    sign_in(client, "dev@acme.example")
    register(client)
    api_app = {
        "client_id": "ci-app",
        "redirect_uris": ["https://ci.example/cb"],
        "scopes": "patient/*.rs",
        "public": True,
    }
    assert client.post("/admin/clients", json=api_app, headers=admin_headers).status_code == 201
    assert "ci-app" not in client.get(PAGE).text
    client.cookies.clear()
    sign_in(client, "dev@other.example")
    assert "acme-app" not in client.get(PAGE).text
    token = csrf_token(client, PAGE)
    assert client.post(f"{PAGE}/acme-app/delete", data={"csrf_token": token}).status_code == 403
    assert (
        client.post(f"{PAGE}/acme-app/faults", data={"csrf_token": token, "fault": "expired_token"}).status_code == 403
    )
    assert client.post(f"{PAGE}/nobody/delete", data={"csrf_token": token}).status_code == 404
    client.cookies.clear()
    sign_in(client, "admin@example.org")
    page = client.get(PAGE).text
    assert '<tr data-client="acme-app">' in page and '<tr data-client="ci-app">' in page
    token = csrf_token(client, PAGE)
    assert client.post(f"{PAGE}/ci-app/delete", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    with db.read() as conn:
        assert [c.client_id for c in list_clients(conn)] == ["acme-app"]


def test_a_vendor_deletes_its_app(client: TestClient, db: Database, people: None) -> None:
    sign_in(client, "dev@acme.example")
    register(client)
    token = csrf_token(client, PAGE)
    assert client.post(f"{PAGE}/acme-app/delete", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    with db.read() as conn:
        assert list_clients(conn) == [] and list_clients(conn, owner="anyone") == []


def test_trainees_are_refused_and_posts_need_the_csrf_token(client: TestClient, db: Database, people: None) -> None:
    sign_in(client, "tess@example.org")
    assert client.get(PAGE).status_code == 403
    client.cookies.clear()
    sign_in(client, "dev@acme.example")
    form = {"client_id": "x", "kind": "public", "redirect_uris": "https://x.example/cb", "scopes": "patient/*.rs"}
    assert client.post(PAGE, data=form).status_code == 403
    with db.read() as conn:
        assert list_clients(conn) == []
