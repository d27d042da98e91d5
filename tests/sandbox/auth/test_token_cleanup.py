"""SMART launches, codes and tokens do not outlive what they belong to: a deleted sandbox or client takes them
along (a reset keeps them), and the sweep deletes them once expired, in bounded batches, safely from several
workers at once, keeping whatever still answers for something (live refresh tokens, a used code whose grant
lives)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import Table, func, select

from sandbox.app import ensure_default_sandbox
from sandbox.auth.sweep import SmartSweep, sweep_expired
from sandbox.auth.tokens import Grant, OAuthError, SmartPolicy, issue_tokens
from sandbox.config import Settings
from sandbox.store.database import Database
from sandbox.store.sandboxes import create_sandbox, delete_sandbox
from sandbox.store.schema import smart_assertions, smart_codes, smart_launches, smart_tokens
from sandbox.worker import housekeeping, interactions_for
from tasks.live import start_live_checks
from tests.sandbox.auth.smart import (
    ADMIN,
    REDIRECT,
    Chart,
    auth_base,
    authorize_params,
    bearer,
    ehr_launch_token,
    fhir_base,
    launch,
    make_chart,
    pkce,
    redirected,
    register,
)

SCOPES = "launch openid fhirUser offline_access patient/*.rs"
TABLES = (smart_launches, smart_codes, smart_tokens, smart_assertions)
NOTHING = {t.name: 0 for t in TABLES}


@pytest.fixture
def chart(client: TestClient) -> Chart:
    return make_chart(client)


@pytest.fixture
def app_client(client: TestClient) -> dict[str, Any]:
    return register(client, "growth-chart", SCOPES, auto_approve=True)


@pytest.fixture
def frozen(app: Any) -> Iterator[Callable[[timedelta], datetime]]:
    """The server's SMART clock, stopped; ``frozen(delta)`` moves it to that long after the start, and says when."""
    policy = app.state.smart.policy
    start = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def at(delta: timedelta) -> datetime:
        policy.clock = lambda: start + delta
        return start + delta

    at(timedelta(0))
    yield at


def rows(db: Database, table: Table, **where: str) -> int:
    query = select(func.count()).select_from(table)
    for column, value in where.items():
        query = query.where(table.c[column] == value)
    with db.read() as conn:
        return int(conn.execute(query).scalar_one())


def unused_code(client: TestClient, chart: Chart, client_id: str = "growth-chart", scope: str = SCOPES) -> str:
    value = launch(client, client_id, chart.sandbox, chart.ann)["launch"]
    params = authorize_params(client_id, chart.sandbox, scope, pkce()[1], launch=value)
    return redirected(client.get(f"{auth_base(chart.sandbox)}/authorize", params=params, follow_redirects=False))[
        "code"
    ]


def refresh(client: TestClient, sandbox: str, token: str, client_id: str = "growth-chart") -> Any:
    return client.post(
        f"{auth_base(sandbox)}/token",
        data={"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id},
    )


def introspect(client: TestClient, sandbox: str, token: str) -> dict[str, Any]:
    return client.post(f"{auth_base(sandbox)}/introspect", data={"token": token}, headers=ADMIN).json()


def redeem(client: TestClient, sandbox: str, code: str, verifier: str = "v" * 43) -> Any:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": "growth-chart",
        "code_verifier": verifier,
    }
    return client.post(f"{auth_base(sandbox)}/token", data=form)


# ---- deleting a sandbox or a client; resetting a sandbox ------------------------------------------------------


