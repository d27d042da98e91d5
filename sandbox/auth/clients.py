"""Registered SMART apps (clients): the registration contract of ``POST /admin/clients`` and the CLI.

A client is public (PKCE only, no secret), confidential with a generated ``client_secret`` (returned once,
stored as a hash), or confidential with a JSON Web Key Set (by value, ``jwks``, or by URL, ``jwks_url``)
for ``private_key_jwt``: the asymmetric kind is what backend services use.  ``faults`` switch on
simulated failures for testing an app's error handling (``docs/smart.md``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson
from sqlalchemy import Connection, delete, insert, select, update

from sandbox.auth.scopes import InvalidScope, check_scopes, split_scopes
from sandbox.fhir.values import instant_now
from sandbox.store.admin_errors import Conflict, Invalid, NotFound
from sandbox.store.schema import (
    smart_assertions,
    smart_client_owners,
    smart_clients,
    smart_codes,
    smart_launches,
    smart_tokens,
)

FAULTS = ("expired_token", "invalid_client", "denied_consent")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._~:-]{1,200}$")
_FIELDS = {"client_id", "redirect_uris", "scopes", "public", "jwks", "jwks_url", "auto_approve", "launch_url", "faults"}


@dataclass(frozen=True)
class Client:
    client_id: str
    public: bool
    redirect_uris: tuple[str, ...]
    scopes: tuple[str, ...]
    jwks: dict[str, Any] | None
    jwks_url: str | None
    auto_approve: bool
    launch_url: str | None
    faults: frozenset[str]
    has_secret: bool
    created_at: str

    @property
    def kind(self) -> str:
        if self.public:
            return "public"
        return "confidential-asymmetric" if self.jwks is not None or self.jwks_url else "confidential-symmetric"

    def to_json(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "public": self.public,
            "type": self.kind,
            "redirect_uris": list(self.redirect_uris),
            "scopes": " ".join(self.scopes),
            "jwks": self.jwks,
            "jwks_url": self.jwks_url,
            "auto_approve": self.auto_approve,
            "launch_url": self.launch_url,
            "faults": sorted(self.faults),
            "created_at": self.created_at[:23] + "Z",
        }


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _url(value: object, what: str) -> str:
    if not isinstance(value, str) or len(value) > 2000:
        raise Invalid(f"{what} must be an absolute http(s) URL")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
        raise Invalid(f"{what} must be an absolute http(s) URL without a fragment, not '{value}'")
    return value


def _scopes(value: object) -> list[str]:
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        scopes = split_scopes(" ".join(value))
    elif isinstance(value, str):
        scopes = split_scopes(value)
    else:
        raise Invalid("scopes is a space-separated string (or a list) of SMART scopes")
    if not scopes:
        raise Invalid("scopes must name at least one scope")
    try:
        check_scopes(scopes)
    except InvalidScope as exc:
        raise Invalid(str(exc)) from None
    return scopes


def check_faults(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(f, str) for f in value):
        raise Invalid(f"faults is a list of: {', '.join(FAULTS)}")
    unknown = sorted(set(value) - set(FAULTS))
    if unknown:
        raise Invalid(f"Unknown faults {', '.join(unknown)}; known: {', '.join(FAULTS)}")
    return sorted(set(value))


def _jwks(value: object) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list) or not value["keys"]:
        raise Invalid('jwks is a JSON Web Key Set: {"keys": [...]} with at least one public key')
    for key in value["keys"]:
        if not isinstance(key, dict) or key.get("kty") not in ("RSA", "EC"):
            raise Invalid("Each key of jwks is a JWK object with kty RSA or EC")
        if "d" in key:
            raise Invalid("jwks holds a private key ('d'); register only the public keys")
    return value


def register_client(conn: Connection, data: dict[str, Any], *, owner: str | None = None) -> tuple[Client, str | None]:
    """Register a client from the admin API's JSON; its record, and a client_secret if one was generated.

    ``owner`` is the user who registered it through the vendor console (None for the admin API and the CLI).
    """
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise Invalid(f"Unknown fields: {', '.join(unknown)}")
    client_id = data.get("client_id")
    if not isinstance(client_id, str) or not _CLIENT_ID.match(client_id):
        raise Invalid("client_id is 1-200 characters of A-Z a-z 0-9 . _ ~ : -")
    public = data.get("public")
    if not isinstance(public, bool):
        raise Invalid("public must be true or false")
    uris = data.get("redirect_uris", [])
    if not isinstance(uris, list):
        raise Invalid("redirect_uris is a list of URLs")
    redirect_uris = [_url(u, "Each redirect URI") for u in uris]
    scopes = _scopes(data.get("scopes"))
    jwks = _jwks(data["jwks"]) if data.get("jwks") is not None else None
    jwks_url = _url(data["jwks_url"], "jwks_url") if data.get("jwks_url") is not None else None
    if jwks is not None and jwks_url is not None:
        raise Invalid("Give jwks or jwks_url, not both")
    if public and (jwks is not None or jwks_url is not None):
        raise Invalid("A public client has no keys; register it with public: false to use jwks or jwks_url")
    if not redirect_uris and not any(s.startswith("system/") for s in scopes):
        raise Invalid(
            "redirect_uris must list at least one URL (only a backend service, with system/ scopes, has none)"
        )
    auto_approve = data.get("auto_approve", False)
    if not isinstance(auto_approve, bool):
        raise Invalid("auto_approve must be true or false")
    launch_url = _url(data["launch_url"], "launch_url") if data.get("launch_url") is not None else None
    faults = check_faults(data.get("faults", []))
    if conn.execute(select(smart_clients.c.client_id).where(smart_clients.c.client_id == client_id)).first():
        raise Conflict(f"A client '{client_id}' is already registered")
    secret = None
    if not public and jwks is None and jwks_url is None:
        secret = secrets.token_urlsafe(32)
    conn.execute(
        insert(smart_clients).values(
            client_id=client_id,
            public=public,
            secret_hash=secret_hash(secret) if secret else None,
            redirect_uris=orjson.dumps(redirect_uris).decode(),
            scopes=" ".join(scopes),
            jwks=orjson.dumps(jwks).decode() if jwks is not None else None,
            jwks_url=jwks_url,
            auto_approve=auto_approve,
            launch_url=launch_url,
            faults=orjson.dumps(faults).decode(),
            created_at=instant_now()[1],
        )
    )
    if owner is not None:
        conn.execute(insert(smart_client_owners).values(client_id=client_id, user_id=owner))
    return get_client(conn, client_id), secret


def _client(row: Any) -> Client:
    return Client(
        client_id=row.client_id,
        public=row.public,
        redirect_uris=tuple(orjson.loads(row.redirect_uris)),
        scopes=tuple(row.scopes.split()),
        jwks=orjson.loads(row.jwks) if row.jwks else None,
        jwks_url=row.jwks_url,
        auto_approve=row.auto_approve,
        launch_url=row.launch_url,
        faults=frozenset(orjson.loads(row.faults or "[]")),
        has_secret=row.secret_hash is not None,
        created_at=row.created_at,
    )


def find_client(conn: Connection, client_id: str) -> Client | None:
    row = conn.execute(select(smart_clients).where(smart_clients.c.client_id == client_id)).first()
    return _client(row) if row else None


def get_client(conn: Connection, client_id: str) -> Client:
    found = find_client(conn, client_id)
    if found is None:
        raise NotFound(f"There is no client '{client_id}'")
    return found


def list_clients(conn: Connection, *, owner: str | None = None) -> list[Client]:
    """Every client, or with ``owner`` only those that user registered."""
    query = select(smart_clients).order_by(smart_clients.c.client_id)
    if owner is not None:
        query = query.join(smart_client_owners, smart_client_owners.c.client_id == smart_clients.c.client_id).where(
            smart_client_owners.c.user_id == owner
        )
    return [_client(row) for row in conn.execute(query)]


def client_owners(conn: Connection) -> dict[str, str]:
    """client_id -> the user id who registered it, for the clients registered through the vendor console."""
    return {row.client_id: row.user_id for row in conn.execute(select(smart_client_owners))}


def delete_client(conn: Connection, client_id: str) -> None:
    """The registration, and everything issued to it in every sandbox: a client registered later under the same
    id must not inherit a refresh token (a public client authenticates by its id alone)."""
    get_client(conn, client_id)
    for table in (smart_clients, smart_client_owners, smart_launches, smart_codes, smart_tokens, smart_assertions):
        conn.execute(delete(table).where(table.c.client_id == client_id))


def set_faults(conn: Connection, client_id: str, faults: object) -> Client:
    checked = check_faults(faults)
    get_client(conn, client_id)
    conn.execute(
        update(smart_clients)
        .where(smart_clients.c.client_id == client_id)
        .values(faults=orjson.dumps(checked).decode())
    )
    return get_client(conn, client_id)


def secret_matches(conn: Connection, client_id: str, secret: str) -> bool:
    row = conn.execute(select(smart_clients.c.secret_hash).where(smart_clients.c.client_id == client_id)).first()
    return bool(row and row.secret_hash and hmac.compare_digest(row.secret_hash, secret_hash(secret)))


def launch_url(client: Client, launch: str, iss: str) -> str | None:
    """Where a "Launch app" button sends the browser: the client's launch URL with ``launch`` and ``iss``."""
    if client.launch_url is None:
        return None
    joiner = "&" if urlsplit(client.launch_url).query else "?"
    return client.launch_url + joiner + urlencode({"launch": launch, "iss": iss})
