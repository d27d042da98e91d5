"""The pieces under the sign-in pages: session records, the failed sign-in throttle, and safe ``next`` paths."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from sandbox.accounts.sessions import (
    SessionPolicy,
    end_session,
    end_user_sessions,
    lookup_session,
    needs_touch,
    purge_expired,
    start_session,
    touch_session,
)
from sandbox.accounts.users import create_user
from sandbox.store.admin_errors import NotFound
from sandbox.store.database import Database
from sandbox.store.schema import web_sessions
from web.signin import safe_next
from web.throttle import LoginThrottle

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
POLICY = SessionPolicy(idle=timedelta(minutes=30), absolute=timedelta(hours=8), touch_every=timedelta(minutes=1))


def test_a_session_opens_with_its_secret_only(db: Database) -> None:
    with db.write() as conn:
        user = create_user(conn, "Ann", "ann@example.org", "trainee")
        new = start_session(conn, user.id, T0, POLICY)
        found = lookup_session(conn, new.secret, T0 + timedelta(minutes=5), POLICY)
        assert found is not None
        assert found.user == user
        assert found.csrf_token == new.session.csrf_token
        assert found.expires_at == T0 + timedelta(hours=8)
        assert lookup_session(conn, new.secret + "x", T0, POLICY) is None
        assert lookup_session(conn, "", T0, POLICY) is None
        assert lookup_session(conn, new.session.key, T0, POLICY) is None  # the stored hash is not a key


def test_each_session_has_its_own_secret_and_csrf_token(db: Database) -> None:
    with db.write() as conn:
        user = create_user(conn, "Ann", "ann@example.org", "trainee")
        one, two = start_session(conn, user.id, T0, POLICY), start_session(conn, user.id, T0, POLICY)
    assert one.secret != two.secret
    assert one.session.csrf_token != two.session.csrf_token


def test_no_session_for_a_user_who_does_not_exist(db: Database) -> None:
    with db.write() as conn, pytest.raises(NotFound):
        start_session(conn, "nobody", T0, POLICY)


def test_idle_expiry_counts_from_the_last_touch(db: Database) -> None:
    with db.write() as conn:
        user = create_user(conn, "Ann", "ann@example.org", "trainee")
        secret = start_session(conn, user.id, T0, POLICY).secret
        later = T0 + timedelta(minutes=29)
        session = lookup_session(conn, secret, later, POLICY)
        assert session is not None and needs_touch(session, later, POLICY)
        touch_session(conn, session.key, later)
        assert lookup_session(conn, secret, T0 + timedelta(minutes=58), POLICY) is not None
        assert lookup_session(conn, secret, later + timedelta(minutes=30), POLICY) is None


def test_touching_does_not_move_the_absolute_end(db: Database) -> None:
    with db.write() as conn:
        user = create_user(conn, "Ann", "ann@example.org", "trainee")
        new = start_session(conn, user.id, T0, POLICY)
        touch_session(conn, new.session.key, T0 + timedelta(hours=7, minutes=59))
        assert lookup_session(conn, new.secret, T0 + timedelta(hours=7, minutes=59, seconds=59), POLICY) is not None
        assert lookup_session(conn, new.secret, T0 + timedelta(hours=8), POLICY) is None


def test_ending_one_or_all_of_a_users_sessions(db: Database) -> None:
    with db.write() as conn:
        ann = create_user(conn, "Ann", "ann@example.org", "trainee")
        bob = create_user(conn, "Bob", "bob@example.org", "trainee")
        first, second = start_session(conn, ann.id, T0, POLICY), start_session(conn, ann.id, T0, POLICY)
        bobs = start_session(conn, bob.id, T0, POLICY)
        end_session(conn, first.session.key)
        assert lookup_session(conn, first.secret, T0, POLICY) is None
        assert lookup_session(conn, second.secret, T0, POLICY) is not None
        assert end_user_sessions(conn, ann.id) == 1
        assert lookup_session(conn, second.secret, T0, POLICY) is None
        assert lookup_session(conn, bobs.secret, T0, POLICY) is not None


def test_starting_a_session_sweeps_away_expired_ones(db: Database) -> None:
    with db.write() as conn:
        user = create_user(conn, "Ann", "ann@example.org", "trainee")
        start_session(conn, user.id, T0, POLICY)
        idle = start_session(conn, user.id, T0 + timedelta(hours=1), POLICY)
        touch_session(conn, idle.session.key, T0 + timedelta(hours=1))
        start_session(conn, user.id, T0 + timedelta(hours=1, minutes=31), POLICY)
        assert len(conn.execute(select(web_sessions)).all()) == 1
        assert purge_expired(conn, T0 + timedelta(days=1), POLICY) == 1


# ---- the throttle ------------------------------------------------------------------------------------


def test_the_throttle_locks_an_email_after_its_limit_until_the_window_passes() -> None:
    throttle = LoginThrottle(per_email=3, per_address=100, window=timedelta(minutes=5))
    for minute in range(3):
        assert throttle.retry_after("ann@example.org", "10.0.0.1", T0 + timedelta(minutes=minute)) is None
        throttle.failed("Ann@Example.org", "10.0.0.1", T0 + timedelta(minutes=minute))
    now = T0 + timedelta(minutes=3)
    assert throttle.retry_after("ann@example.org", "10.0.0.2", now) == timedelta(minutes=2)
    assert throttle.retry_after("bob@example.org", "10.0.0.1", now) is None  # others are not locked out
    assert throttle.retry_after("ann@example.org", "10.0.0.1", T0 + timedelta(minutes=5)) is None


def test_the_throttle_limits_an_address_across_emails() -> None:
    throttle = LoginThrottle(per_email=100, per_address=3)
    for n in range(3):
        throttle.failed(f"user{n}@example.org", "10.0.0.1", T0)
    assert throttle.retry_after("someone@example.org", "10.0.0.1", T0) is not None
    assert throttle.retry_after("someone@example.org", "10.0.0.9", T0) is None


def test_a_success_clears_the_emails_count_but_not_the_addresss() -> None:
    throttle = LoginThrottle(per_email=2, per_address=2)
    throttle.failed("ann@example.org", "10.0.0.1", T0)
    throttle.succeeded("ann@example.org")
    throttle.failed("ann@example.org", "10.0.0.2", T0)
    assert throttle.retry_after("ann@example.org", "10.0.0.3", T0) is None
    throttle.failed("bob@example.org", "10.0.0.1", T0)
    assert throttle.retry_after("carol@example.org", "10.0.0.1", T0) is not None


def test_the_throttle_forgets_stale_keys_when_full() -> None:
    throttle = LoginThrottle(max_keys=2, window=timedelta(minutes=5))
    throttle.failed("old@example.org", "10.0.0.1", T0)
    throttle.failed("new@example.org", "10.0.0.2", T0 + timedelta(minutes=10))
    assert sorted(throttle._failures) == ["address:10.0.0.2", "email:new@example.org"]  # the stale pair went


# ---- next paths ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/trainer", "/trainer?week=2&x=%2F%2Fy", "/a/b#c"])
def test_paths_on_this_site_are_kept(path: str) -> None:
    assert safe_next(path) == path


@pytest.mark.parametrize(
    "target",
    [None, "", "trainer", "//evil.example", "///evil.example", "/\\evil.example", "https://evil.example", "/a\nb"],
)
def test_anything_else_becomes_home(target: str | None) -> None:
    assert safe_next(target) == "/"


def test_overlong_paths_become_home() -> None:
    assert safe_next("/" + "a" * 3000) == "/"


# ---- credentials -----------------------------------------------------------------------------------


def test_an_unknown_email_costs_a_password_check_too(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """So that the time to answer does not tell which emails have accounts."""
    from sandbox.accounts import users

    checked: list[str] = []
    real = users.verify_password
    monkeypatch.setattr(users, "verify_password", lambda stored, pw: checked.append(pw) or real(stored, pw))
    with db.write() as conn:
        users.create_user(conn, "No Password", "nopw@example.org", "trainee")
        assert users.check_credentials(conn, "nobody@example.org", "guess one") is None
        assert users.check_credentials(conn, "nopw@example.org", "guess two") is None
    assert checked == ["guess one", "guess two"]