def test_a_deleted_sandbox_takes_its_launches_codes_and_tokens_even_from_a_new_sandbox_of_its_id(
    client: TestClient, db: Database, chart: Chart, app_client: dict[str, Any]
) -> None:
    token = ehr_launch_token(client, chart, "growth-chart", SCOPES)
    pending = launch(client, "growth-chart", "smart", chart.ann)["launch"]
    code = unused_code(client, chart)
    other = make_chart(client, "other")
    kept = ehr_launch_token(client, other, "growth-chart", SCOPES)
    for table in (smart_launches, smart_codes, smart_tokens):
        assert rows(db, table, sandbox_id="smart") > 0 and rows(db, table, sandbox_id="other") > 0

    assert client.delete("/admin/sandboxes/smart", headers=ADMIN).status_code == 204
    before = {t.name: rows(db, t, sandbox_id="other") for t in (smart_launches, smart_codes, smart_tokens)}
    assert all(rows(db, t, sandbox_id="smart") == 0 for t in (smart_launches, smart_codes, smart_tokens))
    r = client.post("/admin/sandboxes", json={"name": "Same id, new sandbox", "id": "smart"}, headers=ADMIN)
    assert r.status_code == 201, r.text

    answer = client.get(f"{fhir_base('smart')}/Patient", headers=bearer(token["access_token"]))
    assert answer.status_code == 401 and 'error="invalid_token"' in answer.headers["www-authenticate"]
    assert answer.json()["resourceType"] == "OperationOutcome"
    assert introspect(client, "smart", token["access_token"]) == {"active": False}
    assert introspect(client, "smart", token["refresh_token"]) == {"active": False}
    again = refresh(client, "smart", token["refresh_token"])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert redeem(client, "smart", code).json()["error"] == "invalid_grant"
    params = authorize_params("growth-chart", "smart", SCOPES, pkce()[1], launch=pending)
    back = redirected(client.get(f"{auth_base('smart')}/authorize", params=params, follow_redirects=False))
    assert back["error"] == "invalid_request" and "launch" in back["error_description"]
    # The other sandbox's launches, codes and tokens are untouched, and work.
    assert {t.name: rows(db, t, sandbox_id="other") for t in (smart_launches, smart_codes, smart_tokens)} == before
    mine = client.get(f"{fhir_base('other')}/Patient/{other.ann}", headers=bearer(kept["access_token"]))
    assert mine.status_code == 200


def test_a_reset_keeps_registrations_launches_and_tokens(
    client: TestClient, db: Database, chart: Chart, app_client: dict[str, Any]
) -> None:
    token = ehr_launch_token(client, chart, "growth-chart", SCOPES)
    pending = launch(client, "growth-chart", "smart", chart.ann)["launch"]
    counts = {t.name: rows(db, t, sandbox_id="smart") for t in (smart_launches, smart_codes, smart_tokens)}
    assert client.post("/admin/sandboxes/smart/reset", headers=ADMIN).status_code == 200
    assert {t.name: rows(db, t, sandbox_id="smart") for t in (smart_launches, smart_codes, smart_tokens)} == counts
    assert client.get("/admin/clients/growth-chart", headers=ADMIN).status_code == 200
    # The token works on what the sandbox now holds: the patient was the sandbox's own write, and is gone.
    headers = bearer(token["access_token"])
    assert client.get(f"{fhir_base('smart')}/Patient/{chart.ann}", headers=headers).status_code == 404
    found = client.get(f"{fhir_base('smart')}/Observation", headers=headers)
    assert found.status_code == 200 and found.json()["total"] == 0
    assert introspect(client, "smart", token["access_token"])["active"] is True
    assert refresh(client, "smart", token["refresh_token"]).status_code == 200
    params = authorize_params("growth-chart", "smart", SCOPES, pkce()[1], launch=pending)
    assert "code" in redirected(client.get(f"{auth_base('smart')}/authorize", params=params, follow_redirects=False))


