"""The FHIR interactions as a SMART token may use them: its scopes enforced on every read, search and write.

``ScopedInteractions`` is what ``FhirContext.fhir`` holds for a request with a SMART access token.  It
changes no interaction; it adds the checks, all through the one search engine:

- a type the token has no permission on at all: 403 before anything runs;
- searches carry a restriction (``SearchPlan.restriction``): the patient's compartment for ``patient/``
  scopes, the scope's query for query-filtered scopes; ``_include``/``_revinclude`` results are filtered
  the same way;
- a read (and vread, instance history, ``$meta``) checks the resource with a search by ``_id`` under the
  restriction: outside it, 403;
- a write checks the version it replaces before writing (update ``u``, delete ``d``; creating needs
  ``c``), and the written resource after, in the same transaction: a write that would leave the
  token's reach (an Observation for another patient) is undone and answers 403;
- history across a type or the system needs search permission on every type concerned without a
  patient or query restriction (history is not indexed by compartment).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from sandbox.auth.scopes import Access, Way
from sandbox.concurrency import run_in_threadpool
from sandbox.fhir.interactions import Interactions, WriteOutcome
from sandbox.fhir.outcome import FhirError, not_found
from sandbox.fhir.resource_types import resource_types
from sandbox.fhir.search import SearchResult
from sandbox.fhir.search_params import patient_compartment
from sandbox.fhir.search_plan import Allowed, SearchPlan, parse
from sandbox.store.database import Database
from sandbox.store.layers import View
from sandbox.store.repository import Actor, Stored

_NAMES = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


def forbidden(message: str) -> FhirError:
    return FhirError.of(403, "forbidden", message)


class ScopedInteractions(Interactions):
    def __init__(self, base: Interactions, access: Access, scopes: str) -> None:
        super().__init__(base.repo, base.registry, default_count=base.default_count, max_count=base.max_count)
        self.access = access
        self.scope_text = scopes  # for messages

    # ---- the rules -----------------------------------------------------------------------------------

    def _require(self, rtype: str, permission: str) -> tuple[Way, ...] | None:
        ways = self.access.ways(rtype, permission)
        if ways == ():
            raise forbidden(f"The token's scopes ({self.scope_text}) do not allow {_NAMES[permission]} on {rtype}")
        return ways

    def _allowed(self, rtype: str, ways: tuple[Way, ...]) -> tuple[Allowed, ...]:
        """The scopes' ways as search terms; a query that does not parse for this type reaches nothing."""
        params = self.registry.params(rtype)
        compartment = tuple(params[code] for code in patient_compartment().get(rtype, ()) if code in params)
        found = []
        for way in ways:
            if way.patient is not None and not compartment and rtype != "Patient":
                continue  # a type outside the Patient compartment: a patient/ scope reaches none of it
            clauses = ()
            if way.query:
                try:
                    clauses = tuple(parse(self.registry, rtype, list(way.query), strict=True).clauses)
                except FhirError:
                    continue
            found.append(Allowed(way.patient, compartment, clauses))
        return tuple(found)

    def _restrict(self, plan: SearchPlan, permission: str) -> None:
        types = [plan.resource_type] if plan.resource_type else list(plan.types or sorted(resource_types()))
        restriction: dict[str, tuple[Allowed, ...]] = {}
        limited = False
        for rtype in types:
            ways = self.access.ways(rtype, permission)
            if ways is None:
                restriction[rtype] = (Allowed(None, (), ()),)
            else:
                limited = True
                if ways:
                    restriction[rtype] = self._allowed(rtype, ways)
        if plan.resource_type and not restriction.get(plan.resource_type):
            self._require(plan.resource_type, permission)
        if plan.types and not restriction:
            raise forbidden(f"The token's scopes ({self.scope_text}) allow {_NAMES[permission]} on none of _type")
        if limited:
            plan.restriction = restriction

    def visible(self, conn: Connection, view: View, found: list[Stored], permission: str = "r") -> list[Stored]:
        by_type: dict[str, list[Stored]] = {}
        for stored in found:
            by_type.setdefault(stored.resource_type, []).append(stored)
        seen: set[tuple[str, str]] = set()
        for rtype, items in by_type.items():
            ways = self.access.ways(rtype, permission)
            if ways is None:
                seen.update((rtype, s.id) for s in items)
            elif ways:
                ids = tuple(s.id for s in items)
                plan = SearchPlan(rtype, ids=ids, count=len(ids), total="none")
                plan.restriction = {rtype: self._allowed(rtype, ways)}
                seen.update((rtype, s.id) for s in super().run_plan(conn, view, plan).matches)
        return [s for s in found if (s.resource_type, s.id) in seen]

    def _check_one(self, conn: Connection, view: View, stored: Stored, permission: str) -> None:
        if not self.visible(conn, view, [stored], permission):
            raise forbidden(
                f"{stored.resource_type}/{stored.id} is outside what the token's scopes ({self.scope_text}) "
                f"allow to {_NAMES[permission]}"
            )

    # ---- reads -----------------------------------------------------------------------------------------

    def read(self, conn: Connection, view: View, rtype: str, rid: str) -> Stored:
        self._require(rtype, "r")
        stored = super().read(conn, view, rtype, rid)
        self._check_one(conn, view, stored, "r")
        return stored

    async def read_on_loop(self, db: Database, view: View, rtype: str, rid: str) -> Stored:
        """The scope check is a search: the read and its check take a thread and a unit of work of their own."""
        self._require(rtype, "r")

        def read() -> Stored:
            with db.read(snapshot=db.read_snapshots) as conn:
                return self.read(conn, view, rtype, rid)

        return await run_in_threadpool(read)

    def vread(self, conn: Connection, view: View, rtype: str, rid: str, vid: str) -> Stored:
        self._require(rtype, "r")
        stored = super().vread(conn, view, rtype, rid, vid)
        self._check_current(conn, view, rtype, rid, "r")
        return stored

    def _check_current(self, conn: Connection, view: View, rtype: str, rid: str, permission: str) -> None:
        """Older versions are reachable when the resource as it is now is (a deleted one: not at all)."""
        current = self.repo.current(conn, view, rtype, rid)
        if current is None:
            raise not_found(rtype, rid)
        self._check_one(conn, view, current, permission)

    def searches_on_loop(self, db: Database, plan: SearchPlan) -> bool:
        """The scopes' limits and the check of each include run with the search, in the thread pool."""
        return False

    def run_plan(self, conn: Connection, view: View, plan: SearchPlan) -> SearchResult:
        self._restrict(plan, "s")
        result = super().run_plan(conn, view, plan)
        result.included = self.visible(conn, view, result.included, "s")
        return result

    def check_history(self, conn: Connection, view: View, rtype: str | None, rid: str | None) -> None:
        if rtype and rid:
            self._require(rtype, "r")
            self._check_current(conn, view, rtype, rid, "r")
            return
        for each in [rtype] if rtype else sorted(resource_types()):
            if self.access.ways(each, "s") is not None:
                where = f"{rtype}/_history" if rtype else "_history"
                raise forbidden(
                    f"{where} needs search permission on {rtype or 'every type'} without a patient or query "
                    f"restriction; read a resource's own history ({rtype or 'Type'}/[id]/_history) instead"
                )

    def readable_types(self, types: set[str] | None) -> set[str] | None:
        candidates = types if types is not None else {"Patient", *patient_compartment()}
        return {t for t in candidates if self.access.may(t, "r")}

    # ---- writes ----------------------------------------------------------------------------------------
    # The write permission is checked on the type before a conditional write searches (which needs "s"),
    # so a token that may not write learns nothing from the match; the hooks below then check each write.

    def create(
        self, conn: Connection, view: View, resource: dict[str, Any], actor: Actor, **options: Any
    ) -> WriteOutcome:
        if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
            self._require(resource["resourceType"], "c")
        return super().create(conn, view, resource, actor, **options)

    def conditional_update(
        self,
        conn: Connection,
        view: View,
        rtype: str,
        criteria: str,
        resource: dict[str, Any],
        actor: Actor,
        **options: Any,
    ) -> WriteOutcome:
        if not self.access.may(rtype, "u") and not self.access.may(rtype, "c"):
            self._require(rtype, "u")
        return super().conditional_update(conn, view, rtype, criteria, resource, actor, **options)

    def conditional_delete(self, conn: Connection, view: View, rtype: str, criteria: str, actor: Actor) -> int:
        self._require(rtype, "d")
        return super().conditional_delete(conn, view, rtype, criteria, actor)

    def before_write(
        self, conn: Connection, view: View, rtype: str, previous: Stored | None, *, deleting: bool = False
    ) -> None:
        if previous is None or previous.deleted:
            self._require(rtype, "c")
            return
        permission = "d" if deleting else "u"
        self._require(rtype, permission)
        self._check_one(conn, view, previous, permission)

    def after_write(self, conn: Connection, view: View, written: list[Stored], *, created: bool) -> None:
        permission = "c" if created else "u"
        reachable = {(s.resource_type, s.id) for s in self.visible(conn, view, written, permission)}
        for stored in written:
            if (stored.resource_type, stored.id) not in reachable:
                raise forbidden(
                    f"The {stored.resource_type} written would be outside what the token's scopes "
                    f"({self.scope_text}) allow to {_NAMES[permission]}; nothing was written"
                )
