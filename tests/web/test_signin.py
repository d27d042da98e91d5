"""Signing in to the web UI: the sign-in form, session cookies, CSRF, expiry, redirects, roles.

The session cookie is for the web pages only: the FHIR and admin APIs keep answering 401 to it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import select

from sandbox.accounts.cohorts import create_cohort
from sandbox.accounts.roster import RosterLine
from sandbox.accounts.sessions import session_key
from sandbox.accounts.users import User, create_user, delete_user, set_password
from sandbox.app import create_app
from sandbox.config import Settings
from sandbox.store.database import Database
from sandbox.store.schema import web_sessions
from tests.conftest import ADMIN_TOKEN
from web.csrf import LOGIN_COOKIE
from web.signin import SESSION_COOKIE

PASSWORD = "correct horse battery"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock(app: FastAPI) -> Clock:
    clock = Clock()
    app.state.web.clock = clock
    return clock


def make_user(db: Database, name: str, email: str, role: str) -> User:
    with db.write() as conn:
        return create_user(conn, name, email, role, password=PASSWORD)


@pytest.fixture
def ann(db: Database) -> User:
    return make_user(db, "Ann Trainee", "ann@example.org", "trainee")


def login_token(client: TestClient, path: str = "/login") -> str:
    page = client.get(path)
    assert page.status_code == 200
    field = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert field is not None
    assert field.group(1) == client.cookies.get(LOGIN_COOKIE)
    return field.group(1)


def sign_in(client: TestClient, email: str, password: str = PASSWORD, next_path: str | None = None) -> Response:
    data = {"email": email, "password": password, "csrf_token": login_token(client)}
    if next_path is not None:
        data["next"] = next_path
    return client.post("/login", data=data, follow_redirects=False)


def page_token(client: TestClient) -> str:
    home = client.get("/")
    assert home.status_code == 200
    field = re.search(r'name="csrf_token" value="([^"]+)"', home.text)
    assert field is not None
    return field.group(1)


def set_cookie_headers(response: Response, name: str) -> list[str]:
    return [h for h in response.headers.get_list("set-cookie") if h.startswith(name + "=")]


def live_sessions(db: Database) -> int:
    with db.read() as conn:
        return len(conn.execute(select(web_sessions)).all())


# ---- signing in -------------------------------------------------------------------------------------


def test_pages_send_whoever_is_not_signed_in_to_the_sign_in_form(client: TestClient) -> None:
    home = client.get("/", follow_redirects=False)
    assert home.status_code == 303
    assert home.headers["location"] == "/login"
    trainer = client.get("/trainer?week=2", follow_redirects=False)
    assert trainer.headers["location"] == "/login?next=%2Ftrainer%3Fweek%3D2"


def test_signing_in_starts_a_session_with_a_locked_down_cookie(client: TestClient, db: Database, ann: User) -> None:
    answer = sign_in(client, "Ann@Example.org")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/"
    [cookie] = set_cookie_headers(answer, SESSION_COOKIE)
    flags = [part.strip().lower() for part in cookie.split(";")[1:]]
    assert "httponly" in flags
    assert "samesite=lax" in flags
    assert "path=/" in flags
    assert "max-age=43200" in flags  # the absolute expiry: 12 hours
    assert "secure" not in flags  # plain http here
    assert live_sessions(db) == 1

    home = client.get("/")
    assert home.status_code == 200
    assert "Ann Trainee" in home.text
    assert '<span id="role">trainee</span>' in home.text


def test_the_cookie_is_secure_when_the_public_url_is_https(db: Database, tmp_path: Path, ann: User) -> None:
    settings = Settings(
        database_url=db.url, admin_token=ADMIN_TOKEN, data_dir=tmp_path, base_url="https://ehr.example.org"
    )
    with TestClient(create_app(settings, db=db), base_url="http://testserver") as client:
        form = client.get("/login")
        [login_cookie] = set_cookie_headers(form, LOGIN_COOKIE)
        assert "secure" in [part.strip().lower() for part in login_cookie.split(";")]
        token = login_token(client)
        # The proxy in front speaks https to browsers; this client speaks http, so it would hold back a Secure cookie.
        answer = client.post(
            "/login",
            data={"email": ann.email, "password": PASSWORD, "csrf_token": token},
            headers={"Cookie": f"{LOGIN_COOKIE}={token}"},
            follow_redirects=False,
        )
    assert answer.status_code == 303
    [cookie] = set_cookie_headers(answer, SESSION_COOKIE)
    assert "secure" in [part.strip().lower() for part in cookie.split(";")]


def test_the_cookie_is_secure_when_the_request_came_over_https(app: FastAPI, ann: User) -> None:
    with TestClient(app, base_url="https://testserver") as client:
        answer = sign_in(client, ann.email)
    [cookie] = set_cookie_headers(answer, SESSION_COOKIE)
    assert "secure" in [part.strip().lower() for part in cookie.split(";")]


def test_the_database_keeps_only_a_hash_of_the_session_secret(client: TestClient, db: Database, ann: User) -> None:
    secret = sign_in(client, ann.email).cookies[SESSION_COOKIE]
    with db.read() as conn:
        [row] = conn.execute(select(web_sessions)).all()
    assert secret not in tuple(str(v) for v in row)
    assert row.session_hash == session_key(secret)
    assert row.user_id == ann.id


@pytest.mark.parametrize(("email", "password"), [("ann@example.org", "wrong password"), ("bob@example.org", PASSWORD)])
def test_a_wrong_email_or_password_gets_the_form_again_and_no_session(
    client: TestClient, db: Database, ann: User, email: str, password: str
) -> None:
    answer = sign_in(client, email, password)
    assert answer.status_code == 401
    assert "Incorrect email or password." in answer.text  # the same words whichever was wrong
    assert 'name="password"' in answer.text
    assert set_cookie_headers(answer, SESSION_COOKIE) == []
    assert live_sessions(db) == 0
    assert client.get("/", follow_redirects=False).status_code == 303


def test_a_user_without_a_password_cannot_sign_in(client: TestClient, db: Database) -> None:
    with db.write() as conn:
        create_user(conn, "No Password", "nopw@example.org", "trainee")
    assert sign_in(client, "nopw@example.org", "").status_code == 401
    assert sign_in(client, "nopw@example.org", "anything at all").status_code == 401


def test_repeated_failures_lock_the_email_out_for_a_while(
    client: TestClient, app: FastAPI, clock: Clock, ann: User
) -> None:
    for _ in range(app.state.web.throttle.per_email):
        assert sign_in(client, ann.email, "wrong password").status_code == 401
    locked = sign_in(client, ann.email)  # even the right password: it is not checked during the lockout
    assert locked.status_code == 429
    assert "Too many failed sign-ins" in locked.text
    assert int(locked.headers["retry-after"]) > 0
    assert set_cookie_headers(locked, SESSION_COOKIE) == []

    clock.advance(minutes=5, seconds=1)
    assert sign_in(client, ann.email).status_code == 303


def test_csrf_on_the_sign_in_form(client: TestClient, db: Database, ann: User) -> None:
    token = login_token(client)
    credentials = {"email": ann.email, "password": PASSWORD}
    missing_field = client.post("/login", data=credentials, follow_redirects=False)
    wrong_field = client.post("/login", data={**credentials, "csrf_token": token + "x"}, follow_redirects=False)
    client.cookies.delete(LOGIN_COOKIE)
    missing_cookie = client.post("/login", data={**credentials, "csrf_token": token}, follow_redirects=False)
    for answer in (missing_field, wrong_field, missing_cookie):
        assert answer.status_code == 403
        assert set_cookie_headers(answer, SESSION_COOKIE) == []
    assert live_sessions(db) == 0


def test_signing_in_never_keeps_an_identifier_from_before(client: TestClient, db: Database, ann: User) -> None:
    # A cookie planted before sign-in (session fixation) is not adopted: the session gets a new secret.
    client.cookies.set(SESSION_COOKIE, "chosen-by-an-attacker", domain="testserver.local")
    token = login_token(client)
    credentials = {"email": ann.email, "password": PASSWORD, "csrf_token": token}
    first = client.post("/login", data=credentials, follow_redirects=False).cookies[SESSION_COOKIE]
    assert first != "chosen-by-an-attacker"
    assert client.cookies.get(LOGIN_COOKIE) is None  # the pre-login token is dropped once signed in
    # The same form posted again (another person at the same browser): a new session, and the old one is over.
    client.cookies.set(LOGIN_COOKIE, token, domain="testserver.local")
    second = client.post("/login", data=credentials, follow_redirects=False).cookies[SESSION_COOKIE]
    assert second != first
    with db.read() as conn:
        assert conn.execute(select(web_sessions.c.session_hash)).scalars().all() == [session_key(second)]


def test_a_signed_in_visit_to_the_sign_in_page_goes_on(client: TestClient, ann: User) -> None:
    sign_in(client, ann.email)
    answer = client.get("/login?next=/trainer", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/trainer"


# ---- where signing in leads -------------------------------------------------------------------------


def test_signing_in_returns_to_the_page_asked_for(client: TestClient, ann: User) -> None:
    assert sign_in(client, ann.email, next_path="/trainer?week=2").headers["location"] == "/trainer?week=2"


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example/",
        "\\\\evil.example",
        "javascript:alert(1)",
        "http:/evil.example",
        "evil.example",
        "/ok\r\nSet-Cookie: x=1",
        "/\tevil",
    ],
)
def test_signing_in_never_sends_anyone_off_site(client: TestClient, ann: User, target: str) -> None:
    answer = sign_in(client, ann.email, next_path=target)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/"
    assert client.get("/login", params={"next": target}, follow_redirects=False).headers["location"] == "/"


# ---- signing out and session expiry ----------------------------------------------------------------


def test_signing_out_ends_the_session_on_the_server(client: TestClient, db: Database, ann: User) -> None:
    secret = sign_in(client, ann.email).cookies[SESSION_COOKIE]
    answer = client.post("/logout", data={"csrf_token": page_token(client)}, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login"
    [cleared] = set_cookie_headers(answer, SESSION_COOKIE)
    assert "max-age=0" in cleared.lower()
    assert live_sessions(db) == 0
    # A copy of the cookie kept elsewhere opens nothing.
    client.cookies.set(SESSION_COOKIE, secret, domain="testserver.local")
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"


def test_csrf_on_the_sign_out_form(client: TestClient, db: Database, ann: User) -> None:
    sign_in(client, ann.email)
    token = page_token(client)
    assert client.post("/logout", follow_redirects=False).status_code == 403
    assert client.post("/logout", data={"csrf_token": "x" + token}, follow_redirects=False).status_code == 403
    # The pre-login double-submit token is no substitute for the session's own.
    client.cookies.set(LOGIN_COOKIE, "planted", domain="testserver.local")
    assert client.post("/logout", data={"csrf_token": "planted"}, follow_redirects=False).status_code == 403
    assert live_sessions(db) == 1
    assert client.get("/").status_code == 200
    assert client.post("/logout", headers={"X-CSRF-Token": token}, follow_redirects=False).status_code == 303


def test_a_session_ends_after_being_idle(client: TestClient, clock: Clock, ann: User) -> None:
    sign_in(client, ann.email)
    for _ in range(3):  # three hours of activity, each step inside the two-hour idle limit
        clock.advance(minutes=59)
        assert client.get("/", follow_redirects=False).status_code == 200
    clock.advance(hours=2, seconds=1)
    answer = client.get("/", follow_redirects=False)
    assert answer.status_code == 303
    assert "max-age=0" in set_cookie_headers(answer, SESSION_COOKIE)[0].lower()


def test_a_session_ends_at_its_absolute_limit_however_active(client: TestClient, clock: Clock, ann: User) -> None:
    sign_in(client, ann.email)
    for _ in range(11):
        clock.advance(hours=1)
        assert client.get("/", follow_redirects=False).status_code == 200
    clock.advance(minutes=59, seconds=59)
    assert client.get("/", follow_redirects=False).status_code == 200
    clock.advance(seconds=1)
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"


def test_changing_the_password_signs_the_user_out_everywhere(
    app: FastAPI, client: TestClient, db: Database, ann: User
) -> None:
    sign_in(client, ann.email)
    with TestClient(app) as other_browser:
        sign_in(other_browser, ann.email)
        assert live_sessions(db) == 2
        with db.write() as conn:
            set_password(conn, ann.id, "a new password")
        assert other_browser.get("/", follow_redirects=False).status_code == 303
    assert client.get("/", follow_redirects=False).status_code == 303
    assert live_sessions(db) == 0


def test_deleting_a_user_ends_their_sessions(client: TestClient, db: Database, ann: User) -> None:
    sign_in(client, ann.email)
    with db.write() as conn:
        delete_user(conn, ann.id)
    assert live_sessions(db) == 0
    assert client.get("/", follow_redirects=False).status_code == 303


# ---- pages and roles ------------------------------------------------------------------------------


@pytest.fixture
def classroom(db: Database, ann: User) -> Iterator[dict[str, object]]:
    """Two trainers, each with a cohort; Ann is in Tom's."""
    tom = make_user(db, "Tom Trainer", "tom@example.org", "trainer")
    tia = make_user(db, "Tia Trainer", "tia@example.org", "trainer")
    with db.write() as conn:
        toms = create_cohort(conn, "Tom's week", tom.id, roster=[RosterLine(ann.name, ann.email)])
        tias = create_cohort(conn, "Tia's week", tia.id, roster=[RosterLine("Other", "other@example.org")])
    yield {"tom": tom, "toms": toms, "tias": tias}


