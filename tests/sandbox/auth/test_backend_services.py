"""SMART Backend Services: client_credentials with a private_key_jwt client assertion and system/ scopes.

The keys are generated here; the client's public keys are registered by value, or served from a JWKS URL by a
real HTTP server on a local socket.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import event, func, insert, select, update

from sandbox.auth.sweep import sweep_expired
from sandbox.auth.tokens import stamp
from sandbox.store.database import Database
from sandbox.store.schema import smart_assertions
from tests.sandbox.auth.smart import ADMIN, Chart, auth_base, bearer, fhir_base, make_chart

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_URL = f"{auth_base('smart')}/token"


@pytest.fixture
def chart(client: TestClient) -> Chart:
    return make_chart(client)


@pytest.fixture(scope="module")
def rsa_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "rsa-1"}, private=True)


@pytest.fixture(scope="module")
def ec_key() -> ECKey:
    return ECKey.generate_key("P-384", parameters={"kid": "ec-1"}, private=True)


def assertion(key: Any, alg: str, client_id: str = "backend", **claims: Any) -> str:
    body = {
        "iss": client_id,
        "sub": client_id,
        "aud": TOKEN_URL,
        "exp": int(time.time()) + 240,
        "jti": str(uuid.uuid4()),
        **claims,
    }
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, body, key, algorithms=[alg])


def token_request(client: TestClient, signed: str, scope: str = "system/Observation.rs") -> Any:
    return client.post(
        TOKEN_URL,
        data={
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": signed,
        },
    )


def register_backend(client: TestClient, **keys: Any) -> None:
    body = {"client_id": "backend", "scopes": "system/Observation.rs system/Patient.r", "public": False, **keys}
    r = client.post("/admin/clients", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text
    assert r.json()["type"] == "confidential-asymmetric" and "client_secret" not in r.json()


def test_a_backend_service_gets_a_system_token(client: TestClient, chart: Chart, rsa_key: RSAKey) -> None:
    register_backend(client, jwks={"keys": [rsa_key.as_dict(private=False)]})
    r = token_request(client, assertion(rsa_key, "RS384"))
    assert r.status_code == 200, r.text
    token = r.json()
    assert token["scope"] == "system/Observation.rs" and "refresh_token" not in token and "patient" not in token
    headers = bearer(token["access_token"])
    found = client.get(f"{fhir_base('smart')}/Observation", headers=headers).json()
    assert {e["resource"]["id"] for e in found["entry"]} == {chart.ann_vital, chart.ann_lab, chart.bob_vital}
    assert client.get(f"{fhir_base('smart')}/Condition", headers=headers).status_code == 403
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "pulse"}}
    write = client.post(f"{fhir_base('smart')}/Observation", json=observation, headers=headers)
    assert write.status_code == 403


def test_assertions_are_checked(client: TestClient, chart: Chart, rsa_key: RSAKey, ec_key: ECKey) -> None:
    register_backend(client, jwks={"keys": [rsa_key.as_dict(private=False)]})
    signed = assertion(rsa_key, "RS384")
    assert token_request(client, signed).status_code == 200
    cases = {
        "replayed jti": signed,
        "wrong aud": assertion(rsa_key, "RS384", aud="https://elsewhere.example.org/token"),
        "expired": assertion(rsa_key, "RS384", exp=int(time.time()) - 10),
        "exp too far ahead": assertion(rsa_key, "RS384", exp=int(time.time()) + 3600),
        "no jti": jwt.encode(
            {"alg": "RS384", "kid": "rsa-1"},
            {"iss": "backend", "sub": "backend", "aud": TOKEN_URL, "exp": int(time.time()) + 60},
            rsa_key,
            algorithms=["RS384"],
        ),
        "sub differs": assertion(rsa_key, "RS384", sub="someone"),
        "unregistered key": assertion(ec_key, "ES384"),
        "not a JWT": "not-a-jwt",
    }
    for case, value in cases.items():
        r = token_request(client, value)
        assert (r.status_code, r.json()["error"]) == (401, "invalid_client"), case
    scope = token_request(client, assertion(rsa_key, "RS384"), scope="patient/Observation.rs")
    assert scope.status_code == 400 and scope.json()["error"] == "invalid_scope"
    wider = token_request(client, assertion(rsa_key, "RS384"), scope="system/Condition.rs")
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"


@pytest.fixture
def jwks_server(ec_key: ECKey) -> Iterator[str]:
    body = json.dumps({"keys": [ec_key.as_dict(private=False)]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    server.shutdown()
    server.server_close()


def test_keys_from_a_jwks_url(client: TestClient, chart: Chart, ec_key: ECKey, jwks_server: str) -> None:
    register_backend(client, jwks_url=jwks_server)
    r = token_request(client, assertion(ec_key, "ES384"), scope="system/Patient.r")
    assert r.status_code == 200, r.text
    headers = bearer(r.json()["access_token"])
    assert client.get(f"{fhir_base('smart')}/Patient/{chart.bob}", headers=headers).status_code == 200
    assert client.get(f"{fhir_base('smart')}/Patient", headers=headers).status_code == 403  # r, not s


def test_only_clients_with_keys_use_client_credentials(client: TestClient, chart: Chart) -> None:
    r = client.post(
        "/admin/clients",
        json={
            "client_id": "conf",
            "redirect_uris": ["https://a.example.org/cb"],
            "scopes": "system/*.rs",
            "public": False,
        },
        headers=ADMIN,
    )
    secret = r.json()["client_secret"]
    answer = client.post(
        TOKEN_URL, data={"grant_type": "client_credentials", "scope": "system/*.rs"}, auth=("conf", secret)
    )
    assert answer.status_code == 400 and answer.json()["error"] == "unauthorized_client"


def test_a_jti_is_refused_while_its_assertion_lives_and_swept_after(
    app: Any, client: TestClient, db: Database, chart: Chart, rsa_key: RSAKey
) -> None:
    register_backend(client, jwks={"keys": [rsa_key.as_dict(private=False)]})
    now = datetime.now(UTC)
    signed = assertion(rsa_key, "RS384", jti="once", exp=int(now.timestamp()) + 240)
    assert token_request(client, signed).status_code == 200
    assert token_request(client, assertion(rsa_key, "RS384", jti="twice")).status_code == 200
    assert sweep_expired(db, now)["smart_assertions"] == 0  # both still live
    for replay in (signed, assertion(rsa_key, "RS384", jti="once")):  # the same, or a new one with its jti
        r = token_request(client, replay)
        assert r.status_code == 401 and "already used" in r.json()["error_description"]
    assert _assertions(db) == 2
    # Ten minutes on: the assertions have expired and go; a replay fails on exp, as before.
    later = now + timedelta(minutes=10)
    app.state.smart.policy.clock = lambda: later
    assert sweep_expired(db, later)["smart_assertions"] == 2
    assert _assertions(db) == 0
    r = token_request(client, signed)
    assert r.status_code == 401 and "expired" in r.json()["error_description"]
    # The jti of an expired assertion may come again, whether or not the sweep has been yet.
    fresh = assertion(rsa_key, "RS384", jti="twice", exp=int(later.timestamp()) + 240)
    assert token_request(client, fresh).status_code == 200
    again = assertion(rsa_key, "RS384", jti="twice", exp=int(later.timestamp()) + 250)
    assert token_request(client, again).status_code == 401
    with db.write() as conn:  # as if it had expired before any sweep came
        conn.execute(update(smart_assertions).values(expires_at=stamp(later - timedelta(seconds=1))))
    assert token_request(client, again).status_code == 200
    assert _assertions(db) == 1


@pytest.mark.parametrize("endpoint", ["token", "introspect", "revoke"])
def test_a_jti_used_by_a_racing_request_is_refused_not_an_error(
    client: TestClient, db: Database, chart: Chart, rsa_key: RSAKey, endpoint: str
) -> None:
    """Two requests with one jti both find it unused; the second to insert it is refused with 401."""
    if db.is_sqlite:
        pytest.skip("SQLite runs one writer at a time: the two requests cannot interleave")
    register_backend(client, jwks={"keys": [rsa_key.as_dict(private=False)]})
    signed = assertion(rsa_key, "RS384", jti="raced")

    raced: list[bool] = []

    def the_other_request_inserts_first(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if statement.startswith("INSERT INTO smart_assertions") and not raced:
            raced.append(True)
            with db.write() as other:
                other.execute(insert(smart_assertions).values(client_id="backend", jti="raced", expires_at="9999"))

    event.listen(db.engine, "before_cursor_execute", the_other_request_inserts_first)
    assertion_form = {"client_assertion_type": ASSERTION_TYPE, "client_assertion": signed}
    try:
        if endpoint == "token":
            r = token_request(client, signed)
        else:
            r = client.post(f"{auth_base('smart')}/{endpoint}", data={"token": "unknown", **assertion_form})
    finally:
        event.remove(db.engine, "before_cursor_execute", the_other_request_inserts_first)
    assert raced
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "invalid_client" and "already used" in r.json()["error_description"]
    assert _assertions(db) == 1


def _assertions(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(smart_assertions)).scalar_one())