def test_a_deleted_client_takes_what_was_issued_to_it_even_from_a_new_client_of_its_id(
    client: TestClient, db: Database, chart: Chart, app_client: dict[str, Any]
) -> None:
    token = ehr_launch_token(client, chart, "growth-chart", SCOPES)
    register(client, "bystander", SCOPES, auto_approve=True)
    theirs = ehr_launch_token(client, chart, "bystander", SCOPES)
    assert client.delete("/admin/clients/growth-chart", headers=ADMIN).status_code == 204
    assert all(rows(db, t, client_id="growth-chart") == 0 for t in TABLES)
    register(client, "growth-chart", SCOPES, auto_approve=True)
    again = refresh(client, "smart", token["refresh_token"])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    old = client.get(f"{fhir_base('smart')}/Patient/{chart.ann}", headers=bearer(token["access_token"]))
    assert old.status_code == 401
    assert client.get(f"{fhir_base('smart')}/Patient/{chart.ann}", headers=bearer(theirs["access_token"])).is_success
    assert client.delete("/admin/clients/no-such-client", headers=ADMIN).status_code == 404


def test_no_token_is_issued_into_a_sandbox_whose_delete_is_in_flight(db: Database) -> None:
    """On PostgreSQL the token's transaction could see the sandbox, then write after the delete committed: the
    token would outlive its sandbox.  It waits for the delete instead, and finds no sandbox."""
    with db.write() as conn:
        create_sandbox(conn, "Doomed", sandbox_id="doomed")
    outcome: dict[str, str] = {}

    def issue() -> None:
        try:
            with db.write() as conn:
                issue_tokens(conn, "doomed", Grant("app", ("patient/*.rs",)), SmartPolicy())
            outcome["issued"] = "yes"
        except OAuthError as exc:
            outcome["error"] = exc.error

    with db.write() as conn:
        delete_sandbox(conn, "doomed")
        thread = threading.Thread(target=issue)
        thread.start()
        time.sleep(0.3)  # let the token's transaction reach the sandbox's row before the delete commits
    thread.join(30)
    assert outcome == {"error": "invalid_request"}
    assert rows(db, smart_tokens, sandbox_id="doomed") == 0


# ---- the sweep -----------------------------------------------------------------------------------------------


