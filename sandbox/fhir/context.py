"""Per-request context of the FHIR API: which sandbox, who is asking, the base URL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request
from sqlalchemy import Row

from sandbox.concurrency import run_in_threadpool
from sandbox.fhir.interactions import Interactions
from sandbox.fhir.outcome import FhirError
from sandbox.fhir.scoped import ScopedInteractions
from sandbox.store.database import Database
from sandbox.store.layers import DEFAULT_SANDBOX, UnknownSandbox, View, resolve_view
from sandbox.store.repository import Actor
from sandbox.urls import public_root


@dataclass(frozen=True)
class FhirContext:
    db: Database
    fhir: Interactions
    view: View
    actor: Actor
    base: str  # the sandbox's FHIR base URL, e.g. http://127.0.0.1:8080/fhir


class Views:
    """Sandbox id -> View, cached: a sandbox's baseline never changes after creation.

    Each server process has its own cache.  Every request to a sandbox other than the default one reads the
    sandbox's row while checking credentials and ``revalidate``s the entry against it, and every write holds
    that row in its own transaction (failing if it is gone), so a View cached before another process deleted
    the sandbox is neither read through nor written through.

    HL7 v2 inbound messages check no credentials: their write transaction first holds the row with
    ``repository.hold_view``, which also matches the baseline, so a View cached before the sandbox was deleted,
    or deleted and created again on another baseline, fails the hold before anything is read or written
    through it; the message's handler then forgets it and resolves the sandbox again in that transaction.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[str, View] = {}

    def get(self, sandbox_id: str) -> View:
        try:
            return self.find(sandbox_id)
        except UnknownSandbox:
            raise FhirError.of(404, "not-found", f"There is no sandbox '{sandbox_id}'") from None

    def find(self, sandbox_id: str) -> View:
        """``get`` for callers with their own answer to a sandbox that does not exist: ``UnknownSandbox``."""
        view = self._cache.get(sandbox_id)
        if view is None:
            with self.db.read() as conn:
                view = resolve_view(conn, sandbox_id)
            self._cache[sandbox_id] = view
        return view

    def remember(self, view: View) -> None:
        """Cache a View its caller resolved itself (in its own transaction)."""
        self._cache[view.sandbox_id] = view

    def cached(self, sandbox_id: str) -> bool:
        return sandbox_id in self._cache

    def forget(self, sandbox_id: str) -> None:
        self._cache.pop(sandbox_id, None)

    def revalidate(self, sandbox_id: str, row: Row[Any] | None) -> None:
        """Drop the cached View unless ``row`` (the sandbox's ``layers`` row: kind, baseline_id, read by this
        request anyway) still describes it.  Deletes and re-creates happen in other processes too, whose
        ``forget`` never reaches this one's cache."""
        view = self._cache.get(sandbox_id)
        if view is None:
            return
        if row is None or row.kind != "sandbox" or view.layers[1:] != ((row.baseline_id,) if row.baseline_id else ()):
            self.forget(sandbox_id)


async def fhir_context(request: Request) -> FhirContext:
    """FastAPI dependency: the context for ``/fhir/...`` and ``/sandboxes/{sandbox_id}/fhir/...``.

    Checking credentials or finding a sandbox may query the database, so that
    runs in the thread pool; an anonymous request to the default sandbox needs
    no query once its View is cached, and is answered here without the thread
    hop (it was a third of the cost of a read by id).
    """
    sandbox_id = request.path_params.get("sandbox_id", DEFAULT_SANDBOX)
    if (
        sandbox_id == DEFAULT_SANDBOX
        and "authorization" not in request.headers
        and request.app.state.views.cached(sandbox_id)
    ):
        return _context(request)
    return await run_in_threadpool(_context, request)


def _context(request: Request) -> FhirContext:
    state = request.app.state
    sandbox_id = request.path_params.get("sandbox_id", DEFAULT_SANDBOX)
    caller = state.authenticate.fhir_caller(request, sandbox_id)
    view = state.views.get(sandbox_id)
    # The base the client used: /sandboxes/default/fhir stays that, though /fhir is the same sandbox.
    prefix = "/fhir" if "sandbox_id" not in request.path_params else f"/sandboxes/{sandbox_id}/fhir"
    # A SMART token's scopes hold on every interaction: the scoped interactions check each one.
    fhir = state.fhir if caller.access is None else ScopedInteractions(state.fhir, caller.access, caller.scopes)
    return FhirContext(state.db, fhir, view, caller.actor, public_root(request) + prefix)
