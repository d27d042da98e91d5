"""Working out a transaction Bundle's creates before its database transaction.

The loader validates and indexes bundles in worker processes while its main
process writes earlier ones (``synthetic_data.loader``); ``POST [base]`` plans a
transaction before opening its write transaction, so that on SQLite one request
is validated while another's rows are written (``bundle_routes``).  ``plan_transaction``
runs ``BundleProcessor``'s own steps for a transaction (parsing, identities,
reference rewriting, validation, ``prepare_creates``), with no database: an
entry whose outcome depends on what the database holds (a DELETE, a conditional
create, update or reference, a PUT that is not a plain create-if-absent, a GET)
makes it give up, and so does any error.  Such a Bundle simply runs without a
plan, and the processor reports its errors as it always does.

What a plan holds is checked where it is used: ``BundleProcessor`` takes a
chunk's rows only if the same entries create the same resources there.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Connection

from sandbox.fhir.context import FhirContext
from sandbox.fhir.interactions import Interactions
from sandbox.fhir.outcome import FhirError
from sandbox.fhir.search_params import Registry
from sandbox.fhir.transaction import BundleProcessor, Entry, TransactionPlan, check_bundle
from sandbox.store.database import Database
from sandbox.store.layers import View
from sandbox.store.repository import Actor, PreparedCreates, Repository, Stored

# The planner's overrides below are the only steps that would use these; they stop instead.
_NO_DATABASE = cast(Database, None)
_NO_CONNECTION = cast(Connection, None)


class _NeedsDatabase(Exception):
    """The Bundle's outcome depends on what the database holds: it cannot be planned."""


def plan_transaction(
    bundle: dict[str, Any], registry: Registry, view: View, actor: Actor, base: str, now: tuple[str, str]
) -> TransactionPlan | None:
    """The plan for a transaction ``bundle`` that ``view``'s layer is to receive, its creates written at
    ``now`` (``instant_now()``, taken by the caller); None if it has no plan (see the module's text)."""
    planner = _Planner(FhirContext(_NO_DATABASE, Interactions(Repository(registry), registry), view, actor, base), now)
    try:
        if check_bundle(bundle) != "transaction":
            return None
        entries = planner._entries(bundle)
        if any(entry.error is not None or _needs_database(entry) for entry in entries):
            return None
        planner._apply(_NO_CONNECTION, entries)
    except (FhirError, _NeedsDatabase):
        return None
    post_ids = {e.index: (e.target or "").split("/", 1)[1] for e in entries if e.method == "POST"}
    return TransactionPlan(post_ids, planner.chunks)


def _needs_database(entry: Entry) -> bool:
    """Entries the planner would give up at in any case, found before any resource is validated: the HTTP
    route plans every transaction it is sent, and a plan given up on late is validation done twice."""
    return (
        entry.method not in ("POST", "PUT")
        or entry.conditional
        or entry.if_none_exist is not None
        or entry.if_match is not None
    )


class _Planner(BundleProcessor):
    def __init__(self, ctx: FhirContext, now: tuple[str, str]) -> None:
        super().__init__(ctx, "minimal")
        self.now = now
        self.chunks: dict[tuple[str, tuple[int, ...]], PreparedCreates] = {}

    def _now(self) -> tuple[str, str]:
        return self.now

    def _puts_creating(self, conn: Connection, puts: list[Entry]) -> list[Entry]:
        # Taken to create; the processor looks each up and works out again a chunk where one exists.
        return self._put_candidates(puts)

    def _store_chunk(self, conn: Connection, chunk: list[Entry], prepared: PreparedCreates, method: str) -> None:
        self.chunks[(method, tuple(e.index for e in chunk))] = prepared
        for entry, stored in zip(chunk, prepared.stored(self.ctx.actor, method), strict=True):
            entry.stored = stored

    def _delete(self, conn: Connection, entry: Entry, touched: dict[str, Entry]) -> None:
        raise _NeedsDatabase

    def _conditional_match(self, conn: Connection, rtype: str, criteria: str, what: str) -> Stored | None:
        raise _NeedsDatabase

    def _conditional_reference(
        self, conn: Connection, entry: Entry, reference: str, rtype: str, criteria: str, path: str
    ) -> str:
        raise _NeedsDatabase

    def _run(self, conn: Connection, entry: Entry) -> None:
        raise _NeedsDatabase
