"""Client authentication with ``private_key_jwt`` (SMART Backend Services, and confidential-asymmetric apps).

The client signs a short JWT (RS384 or ES384 per the spec; RS256 and ES256 are accepted too) with
``iss`` = ``sub`` = its client_id, ``aud`` = the token endpoint it posts to, ``exp`` at most five minutes
ahead and a ``jti`` never used before.  The key comes from the client's registered JWKS, by value or
fetched from its ``jwks_url`` (cached for a few minutes; fetched again when the ``kid`` is new).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact
from sqlalchemy import Connection, delete, insert, select
from sqlalchemy.exc import IntegrityError

from sandbox.auth.clients import Client
from sandbox.auth.tokens import OAuthError, SmartPolicy, stamp
from sandbox.store.schema import smart_assertions

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = ["RS384", "ES384", "RS256", "ES256"]
_JWKS_TTL = 300.0


class JwksCache:
    """Key sets fetched from clients' ``jwks_url``: url -> (fetched at, key set)."""

    def __init__(self) -> None:
        self._sets: dict[str, tuple[float, dict[str, Any]]] = {}

    def get(self, url: str, *, fresh: bool = False) -> dict[str, Any]:
        cached = self._sets.get(url)
        if cached and not fresh and time.monotonic() - cached[0] < _JWKS_TTL:
            return cached[1]
        try:
            response = httpx.get(url, timeout=10.0, follow_redirects=False)
            response.raise_for_status()
            found = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise OAuthError("invalid_client", f"Could not fetch the client's JWKS from {url}: {exc}", 401) from None
        if not isinstance(found, dict) or not isinstance(found.get("keys"), list):
            raise OAuthError("invalid_client", f"{url} did not answer a JSON Web Key Set", 401)
        self._sets[url] = (time.monotonic(), found)
        return found


def _kid(assertion: str) -> str | None:
    try:
        header = extract_compact(assertion.encode("ascii")).headers()
    except (JoseError, ValueError, UnicodeError):
        return None
    kid = header.get("kid")
    return kid if isinstance(kid, str) else None


def _key_set(client: Client, assertion: str, cache: JwksCache) -> KeySet:
    if client.jwks is not None:
        raw = client.jwks
    elif client.jwks_url:
        raw = cache.get(client.jwks_url)
        kid = _kid(assertion)
        if kid is not None and not any(k.get("kid") == kid for k in raw["keys"] if isinstance(k, dict)):
            raw = cache.get(client.jwks_url, fresh=True)  # the client rotated its keys
    else:
        raise OAuthError("invalid_client", f"Client '{client.client_id}' has no JWKS for private_key_jwt", 401)
    try:
        return KeySet.import_key_set(raw)  # type: ignore[arg-type]
    except (JoseError, ValueError, KeyError, TypeError) as exc:
        raise OAuthError("invalid_client", f"The client's JWKS is not usable: {exc}", 401) from None


def verify_assertion(
    conn: Connection, client: Client, assertion: str, token_endpoint: str, policy: SmartPolicy, cache: JwksCache
) -> None:
    """Check a client assertion of ``client``; ``OAuthError`` (invalid_client, 401) says what is wrong."""
    keys = _key_set(client, assertion, cache)
    try:
        token = jwt.decode(assertion, keys, algorithms=ALGORITHMS)
    except (JoseError, ValueError) as exc:
        raise OAuthError("invalid_client", f"The client assertion's signature does not verify: {exc}", 401) from None
    claims = token.claims
    now = policy.clock()
    if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
        raise OAuthError("invalid_client", "The client assertion's iss and sub must both be the client_id", 401)
    audience = claims.get("aud")
    if audience != token_endpoint and not (isinstance(audience, list) and token_endpoint in audience):
        raise OAuthError(
            "invalid_client", f"The client assertion's aud must be the token endpoint {token_endpoint}", 401
        )
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise OAuthError("invalid_client", "The client assertion needs an exp (seconds since the epoch)", 401)
    if exp <= now.timestamp():
        raise OAuthError("invalid_client", "The client assertion has expired", 401)
    if exp > now.timestamp() + policy.assertion_max.total_seconds() + 60:
        raise OAuthError("invalid_client", "The client assertion's exp is more than five minutes ahead", 401)
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 200:
        raise OAuthError("invalid_client", "The client assertion needs a jti (a unique string)", 401)
    a = smart_assertions
    # A use of this jti whose assertion has expired no longer counts (its replays fail on exp); the sweep
    # (``sweep.py``) removes the others in the background.
    used = (a.c.client_id == client.client_id, a.c.jti == jti)
    conn.execute(delete(a).where(*used, a.c.expires_at < stamp(now)))
    if conn.execute(select(a.c.jti).where(*used)).first():
        raise OAuthError("invalid_client", "This client assertion (jti) was already used", 401)
    try:
        # Two requests with one jti can both pass the check above; the key lets one in, and the savepoint keeps
        # the other's transaction usable for its refusal (PostgreSQL aborts a transaction at a failed insert).
        with conn.begin_nested():
            expires = stamp(datetime.fromtimestamp(float(exp), UTC))
            conn.execute(insert(a).values(client_id=client.client_id, jti=jti, expires_at=expires))
    except IntegrityError:
        raise OAuthError("invalid_client", "This client assertion (jti) was already used", 401) from None
