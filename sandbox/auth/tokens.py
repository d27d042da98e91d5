"""Authorization codes, access and refresh tokens, id_tokens: what the token endpoint hands out and checks.

Codes and tokens are random strings; only their SHA-256 is stored (``smart_codes``, ``smart_tokens``), each
row bound to one sandbox: a token works only against the FHIR base it was issued for.  The tokens of one
authorization share a ``grant_id``: revoking the refresh token revokes them all.  id_tokens are RS256 JWTs
signed with the server's key (``keys.py``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from joserfc import jwt
from sqlalchemy import Connection, false, insert, select, update

from sandbox.auth.keys import SigningKeys
from sandbox.auth.scopes import InvalidScope, disallowed
from sandbox.store.layers import UnknownSandbox, hold_sandbox
from sandbox.store.schema import smart_codes, smart_tokens


class OAuthError(Exception):
    """An OAuth2 error response: ``error`` code, a description for people, the HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


class CodeReused(OAuthError):
    """A code used twice may have been stolen: the caller revokes what the first use produced (RFC 6749 4.1.2).

    The tokens of a code's grant have the code's hash as ``grant_id``.
    """

    def __init__(self, grant_id: str) -> None:
        super().__init__("invalid_grant", "The authorization code was already used")
        self.grant_id = grant_id


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class SmartPolicy:
    """Lifetimes, and the clock (tests move it)."""

    access: timedelta = timedelta(hours=1)
    code: timedelta = timedelta(minutes=5)
    launch: timedelta = timedelta(hours=1)
    offline_refresh: timedelta = timedelta(days=30)
    online_refresh: timedelta = timedelta(hours=12)
    assertion_max: timedelta = timedelta(minutes=5)  # the longest a client assertion may live
    clock: Callable[[], datetime] = field(default=utc_now)


