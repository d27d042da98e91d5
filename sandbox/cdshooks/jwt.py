"""The JWT that authenticates us to a CDS service, and the JWK Set that lets the service check it.

CDS Hooks 2.0 ("Trusting CDS Clients"): every request to a service (discovery, hook call, feedback) carries
``Authorization: Bearer <JWT>`` signed with an asymmetric key (ES384 here, as the spec recommends), with
header ``kid``, ``typ: JWT`` and ``jku`` (where our JWK Set is), and claims ``iss`` (our base URL), ``aud``
(the URL being called), ``exp``, ``iat`` and a fresh ``jti``.

The private key lives in the database (``cds_signing_keys``), so every worker of a deployment signs with the
same key and it survives restarts; it is made on first use.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import orjson
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from sandbox.fhir.values import instant_now
from sandbox.store.database import Database
from sandbox.store.schema import cds_signing_keys

ALGORITHM = "ES384"
LIFETIME_SECONDS = 300  # the spec asks for short-lived tokens; five minutes covers clock skew
JWKS_PATH = "/cds-hooks/jwks.json"
_PURPOSE = "cds-hooks"


class SigningKey:
    """Our CDS Hooks signing key, loaded (or made) once per process."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._key: ECKey | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._key is not None

    def key(self) -> ECKey:
        if self._key is None:
            with self._lock:
                if self._key is None:
                    self._key = self._load_or_create()
        return self._key

    def _load_or_create(self) -> ECKey:
        with self.db.read() as conn:
            row = conn.execute(select(cds_signing_keys).where(cds_signing_keys.c.purpose == _PURPOSE)).first()
        if row is not None:
            return ECKey.import_key(orjson.loads(row.private_jwk))
        key = ECKey.generate_key("P-384", auto_kid=True)
        try:
            with self.db.write() as conn:
                conn.execute(
                    insert(cds_signing_keys).values(
                        purpose=_PURPOSE,
                        kid=key.kid,
                        private_jwk=orjson.dumps(key.as_dict(private=True)).decode(),
                        created_at=instant_now()[1],
                    )
                )
        except IntegrityError:  # another worker made one first: use theirs, so that one JWKS serves all
            return self._load_or_create()
        return key

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set, as published at ``/cds-hooks/jwks.json``."""
        public = self.key().as_dict(private=False)
        return {"keys": [{**public, "use": "sig", "alg": ALGORITHM}]}

    def sign(self, *, issuer: str, audience: str, tenant: str | None = None) -> str:
        """A fresh JWT for one request to ``audience`` (the exact URL called)."""
        key = self.key()
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": issuer,
            "aud": audience,
            "iat": now,
            "exp": now + LIFETIME_SECONDS,
            "jti": str(uuid.uuid4()),
        }
        if tenant:
            claims["tenant"] = tenant
        header = {"alg": ALGORITHM, "typ": "JWT", "kid": key.kid, "jku": issuer.rstrip("/") + JWKS_PATH}
        return jwt.encode(header, claims, key, algorithms=[ALGORITHM])
