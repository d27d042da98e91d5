"""The FHIR interactions on one sandbox, shared by the REST routes, transaction bundles and the web UI.

Each write runs inside the caller's database transaction (a ``Connection`` from
``Database.write()``), so a transaction bundle is all-or-nothing simply by
calling these in one unit of work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import jsonpatch
from sqlalchemy import Connection

from sandbox.fhir.outcome import FhirError, gone, not_found
from sandbox.fhir.search import SearchResult, run_search, run_search_on_loop
from sandbox.fhir.search_params import Registry
from sandbox.fhir.search_plan import SearchPlan, parse
from sandbox.fhir.validation import parse_json, validate
from sandbox.store.database import Database
from sandbox.store.layers import View
from sandbox.store.repository import Actor, Repository, Stored

# The largest page a search assembles on the event loop (``searches_on_loop``): each entry costs the loop a few
# µs, tens with ``_elements`` or ``_summary`` (which re-parse it), so a page holds other requests up a millisecond
# or two at most.
LOOP_PAGE_LIMIT = 100
_ID_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")


@dataclass(frozen=True)
class WriteOutcome:
    stored: Stored
    created: bool  # 201 rather than 200
    changed: bool = True  # False when a conditional create matched an existing resource


def check_id(rid: str) -> str:
    if not rid or len(rid) > 64 or not set(rid) <= _ID_CHARS:
        raise FhirError.of(400, "invalid", f"'{rid}' is not a valid FHIR id (1-64 of A-Z a-z 0-9 - .)")
    return rid


class Interactions:
    def __init__(self, repo: Repository, registry: Registry, *, default_count: int = 20, max_count: int = 1000):
        self.repo = repo
        self.registry = registry
        self.default_count = default_count
        self.max_count = max_count

    # ---- reads ---------------------------------------------------------------------------------

    def read(self, conn: Connection, view: View, rtype: str, rid: str) -> Stored:
        return _readable(self.repo.current(conn, view, rtype, rid), rtype, rid)

    async def read_on_loop(self, db: Database, view: View, rtype: str, rid: str) -> Stored:
        """``read`` as a unit of work of its own, awaited on the event loop (the read-by-id route).  A subclass
        that checks more on ``read`` (``ScopedInteractions``) overrides this too."""
        return _readable(await self.repo.current_on_loop(db, view, rtype, rid), rtype, rid)

    def vread(self, conn: Connection, view: View, rtype: str, rid: str, vid: str) -> Stored:
        if not vid.isdigit():
            raise FhirError.of(404, "not-found", f"{rtype}/{rid} has no version '{vid}'")
        stored = self.repo.version(conn, view, rtype, rid, int(vid))
        if stored is None:
            if self.repo.current(conn, view, rtype, rid) is None:
                raise not_found(rtype, rid)
            raise FhirError.of(404, "not-found", f"{rtype}/{rid} has no version {vid}")
        if stored.deleted:
            raise FhirError.of(410, "deleted", f"Version {vid} of {rtype}/{rid} is a deletion")
        return stored

    def search(
        self, conn: Connection, view: View, rtype: str | None, query: list[tuple[str, str]], *, strict: bool = False
    ) -> SearchResult:
        plan = parse(
            self.registry, rtype, query, strict=strict, default_count=self.default_count, max_count=self.max_count
        )
        return self.run_plan(conn, view, plan)

    def run_plan(self, conn: Connection, view: View, plan: SearchPlan) -> SearchResult:
        """Run a parsed search: the one place searches run, so a restricted caller's limits apply to all."""
        return run_search(conn, self.repo, view, plan)

    def searches_on_loop(self, db: Database, plan: SearchPlan) -> bool:
        """Whether ``run_plan_on_loop`` may run ``plan`` (the search routes ask).  Where the database is awaited
        (PostgreSQL) a search costs the loop only the Python work around its statements, which grows with the
        page: pages up to ``LOOP_PAGE_LIMIT`` entries.  ``_include``s (statements per hop, through the
        repository) stay in the thread pool; so does everything a restricted caller (a subclass) searches."""
        return db.loop_rows_wait and not plan.includes and plan.count <= LOOP_PAGE_LIMIT

    async def run_plan_on_loop(self, db: Database, view: View, plan: SearchPlan) -> SearchResult:
        """``run_plan`` awaited on the event loop, each statement a unit of work of its own: for a plan that
        ``searches_on_loop`` accepts.  Through the thread pool a search on PostgreSQL cost the server about
        twice the CPU (the hop there and back, the pooled connection, SQLAlchemy's execution of the statement)."""
        return await run_search_on_loop(db, view, plan)

    def match(self, conn: Connection, view: View, rtype: str, criteria: str) -> list[Stored]:
        """Resources matching conditional-operation criteria (``identifier=x|1``); at most two are fetched."""
        query = parse_qsl(criteria.lstrip("?"), keep_blank_values=True)
        if not query:
            raise FhirError.of(400, "invalid", "Conditional operations need search criteria")
        plan = parse(self.registry, rtype, query, strict=True, default_count=2)
        plan.count, plan.total, plan.includes = 2, "none", []
        return self.run_plan(conn, view, plan).matches

    # ---- writes --------------------------------------------------------------------------------

    def create(
        self,
        conn: Connection,
        view: View,
        resource: dict[str, Any],
        actor: Actor,
        *,
        if_none_exist: str | None = None,
        rid: str | None = None,
        expected_type: str | None = None,
    ) -> WriteOutcome:
        """``expected_type``: the type the request names (a conditional update's URL), checked with the rest."""
        validate(resource, expected_type)
        rtype = resource["resourceType"]
        if if_none_exist:
            found = self.match(conn, view, rtype, if_none_exist)
            if len(found) > 1:
                raise FhirError.of(412, "duplicate", f"If-None-Exist '{if_none_exist}' matched more than one {rtype}")
            if found:
                return WriteOutcome(found[0], created=False, changed=False)
        assigned = rid is None  # a server-assigned id: no layer holds a version of it, so none is looked up
        rid = rid or self.repo.new_id()
        self.before_write(conn, view, rtype, None)
        stored = self.repo.write(
            conn, view, resource, actor, rtype=rtype, rid=rid, method="POST", previous=None, new=assigned
        )
        self.after_write(conn, view, [stored], created=True)
        return WriteOutcome(stored, created=True)

    def update(
        self,
        conn: Connection,
        view: View,
        rtype: str,
        rid: str,
        resource: dict[str, Any],
        actor: Actor,
        *,
        if_match: int | None = None,
        method: str = "PUT",
    ) -> WriteOutcome:
        check_id(rid)
        validate(resource, rtype)
        if "id" not in resource:
            raise FhirError.of(400, "required", "An update must carry the resource's id", f"{rtype}.id")
        if resource["id"] != rid:
            raise FhirError.of(400, "invalid", f"The resource's id '{resource['id']}' does not match the URL's '{rid}'")
        previous = self.repo.current(conn, view, rtype, rid)
        self.before_write(conn, view, rtype, previous)
        stored = self.repo.write(
            conn,
            view,
            resource,
            actor,
            rtype=rtype,
            rid=rid,
            method=method,
            expected_version=if_match,
            previous=previous,
        )
        created = previous is None or previous.deleted
        self.after_write(conn, view, [stored], created=created)
        return WriteOutcome(stored, created=created)

    def conditional_update(
        self,
        conn: Connection,
        view: View,
        rtype: str,
        criteria: str,
        resource: dict[str, Any],
        actor: Actor,
        *,
        if_match: int | None = None,
    ) -> WriteOutcome:
        found = self.match(conn, view, rtype, criteria)
        if len(found) > 1:
            raise FhirError.of(
                412, "multiple-matches", f"Conditional update '{criteria}' matched more than one {rtype}"
            )
        if found:
            rid = found[0].id
            if "id" in resource and resource["id"] != rid:
                raise FhirError.of(400, "invalid", f"The resource's id does not match the matched {rtype}/{rid}")
            return self.update(conn, view, rtype, rid, {**resource, "id": rid}, actor, if_match=if_match)
        rid = resource.get("id")
        if rid is not None:
            check_id(rid)
            if self.repo.current(conn, view, rtype, rid) is not None:
                raise FhirError.of(409, "conflict", f"{rtype}/{rid} exists but does not match '{criteria}'")
        # Validated once, by create: the id set aside here was checked above.
        without_id = {k: v for k, v in resource.items() if k != "id"}
        return self.create(conn, view, without_id, actor, rid=rid, expected_type=rtype)

    def patch(
        self,
        conn: Connection,
        view: View,
        rtype: str,
        rid: str,
        operations: Any,
        actor: Actor,
        *,
        if_match: int | None = None,
    ) -> WriteOutcome:
        # Not ``self.read``: patching needs the update permission, which ``update`` checks, not the read one.
        current = Interactions.read(self, conn, view, rtype, rid)
        if not isinstance(operations, list) or not all(isinstance(op, dict) for op in operations):
            raise FhirError.of(400, "structure", "A JSON Patch body is an array of operation objects")
        try:
            patched = jsonpatch.apply_patch(parse_json(current.content or b"{}"), operations)
        except jsonpatch.InvalidJsonPatch as exc:  # a malformed patch document (RFC 5789: 400), not a failed one
            raise FhirError.of(400, "structure", f"The JSON Patch is malformed: {exc}") from None
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as exc:
            raise FhirError.of(422, "processing", f"The JSON Patch cannot be applied: {exc}") from None
        if not isinstance(patched, dict) or patched.get("resourceType") != rtype or patched.get("id") != rid:
            raise FhirError.of(422, "processing", "A patch may not change the resource's type or id")
        return self.update(conn, view, rtype, rid, patched, actor, if_match=if_match, method="PATCH")

    def delete(
        self, conn: Connection, view: View, rtype: str, rid: str, actor: Actor, *, if_match: int | None = None
    ) -> Stored | None:
        """Delete; deleting what is absent or already deleted succeeds and changes nothing (returns None)."""
        check_id(rid)
        previous = self.repo.current(conn, view, rtype, rid)
        if previous is None or previous.deleted:
            return None
        self.before_write(conn, view, rtype, previous, deleting=True)
        return self.repo.write(
            conn, view, None, actor, rtype=rtype, rid=rid, method="DELETE", expected_version=if_match, previous=previous
        )

    # ---- hooks for a restricted caller (``sandbox/fhir/scoped.py``); everyone else may do anything ----------

    def before_write(
        self, conn: Connection, view: View, rtype: str, previous: Stored | None, *, deleting: bool = False
    ) -> None:
        """Called before every write with the version it replaces (None or a tombstone: a creation)."""

    def after_write(self, conn: Connection, view: View, written: list[Stored], *, created: bool) -> None:
        """Called after writes, in the same transaction: raising undoes them."""

    def check_history(self, conn: Connection, view: View, rtype: str | None, rid: str | None) -> None:
        """Called before a history interaction (system, type or instance)."""

    def readable_types(self, types: set[str] | None) -> set[str] | None:
        """Of ``types`` (None: all), the types the caller may read at all."""
        return types

    def visible(self, conn: Connection, view: View, found: list[Stored], permission: str = "r") -> list[Stored]:
        """Of ``found`` (current versions), those the caller may see."""
        return found

    def conditional_delete(self, conn: Connection, view: View, rtype: str, criteria: str, actor: Actor) -> int:
        found = self.match(conn, view, rtype, criteria)
        if len(found) > 1:
            raise FhirError.of(
                412, "multiple-matches", f"Conditional delete '{criteria}' matched more than one {rtype}"
            )
        for stored in found:
            self.delete(conn, view, rtype, stored.id, actor)
        return len(found)


def _readable(stored: Stored | None, rtype: str, rid: str) -> Stored:
    """What a read by id answers: the current version, 404 if it never existed, 410 (with its ETag) if deleted."""
    if stored is None:
        raise not_found(rtype, rid)
    if stored.deleted:
        error = gone(rtype, rid)
        error.headers["ETag"] = stored.etag
        raise error
    return stored
