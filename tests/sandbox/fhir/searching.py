"""A small driver for search tests: write resources through the one write path, search, read back ids.

Search tests run below HTTP where they can (faster, and they exercise the same
Interactions the routes call); the HTTP-facing behaviour has its own tests.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from sandbox.app import ensure_default_sandbox
from sandbox.fhir.interactions import Interactions
from sandbox.fhir.search import SearchResult
from sandbox.fhir.search_params import registry
from sandbox.store.database import Database
from sandbox.store.layers import View
from sandbox.store.repository import Actor, Repository

DEFAULT = View("default", ("default",))


class Store:
    def __init__(self, db: Database, view: View = DEFAULT) -> None:
        ensure_default_sandbox(db)
        self.db = db
        self.view = view
        self.repo = Repository(registry())
        self.fhir = Interactions(self.repo, registry())

    def put(self, resource: dict[str, Any], view: View | None = None) -> str:
        """Create or update a resource with the id it carries."""
        with self.db.write() as conn:
            self.fhir.update(conn, view or self.view, resource["resourceType"], resource["id"], resource, Actor())
        return resource["id"]

    def put_all(self, *resources: dict[str, Any]) -> None:
        for resource in resources:
            self.put(resource)

    def delete(self, rtype: str, rid: str, view: View | None = None) -> None:
        with self.db.write() as conn:
            self.fhir.delete(conn, view or self.view, rtype, rid, Actor())

    def search(self, rtype: str | None, query: str, *, strict: bool = False, view: View | None = None) -> SearchResult:
        with self.db.read() as conn:
            return self.fhir.search(
                conn, view or self.view, rtype, parse_qsl(query, keep_blank_values=True), strict=strict
            )

    def ids(self, rtype: str | None, query: str, view: View | None = None) -> list[str]:
        """Ids of the matches, in result order."""
        return [m.id for m in self.search(rtype, query, view=view).matches]

    def found(self, rtype: str | None, query: str, view: View | None = None) -> set[str]:
        return set(self.ids(rtype, query, view))


def patient(rid: str, **fields: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": rid, **fields}


def observation(rid: str, **fields: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid, "status": "final", "code": {"text": "x"}, **fields}