def test_the_sweep_removes_only_expired_rows(
    client: TestClient,
    db: Database,
    chart: Chart,
    app_client: dict[str, Any],
    frozen: Callable[[timedelta], datetime],
) -> None:
    offline = ehr_launch_token(client, chart, "growth-chart", SCOPES)  # access + refresh (30 days), a used code
    register(client, "short", "launch patient/*.rs", auto_approve=True)
    short = ehr_launch_token(client, chart, "short", "launch patient/*.rs")  # access only, a used code
    unused_code(client, chart)
    revoked = ehr_launch_token(client, chart, "short", "launch patient/*.rs")["access_token"]
    assert client.post(f"{auth_base('smart')}/revoke", data={"token": revoked, "client_id": "short"}).is_success
    everything = {t.name: rows(db, t) for t in TABLES}
    assert everything == {"smart_launches": 4, "smart_codes": 4, "smart_tokens": 4, "smart_assertions": 0}

    assert sweep_expired(db, frozen(timedelta(minutes=4))) == NOTHING  # codes live five minutes
    # Past five minutes: the unused code, and the used one whose only token was revoked (nothing to revoke).
    assert sweep_expired(db, frozen(timedelta(minutes=6))) == {**NOTHING, "smart_codes": 2}
    # An hour on: launches and access tokens (the revoked one too) go, and the used code whose grant has no
    # token left; the refresh token, and the code of its grant, stay.
    assert sweep_expired(db, frozen(timedelta(hours=2))) == {
        **NOTHING,
        "smart_launches": 4,
        "smart_tokens": 3,
        "smart_codes": 1,
    }
    with db.read() as conn:
        assert conn.execute(select(smart_tokens.c.kind)).scalars().all() == ["refresh"]
    for gone in (offline["access_token"], short["access_token"], revoked):
        assert introspect(client, "smart", gone) == {"active": False}
        answer = client.get(f"{fhir_base('smart')}/Patient/{chart.ann}", headers=bearer(gone))
        assert answer.status_code == 401 and 'error="invalid_token"' in answer.headers["www-authenticate"]
    renewed = refresh(client, "smart", offline["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    headers = bearer(renewed.json()["access_token"])
    assert client.get(f"{fhir_base('smart')}/Patient/{chart.ann}", headers=headers).status_code == 200
    assert introspect(client, "smart", offline["refresh_token"])["active"] is True

    assert sweep_expired(db, frozen(timedelta(days=31))) == {**NOTHING, "smart_tokens": 2, "smart_codes": 1}
    assert {t.name: rows(db, t) for t in TABLES} == NOTHING
    assert refresh(client, "smart", offline["refresh_token"]).json()["error"] == "invalid_grant"


def test_a_used_code_is_kept_while_its_grant_lives_so_a_replay_still_revokes_it(
    client: TestClient,
    db: Database,
    chart: Chart,
    app_client: dict[str, Any],
    frozen: Callable[[timedelta], datetime],
) -> None:
    value = launch(client, "growth-chart", "smart", chart.ann)["launch"]
    verifier, challenge = pkce()
    params = authorize_params("growth-chart", "smart", SCOPES, challenge, launch=value)
    code = redirected(client.get(f"{auth_base('smart')}/authorize", params=params, follow_redirects=False))["code"]
    first = redeem(client, "smart", code, verifier).json()
    assert sweep_expired(db, frozen(timedelta(hours=2)))["smart_codes"] == 0
    replay = redeem(client, "smart", code, verifier)
    assert replay.status_code == 400 and replay.json()["error_description"] == "The authorization code was already used"
    assert introspect(client, "smart", first["refresh_token"]) == {"active": False}  # the replay revoked the grant
    # Nothing of the grant is active now: the code has nothing left to answer for.
    assert sweep_expired(db, frozen(timedelta(hours=3)))["smart_codes"] == 1


def _expired_tokens(db: Database, count: int, sandbox: str = "default") -> datetime:
    """``count`` access tokens that expired an hour ago; returns now."""
    ensure_default_sandbox(db)
    now = datetime.now(UTC)
    past = SmartPolicy(clock=lambda: now - timedelta(hours=2))
    with db.write() as conn:
        for _ in range(count):
            issue_tokens(conn, sandbox, Grant("app", ("patient/*.rs",)), past)
    return now


def test_the_sweep_works_in_bounded_batches_and_counts_in_metrics(client: TestClient, db: Database) -> None:
    now = _expired_tokens(db, 7)
    with db.write() as conn:
        issue_tokens(conn, "default", Grant("app", ("patient/*.rs",)), SmartPolicy(clock=lambda: now))  # live
    counted = REGISTRY.get_sample_value("ehr_sandbox_swept_rows_total", {"table": "smart_tokens"}) or 0.0
    assert sweep_expired(db, now, batch=2, max_batches=2)["smart_tokens"] == 4
    assert rows(db, smart_tokens) == 4
    assert sweep_expired(db, now, batch=2, max_batches=2)["smart_tokens"] == 3  # the last batch was not full
    assert sweep_expired(db, now, batch=2, max_batches=2)["smart_tokens"] == 0
    assert rows(db, smart_tokens) == 1  # the live one
    assert REGISTRY.get_sample_value("ehr_sandbox_swept_rows_total", {"table": "smart_tokens"}) == counted + 7
    assert 'ehr_sandbox_swept_rows_total{table="smart_tokens"}' in client.get("/metrics").text


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"now": datetime(2030, 1, 1)}, "timezone-aware"),
        ({"batch": 0}, "1 or more"),
        ({"max_batches": -1}, "1 or more"),
    ],
)
def test_the_sweep_refuses_odd_arguments_and_changes_nothing(
    db: Database, arguments: dict[str, Any], message: str
) -> None:
    now = _expired_tokens(db, 2)
    with pytest.raises(ValueError, match=message):
        sweep_expired(db, **{"now": now, **arguments})
    assert rows(db, smart_tokens) == 2