def test_home_lists_the_sandboxes_the_user_reaches(client: TestClient, ann: User, classroom: dict) -> None:
    sign_in(client, ann.email)
    home = client.get("/").text
    own = classroom["toms"].members[0].sandbox_id
    other = classroom["tias"].members[0].sandbox_id
    assert f'href="http://testserver/sandboxes/{own}/fhir"' in home
    assert 'href="http://testserver/fhir"' in home
    assert other not in home
    assert 'action="/logout"' in home


def test_a_trainee_may_not_open_the_trainer_page(client: TestClient, ann: User, classroom: dict) -> None:
    sign_in(client, ann.email)
    answer = client.get("/trainer")
    assert answer.status_code == 403
    assert "Tom's week" not in answer.text


def test_a_trainer_sees_their_own_cohorts_only(client: TestClient, classroom: dict) -> None:
    sign_in(client, "tom@example.org")
    page = client.get("/trainer")
    assert page.status_code == 200
    assert "Tom&#39;s week" in page.text  # autoescaped
    assert "Tia&#39;s week" not in page.text


def test_names_are_escaped_on_pages(client: TestClient, db: Database) -> None:
    make_user(db, "<script>alert(1)</script>", "mallory@example.org", "vendor")
    sign_in(client, "mallory@example.org")
    home = client.get("/").text
    assert "<script>" not in home
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in home


