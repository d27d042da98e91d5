"""The server's RS256 signing key (id_tokens), kept in the database so that every worker signs with the same one.

The first worker to need it generates it and inserts it under a fixed name; a worker that loses that race
reads the winner's.  It survives restarts because it lives in the database, and it is public through the
JWKS endpoint.  It is a sandbox's key: stored as a JWK in the clear, not in a secret store.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson
from joserfc.jwk import RSAKey
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from sandbox.fhir.values import instant_now
from sandbox.store.database import Database
from sandbox.store.schema import smart_keys

_NAME = "signing"


class SigningKeys:
    """The signing key of one database, loaded (or created) once per process."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._key: RSAKey | None = None

    @property
    def key(self) -> RSAKey:
        if self._key is None:
            self._key = self._load() or self._create()
        return self._key

    @property
    def kid(self) -> str:
        return str(self.key.kid)

    def jwks(self) -> dict[str, Any]:
        public = self.key.as_dict(private=False)
        return {"keys": [{**public, "use": "sig", "alg": "RS256"}]}

    def _load(self) -> RSAKey | None:
        with self.db.read() as conn:
            row = conn.execute(select(smart_keys.c.private_jwk).where(smart_keys.c.name == _NAME)).first()
        return RSAKey.import_key(orjson.loads(row.private_jwk)) if row else None

    def _create(self) -> RSAKey:
        kid = secrets.token_hex(8)
        key = RSAKey.generate_key(2048, parameters={"kid": kid}, private=True)
        try:
            with self.db.write() as conn:
                conn.execute(
                    insert(smart_keys).values(
                        name=_NAME,
                        kid=kid,
                        private_jwk=orjson.dumps(key.as_dict(private=True)).decode(),
                        created_at=instant_now()[1],
                    )
                )
        except IntegrityError:
            pass  # another worker stored one first: use theirs
        found = self._load()
        assert found is not None
        return found
