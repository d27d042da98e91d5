"""Web UI sign-in sessions: a random secret in a cookie, only its SHA-256 in ``web_sessions``.

A session ends at the first of: sign-out, ``idle`` without a request, ``absolute`` after sign-in, or a
change of the user's password (or the user's deletion: ``users.py`` calls ``end_user_sessions``).
Each session carries its own CSRF token, which every form posted in it must send back.

Times come from the caller (``now``), so that tests move a clock instead of sleeping.  ``last_seen`` is
written at most once per ``touch_every``: a page view is a read, not a write, most of the time, at the
price of idle expiry being up to ``touch_every`` late.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, delete, insert, or_, select, update

from sandbox.accounts.users import User, get_user, user_from_row
from sandbox.store.schema import users, web_sessions


@dataclass(frozen=True)
class SessionPolicy:
    idle: timedelta = timedelta(hours=2)
    absolute: timedelta = timedelta(hours=12)
    touch_every: timedelta = timedelta(minutes=1)


@dataclass(frozen=True)
class WebSession:
    key: str  # the stored hash, never the secret
    user: User
    csrf_token: str
    created_at: datetime
    last_seen: datetime
    expires_at: datetime


@dataclass(frozen=True)
class NewSession:
    secret: str  # for the cookie; not stored anywhere
    session: WebSession


def session_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def start_session(conn: Connection, user_id: str, now: datetime, policy: SessionPolicy) -> NewSession:
    """A fresh session with a fresh secret and CSRF token; also sweeps away everyone's expired sessions."""
    user = get_user(conn, user_id)
    purge_expired(conn, now, policy)
    secret = secrets.token_urlsafe(32)
    session = WebSession(session_key(secret), user, secrets.token_urlsafe(32), now, now, now + policy.absolute)
    conn.execute(
        insert(web_sessions).values(
            session_hash=session.key,
            user_id=user.id,
            csrf_token=session.csrf_token,
            created_at=_stored(now),
            last_seen=_stored(now),
            expires_at=_stored(session.expires_at),
        )
    )
    return NewSession(secret, session)


def lookup_session(conn: Connection, secret: str, now: datetime, policy: SessionPolicy) -> WebSession | None:
    """The live session this secret opens, else None (unknown, ended, idle too long, or past its end)."""
    if not secret or len(secret) > 200:
        return None
    row = conn.execute(
        select(web_sessions, users)
        .join(users, users.c.id == web_sessions.c.user_id)
        .where(web_sessions.c.session_hash == session_key(secret))
    ).first()
    if row is None:
        return None
    session = WebSession(
        row.session_hash,
        user_from_row(row),
        row.csrf_token,
        _parsed(row.created_at),
        _parsed(row.last_seen),
        _parsed(row.expires_at),
    )
    if now >= session.expires_at or now >= session.last_seen + policy.idle:
        return None
    return session


def needs_touch(session: WebSession, now: datetime, policy: SessionPolicy) -> bool:
    return now - session.last_seen >= policy.touch_every


def touch_session(conn: Connection, key: str, now: datetime) -> None:
    """Record activity: the idle timer starts again (the absolute end does not move)."""
    conn.execute(update(web_sessions).where(web_sessions.c.session_hash == key).values(last_seen=_stored(now)))


def end_session(conn: Connection, key: str) -> None:
    conn.execute(delete(web_sessions).where(web_sessions.c.session_hash == key))


def end_user_sessions(conn: Connection, user_id: str) -> int:
    """Sign the user out everywhere (their password changed, or they are gone); returns how many ended."""
    return conn.execute(delete(web_sessions).where(web_sessions.c.user_id == user_id)).rowcount


def purge_expired(conn: Connection, now: datetime, policy: SessionPolicy) -> int:
    result = conn.execute(
        delete(web_sessions).where(
            or_(web_sessions.c.expires_at <= _stored(now), web_sessions.c.last_seen <= _stored(now - policy.idle))
        )
    )
    return result.rowcount


def utc_now() -> datetime:
    return datetime.now(UTC)


def _stored(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def _parsed(stored: str) -> datetime:
    return datetime.strptime(stored, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)