def test_several_sweepers_at_once_share_the_rows(db: Database) -> None:
    now = _expired_tokens(db, 40)
    results: list[dict[str, int]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def sweeper() -> None:
        start.wait()
        try:
            results.append(sweep_expired(db, now, batch=3, max_batches=100))
        except BaseException as exc:  # reported below, with the others' results
            errors.append(exc)

    threads = [threading.Thread(target=sweeper) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sum(r["smart_tokens"] for r in results) == 40  # each row swept once, by one of them
    assert rows(db, smart_tokens) == 0


def test_smart_sweep_runs_once_per_period(db: Database) -> None:
    now = _expired_tokens(db, 1)
    moments = iter([now, now + timedelta(seconds=30), now + timedelta(seconds=61), now - timedelta(hours=1)])
    sweep = SmartSweep(db, every=timedelta(minutes=1), clock=lambda: next(moments))
    assert sweep() == {**NOTHING, "smart_tokens": 1}
    assert sweep() is None  # not yet time
    assert sweep() == NOTHING  # time again, nothing left
    assert sweep() == NOTHING  # a clock set back sweeps at once
    with pytest.raises(ValueError, match="positive"):
        SmartSweep(db, every=timedelta(0))


def test_the_background_loop_of_serve_and_worker_sweeps(db: Database, settings: Settings) -> None:
    assert any(isinstance(chore, SmartSweep) for chore in housekeeping(db))
    _expired_tokens(db, 3)
    calls: list[str] = []

    def broken() -> None:
        calls.append("broken")
        raise RuntimeError("a chore that fails must not stop the others, nor the loop")

    checker = start_live_checks(db, interactions_for(settings, db), chores=[broken, *housekeeping(db)])
    try:
        for _ in range(600):  # the loop polls every half second; wait for its pass, not for a set time
            if rows(db, smart_tokens) == 0 and calls.count("broken") >= 2:
                break
            time.sleep(0.05)
    finally:
        checker.stop()
    assert rows(db, smart_tokens) == 0 and calls.count("broken") >= 2


def test_a_user_taken_off_a_shared_sandbox_or_deleted_takes_back_the_access_their_apps_had(db: Database) -> None:
    """Tokens of the grants a user approved are revoked when the user leaves a shared sandbox (only there) and
    when the user is deleted; the other members' tokens keep working."""
    from sandbox.accounts.cohorts import add_member, create_cohort, remove_member
    from sandbox.accounts.users import create_user, delete_user
    from sandbox.auth.tokens import find_token

    ensure_default_sandbox(db)
    policy = SmartPolicy()
    with db.write() as conn:
        create_user(conn, "Tess Trainer", "tess@example.org", "trainer")
        ann = create_user(conn, "Ann Trainee", "ann@example.org", "trainee")
        ben = create_user(conn, "Ben Trainee", "ben@example.org", "trainee")
        cohort = create_cohort(conn, "Shared", "tess@example.org", mode="shared")
        for user in (ann, ben):
            add_member(conn, cohort.id, user.email)
        sandbox_id = cohort.shared_sandbox_id
        assert sandbox_id is not None

        def token(user_id: str, sandbox: str) -> str:
            grant = Grant("app", ("launch", "patient/*.rs", "offline_access"), patient="p1", user_id=user_id)
            return issue_tokens(conn, sandbox, grant, policy).access_token

        anns, bens, anns_elsewhere = token(ann.id, sandbox_id), token(ben.id, sandbox_id), token(ann.id, "default")

    def revoked(sandbox: str, access: str) -> bool:
        with db.read() as conn:
            record = find_token(conn, sandbox, access)
            assert record is not None
            return record.revoked

    with db.write() as conn:
        remove_member(conn, cohort.id, ann.email)
    assert revoked(sandbox_id, anns) and not revoked(sandbox_id, bens) and not revoked("default", anns_elsewhere)
    with db.write() as conn:
        delete_user(conn, ann.id)
    assert revoked("default", anns_elsewhere) and not revoked(sandbox_id, bens)