def stamp(moment: datetime) -> str:
    """A time as stored: fixed-width UTC, so string order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def epoch(stored: str) -> int:
    return int(datetime.strptime(stored, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC).timestamp())


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Grant:
    """What one authorization granted: to which client, which scopes, and the launch context."""

    client_id: str
    scopes: tuple[str, ...]
    patient: str | None = None
    encounter: str | None = None
    fhir_user: str | None = None  # Practitioner/123: who the app acts for, as a FHIR resource
    user_id: str | None = None  # the signed-in account that approved, if any
    nonce: str | None = None
    app_context: str | None = None  # the appContext of the CDS card link the launch came from

    def dumps(self) -> str:
        data = {**asdict(self), "scopes": list(self.scopes)}
        if self.app_context is None:
            # Left out when empty: a process of the release before, beside this one in a rolling deploy, reads
            # stored grants with ``loads`` and knows no such field.
            del data["app_context"]
        return orjson.dumps(data).decode()

    @classmethod
    def loads(cls, raw: str) -> Grant:
        data = orjson.loads(raw)
        return cls(**{**data, "scopes": tuple(data["scopes"])})

    @property
    def actor_id(self) -> str:
        """Who writes through a token of this grant: the client, and the approving user if there was one."""
        return f"client:{self.client_id}" + (f"|user:{self.user_id}" if self.user_id else "")


def _hold(conn: Connection, sandbox_id: str) -> None:
    """Codes and tokens are issued only in a sandbox that stays until they are written (``hold_sandbox``)."""
    try:
        hold_sandbox(conn, sandbox_id)
    except UnknownSandbox:
        raise OAuthError("invalid_request", f"There is no sandbox '{sandbox_id}'") from None


# ---- authorization codes ---------------------------------------------------------------------------------


def issue_code(
    conn: Connection, sandbox_id: str, grant: Grant, redirect_uri: str, challenge: str, policy: SmartPolicy
) -> str:
    _hold(conn, sandbox_id)
    code = secrets.token_urlsafe(32)
    conn.execute(
        insert(smart_codes).values(
            sandbox_id=sandbox_id,
            code_hash=digest(code),
            client_id=grant.client_id,
            redirect_uri=redirect_uri,
            code_challenge=challenge,
            grant=grant.dumps(),
            expires_at=stamp(policy.clock() + policy.code),
            used=False,
        )
    )
    return code


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def redeem_code(
    conn: Connection,
    sandbox_id: str,
    code: str,
    client_id: str,
    redirect_uri: str | None,
    verifier: str | None,
    policy: SmartPolicy,
) -> tuple[Grant, str]:
    """The grant (and the grant id its tokens get) of an unused, unexpired code.

    The code must be this client's, for this redirect URI, and the PKCE verifier must match its challenge.
    """
    c = smart_codes
    row = conn.execute(select(c).where(c.c.sandbox_id == sandbox_id, c.c.code_hash == digest(code))).first()
    if row is None or row.client_id != client_id:
        raise OAuthError("invalid_grant", "The authorization code is not valid for this client and FHIR base")
    if row.used:
        raise CodeReused(row.code_hash)
    if row.expires_at < stamp(policy.clock()):
        raise OAuthError("invalid_grant", "The authorization code has expired")
    if redirect_uri != row.redirect_uri:
        raise OAuthError("invalid_grant", "redirect_uri differs from the one of the authorization request")
    if not verifier or not 43 <= len(verifier) <= 128:
        raise OAuthError("invalid_grant", "code_verifier (PKCE, 43 to 128 characters) is required")
    if not hmac.compare_digest(s256(verifier), row.code_challenge):
        raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge (S256)")
    conn.execute(update(c).where(c.c.sandbox_id == sandbox_id, c.c.code_hash == row.code_hash).values(used=True))
    return Grant.loads(row.grant), row.code_hash


# ---- access and refresh tokens ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    access_token: str
    expires_in: int
    refresh_token: str | None
    grant_id: str


@dataclass(frozen=True)
class TokenRecord:
    kind: str
    client_id: str
    grant: Grant
    grant_id: str
    issued_at: str
    expires_at: str
    revoked: bool

    def active(self, now: datetime) -> bool:
        return not self.revoked and self.expires_at > stamp(now)


def _insert_token(
    conn: Connection, sandbox_id: str, kind: str, grant: Grant, grant_id: str, issued: datetime, expires: datetime
) -> str:
    token = secrets.token_urlsafe(32)
    conn.execute(
        insert(smart_tokens).values(
            sandbox_id=sandbox_id,
            token_hash=digest(token),
            kind=kind,
            grant_id=grant_id,
            client_id=grant.client_id,
            grant=grant.dumps(),
            issued_at=stamp(issued),
            expires_at=stamp(expires),
            revoked=False,
        )
    )
    return token


def refresh_lifetime(grant: Grant, policy: SmartPolicy) -> timedelta | None:
    if "offline_access" in grant.scopes:
        return policy.offline_refresh
    if "online_access" in grant.scopes:
        return policy.online_refresh
    return None


def issue_tokens(
    conn: Connection,
    sandbox_id: str,
    grant: Grant,
    policy: SmartPolicy,
    *,
    grant_id: str | None = None,
    refresh: bool = True,
    expired: bool = False,
) -> Issued:
    """An access token, and a refresh token when the grant asks for one (offline_access or online_access).

    ``expired``: the ``expired_token`` fault, an access token that is already out of date when handed out.
    """
    _hold(conn, sandbox_id)
    now = policy.clock()
    grant_id = grant_id or secrets.token_hex(16)
    lifetime = -timedelta(seconds=1) if expired else policy.access
    access = _insert_token(conn, sandbox_id, "access", grant, grant_id, now, now + lifetime)
    refresh_token = None
    refresh_for = refresh_lifetime(grant, policy)
    if refresh and refresh_for is not None:
        refresh_token = _insert_token(conn, sandbox_id, "refresh", grant, grant_id, now, now + refresh_for)
    return Issued(access, int(policy.access.total_seconds()), refresh_token, grant_id)


def find_token(conn: Connection, sandbox_id: str, token: str) -> TokenRecord | None:
    t = smart_tokens
    row = conn.execute(select(t).where(t.c.sandbox_id == sandbox_id, t.c.token_hash == digest(token))).first()
    if row is None:
        return None
    return TokenRecord(
        row.kind, row.client_id, Grant.loads(row.grant), row.grant_id, row.issued_at, row.expires_at, row.revoked
    )


def use_refresh_token(
    conn: Connection, sandbox_id: str, token: str, client_id: str, scope: str | None, policy: SmartPolicy
) -> tuple[Grant, str]:
    """The grant (narrowed to ``scope`` if given) and grant id of an active refresh token of this client."""
    record = find_token(conn, sandbox_id, token)
    if record is None or record.kind != "refresh" or record.client_id != client_id:
        raise OAuthError("invalid_grant", "The refresh token is not valid for this client and FHIR base")
    if not record.active(policy.clock()):
        raise OAuthError("invalid_grant", "The refresh token has expired or was revoked")
    grant = record.grant
    if scope is not None:
        wanted = tuple(dict.fromkeys(scope.split()))
        try:
            extra = disallowed(list(wanted), list(grant.scopes))
        except InvalidScope as exc:
            raise OAuthError("invalid_scope", str(exc)) from None
        if extra:
            raise OAuthError("invalid_scope", f"A refresh cannot add scopes: {' '.join(extra)}")
        grant = replace(grant, scopes=wanted)
    return grant, record.grant_id


def revoke_token(conn: Connection, sandbox_id: str, token: str) -> bool:
    """Revoke a token (a refresh token: with every token of its grant).  Whether there was one to revoke."""
    record = find_token(conn, sandbox_id, token)
    if record is None:
        return False
    t = smart_tokens
    if record.kind == "refresh":
        revoke_grant(conn, sandbox_id, record.grant_id)
    else:
        conn.execute(
            update(t).where(t.c.sandbox_id == sandbox_id, t.c.token_hash == digest(token)).values(revoked=True)
        )
    return True


def revoke_grant(conn: Connection, sandbox_id: str, grant_id: str) -> None:
    t = smart_tokens
    conn.execute(update(t).where(t.c.sandbox_id == sandbox_id, t.c.grant_id == grant_id).values(revoked=True))


def revoke_user_grants(conn: Connection, user_id: str, sandbox_id: str | None = None) -> int:
    """Revoke the tokens of every grant ``user_id`` approved (in one sandbox, or in all): for a user who is deleted
    or taken off a roster, whose apps must lose the access the user lent them.  Returns the tokens revoked."""
    t = smart_tokens
    # The grant is JSON (``Grant.dumps``, no spaces): LIKE narrows the rows, the parsed grant decides.
    query = select(t.c.sandbox_id, t.c.grant_id, t.c.grant).where(
        t.c.revoked == false(), t.c.grant.contains(f'"user_id":{orjson.dumps(user_id).decode()}', autoescape=True)
    )
    if sandbox_id is not None:
        query = query.where(t.c.sandbox_id == sandbox_id)
    rows = conn.execute(query).all()
    grants = {(row.sandbox_id, row.grant_id) for row in rows if Grant.loads(row.grant).user_id == user_id}
    revoked = 0
    for in_sandbox, grant_id in sorted(grants):
        where = (t.c.sandbox_id == in_sandbox, t.c.grant_id == grant_id, t.c.revoked == false())
        revoked += conn.execute(update(t).where(*where).values(revoked=True)).rowcount
    return revoked


def introspection(record: TokenRecord | None, issuer: str, now: datetime) -> dict[str, Any]:
    """RFC 7662's answer: ``{"active": false}`` for anything not usable now, else the token's claims."""
    if record is None or not record.active(now):
        return {"active": False}
    grant = record.grant
    out: dict[str, Any] = {
        "active": True,
        "scope": " ".join(grant.scopes),
        "client_id": record.client_id,
        "token_type": "Bearer" if record.kind == "access" else "refresh_token",
        "exp": epoch(record.expires_at),
        "iat": epoch(record.issued_at),
        "iss": issuer,
        "aud": issuer,
    }
    if grant.user_id:
        out["sub"] = grant.user_id
    for name, value in (("patient", grant.patient), ("encounter", grant.encounter)):
        if value:
            out[name] = value
    if grant.fhir_user:
        out["fhirUser"] = f"{issuer}/{grant.fhir_user}"
    return out


def id_token(keys: SigningKeys, issuer: str, grant: Grant, policy: SmartPolicy) -> str:
    """The OpenID Connect id_token for ``openid`` (with ``fhirUser`` when that scope and a user are known)."""
    now = policy.clock()
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": grant.user_id or grant.fhir_user or f"client:{grant.client_id}",
        "aud": grant.client_id,
        "iat": int(now.timestamp()),
        "exp": int((now + policy.access).timestamp()),
    }
    if grant.nonce:
        claims["nonce"] = grant.nonce
    if grant.fhir_user and ("fhirUser" in grant.scopes or "profile" in grant.scopes):
        claims["fhirUser"] = f"{issuer}/{grant.fhir_user}"
    return jwt.encode({"alg": "RS256", "kid": keys.kid, "typ": "JWT"}, claims, keys.key)