def test_web_responses_carry_security_headers(client: TestClient, ann: User) -> None:
    answers = [client.get("/login"), client.get("/", follow_redirects=False), client.post("/login", data={})]
    sign_in(client, ann.email)
    answers += [client.get("/"), client.get("/trainer")]
    assert [a.status_code for a in answers] == [200, 303, 403, 200, 403]
    for answer in answers:
        assert "default-src 'self'" in answer.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "same-origin"


# ---- the APIs stay bearer-token only ----------------------------------------------------------------


def test_the_session_cookie_does_not_open_the_apis(client: TestClient, db: Database, classroom: dict) -> None:
    make_user(db, "Ada Admin", "ada@example.org", "admin")
    sign_in(client, "ada@example.org")
    assert client.get("/").status_code == 200
    assert client.get("/admin/sandboxes").status_code == 401
    assert client.post("/admin/sandboxes", json={"name": "sneaky"}).status_code == 401

    client.cookies.clear()
    sign_in(client, "ann@example.org")
    own = classroom["toms"].members[0].sandbox_id
    assert client.get(f"/sandboxes/{own}/fhir/Patient").status_code == 401
    created = client.post(f"/sandboxes/{own}/fhir/Patient", json={"resourceType": "Patient"})
    assert created.status_code == 401


def test_an_admin_sees_every_cohort(client: TestClient, db: Database, classroom: dict) -> None:
    make_user(db, "Ada Admin", "ada@example.org", "admin")
    sign_in(client, "ada@example.org")
    page = client.get("/trainer")
    assert page.status_code == 200
    assert "Tom&#39;s week" in page.text
    assert "Tia&#39;s week" in page.text


def test_the_sign_in_form_carries_the_next_path_escaped(client: TestClient) -> None:
    form = client.get("/login", params={"next": '/trainer?a="><script>'}).text
    assert 'name="next" value="/trainer?a=&#34;&gt;&lt;script&gt;"' in form


def test_signing_out_without_a_session_just_goes_to_the_sign_in_form(client: TestClient) -> None:
    answer = client.post("/logout", data={"csrf_token": "anything"}, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login"


def test_an_overlong_password_is_refused_before_hashing(client: TestClient, db: Database, ann: User) -> None:
    answer = sign_in(client, ann.email, "x" * 5000)
    assert answer.status_code == 401
    assert "Incorrect email or password." in answer.text
    assert live_sessions(db) == 0
