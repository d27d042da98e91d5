"""API tokens for the admin and FHIR APIs (until SMART arrives).

The secret is shown once, when issued; only its SHA-256 is stored.  A plain
hash suits tokens (unlike passwords) because they carry 256 random bits: there
is nothing to guess, and checking one per request must be cheap.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from sandbox.accounts.users import User, get_user, user_from_row
from sandbox.fhir.values import instant_now
from sandbox.store.admin_errors import Invalid, NotFound
from sandbox.store.schema import api_tokens, users

PREFIX = "ehrs_"


@dataclass(frozen=True)
class TokenInfo:
    id: str
    user_id: str
    label: str
    created_at: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "user": self.user_id, "label": self.label, "created_at": self.created_at[:23] + "Z"}


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_token(conn: Connection, user_id: str, label: str = "api") -> tuple[TokenInfo, str]:
    """A new token for the user: its record, and the secret (shown to the user once, never stored)."""
    get_user(conn, user_id)
    if not isinstance(label, str) or not label.strip() or len(label) > 200:
        raise Invalid("A token label is a non-empty string of at most 200 characters")
    secret = PREFIX + secrets.token_urlsafe(32)
    info = TokenInfo("tok-" + secrets.token_hex(6), user_id, label.strip(), instant_now()[1])
    conn.execute(
        insert(api_tokens).values(
            token_hash=token_hash(secret), id=info.id, user_id=user_id, label=info.label, created_at=info.created_at
        )
    )
    return info, secret


def user_for_token(conn: Connection, token: str) -> User | None:
    row = conn.execute(
        select(users)
        .join(api_tokens, api_tokens.c.user_id == users.c.id)
        .where(api_tokens.c.token_hash == token_hash(token))
    ).first()
    return user_from_row(row) if row else None


def list_tokens(conn: Connection, user_id: str) -> list[TokenInfo]:
    get_user(conn, user_id)
    rows = conn.execute(select(api_tokens).where(api_tokens.c.user_id == user_id).order_by(api_tokens.c.created_at))
    return [TokenInfo(r.id, r.user_id, r.label, r.created_at) for r in rows]


def revoke_token(conn: Connection, user_id: str, token_id: str) -> None:
    result = conn.execute(delete(api_tokens).where(api_tokens.c.user_id == user_id, api_tokens.c.id == token_id))
    if result.rowcount == 0:
        raise NotFound(f"User '{user_id}' has no token '{token_id}'")
