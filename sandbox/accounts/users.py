"""Users: who they are, their role, and their password (argon2id hash only)."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Connection, delete, select, update
from sqlalchemy import insert as sql_insert

from sandbox.accounts.passwords import MIN_LENGTH, hash_password, needs_rehash, verify_password
from sandbox.fhir.values import instant_now
from sandbox.store.admin_errors import Conflict, Invalid, NotFound
from sandbox.store.schema import api_tokens, cohort_members, cohorts, users

ROLES = ("admin", "trainer", "trainee", "vendor")

_EMAIL = re.compile(r"^[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+$")


@dataclass(frozen=True)
class User:
    id: str
    name: str
    email: str
    role: str
    has_password: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "email": self.email, "role": self.role}


def check_role(role: object) -> str:
    if role not in ROLES:
        raise Invalid(f"The role must be one of {', '.join(ROLES)}, not '{role}'")
    return str(role)


def check_email(email: object) -> str:
    if not isinstance(email, str) or not _EMAIL.match(email.strip()) or len(email) > 320:
        raise Invalid(f"'{email}' is not an email address")
    return email.strip().lower()


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise Invalid("A user needs a name: a non-empty string of at most 200 characters")
    return name.strip()


def _check_password(password: object) -> str:
    if not isinstance(password, str) or len(password) < MIN_LENGTH:
        raise Invalid(f"A password must be a string of at least {MIN_LENGTH} characters")
    return password


def create_user(conn: Connection, name: str, email: str, role: str, *, password: str | None = None) -> User:
    name, email, role = _check_name(name), check_email(email), check_role(role)
    pw_hash = hash_password(_check_password(password)) if password is not None else None
    if find_by_email(conn, email) is not None:
        raise Conflict(f"There is already a user with the email {email}")
    slug = re.sub(r"[^a-z0-9]+", "-", email.split("@")[0]).strip("-")[:40] or "user"
    user_id = f"{slug}-{secrets.token_hex(4)}"
    conn.execute(
        sql_insert(users).values(
            id=user_id, name=name, email=email, role=role, password_hash=pw_hash, created_at=instant_now()[1]
        )
    )
    return User(user_id, name, email, role, pw_hash is not None)


def user_from_row(row: Any) -> User:
    return User(row.id, row.name, row.email, row.role, row.password_hash is not None)


def get_user(conn: Connection, user_id: str) -> User:
    row = conn.execute(select(users).where(users.c.id == user_id)).first()
    if row is None:
        raise NotFound(f"There is no user '{user_id}'")
    return user_from_row(row)


def find_by_email(conn: Connection, email: str) -> User | None:
    row = conn.execute(select(users).where(users.c.email == email.strip().lower())).first()
    return user_from_row(row) if row else None


def lookup_user(conn: Connection, ref: str) -> User:
    """A user by id or by email: what the CLI and API accept wherever a user is named."""
    if "@" in ref:
        found = find_by_email(conn, ref)
        if found is None:
            raise NotFound(f"There is no user with the email {ref.strip().lower()}")
        return found
    return get_user(conn, ref)


def list_users(conn: Connection, role: str | None = None) -> list[User]:
    query = select(users).order_by(users.c.created_at, users.c.id)
    if role is not None:
        query = query.where(users.c.role == check_role(role))
    return [user_from_row(r) for r in conn.execute(query)]


def set_password(conn: Connection, user_id: str, password: str) -> None:
    get_user(conn, user_id)
    conn.execute(
        update(users).where(users.c.id == user_id).values(password_hash=hash_password(_check_password(password)))
    )
    _end_web_sessions(conn, user_id)  # whoever knew the old password is signed out


def check_credentials(conn: Connection, email: str, password: str) -> User | None:
    """The user whose email and password these are, else None (for sign-in forms)."""
    row = conn.execute(select(users).where(users.c.email == email.strip().lower())).first()
    if row is None or row.password_hash is None:
        # As slow as a wrong password, so that the answer time does not tell which emails exist.
        verify_password(_unmatchable_hash(), password)
        return None
    if not verify_password(row.password_hash, password):
        return None
    if needs_rehash(row.password_hash):
        conn.execute(update(users).where(users.c.id == row.id).values(password_hash=hash_password(password)))
    return user_from_row(row)


def delete_user(conn: Connection, user_id: str) -> None:
    """Remove a user and their tokens; refused while they train or belong to a cohort."""
    get_user(conn, user_id)
    trains = conn.execute(select(cohorts.c.id).where(cohorts.c.trainer_id == user_id).limit(1)).first()
    member = conn.execute(
        select(cohort_members.c.cohort_id).where(cohort_members.c.user_id == user_id).limit(1)
    ).first()
    if trains or member:
        raise Conflict(f"User '{user_id}' is in cohort '{(trains or member)[0]}'; remove them from it first")
    conn.execute(delete(api_tokens).where(api_tokens.c.user_id == user_id))
    revoke_smart_grants(conn, user_id)
    _end_web_sessions(conn, user_id)
    conn.execute(delete(users).where(users.c.id == user_id))


@cache
def _unmatchable_hash() -> str:
    return hash_password(secrets.token_urlsafe(32))


def revoke_smart_grants(conn: Connection, user_id: str, sandbox_id: str | None = None) -> None:
    """The SMART apps the user approved lose the access the user lent them (in one sandbox, or everywhere)."""
    # Imported here: the auth package builds on the accounts (bearer tokens, who reaches which sandbox).
    from sandbox.auth.tokens import revoke_user_grants

    revoke_user_grants(conn, user_id, sandbox_id)


def _end_web_sessions(conn: Connection, user_id: str) -> None:
    # Imported here: sessions.py builds on this module (User, get_user).
    from sandbox.accounts.sessions import end_user_sessions

    end_user_sessions(conn, user_id)
