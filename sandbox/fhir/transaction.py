"""Transaction and batch Bundles (FHIR R4 http.html#transaction).

A ``transaction`` runs every entry in one database transaction through the same
``Interactions`` the REST routes use, so it is all or nothing: the first entry
that fails rolls everything back and the client gets that entry's
OperationOutcome, its issues located at ``Bundle.entry[n]``.  Entries run in the
order the specification gives (DELETE, then POST, then PUT/PATCH, then
GET/HEAD); before anything is written, every entry that creates or updates gets
its identity, so ``urn:uuid:``/``urn:oid:`` fullUrls and conditional references
(``Patient?identifier=x|y``) can be rewritten to ``Type/id`` in every resource.
Resources that exist nowhere yet (plain POSTs, PUTs that create) are validated
one by one and then stored together by ``Repository.create_many``; everything
else goes through ``Interactions`` entry by entry.

A ``batch`` runs each entry in its own database transaction; a failing entry
gets its own OperationOutcome and the others still happen.  Loaders such as
Synthea send batches whose entries refer to each other by ``urn:uuid:``, so a
batch resolves those too: identities are assigned for all entries first, then
each entry is rewritten and run.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

import orjson
from sqlalchemy import Connection

from sandbox.fhir.context import FhirContext
from sandbox.fhir.interactions import WriteOutcome, check_id
from sandbox.fhir.outcome import FhirError, Issue, operation_outcome
from sandbox.fhir.resource_types import is_resource_type
from sandbox.fhir.responses import searchset
from sandbox.fhir.search_plan import parse
from sandbox.fhir.validation import dump_json, parse_json, validate
from sandbox.fhir.values import instant_now
from sandbox.store.database import driver_savepoint
from sandbox.store.repository import PreparedCreates, Stored, new_id, prepare_creates

log = logging.getLogger("ehr_sandbox")

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
# The processing order of http.html#trules; entries of one method keep their order in the Bundle.
_PHASE = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_PLACEHOLDER = ("urn:uuid:", "urn:oid:")
CREATE_CHUNK = 500  # new resources stored per statement; bounds the index rows held in memory at once
_NARRATIVE_LINK = re.compile(r'((?:href|src)\s*=\s*")(urn:(?:uuid|oid):[^"]+)(")')


@dataclass
class Entry:
    """One request entry, parsed; ``target`` is the resource it writes once its identity is known."""

    index: int
    method: str
    url: str
    rtype: str | None = None
    rid: str | None = None
    vid: str | None = None
    query: str | None = None  # the part after '?': conditional criteria or search parameters
    full_url: str | None = None
    resource: Any = None
    if_match: int | None = None
    if_none_exist: str | None = None
    target: str | None = None  # "Type/id" this entry creates or updates
    existing: Stored | None = None  # the resource a conditional create matched (nothing is written then)
    same_as: Entry | None = None  # an earlier conditional create of this Bundle with the same criteria
    stored: Stored | None = None
    fresh: bool = False  # a conditional update that matched nothing and creates a resource of a new id
    response: dict[str, Any] | None = None
    error: FhirError | None = None

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"

    @property
    def conditional(self) -> bool:
        return self.rid is None and self.query is not None


@dataclass(frozen=True)
class TransactionPlan:
    """What a transaction Bundle's creates need no database for, worked out beforehand (by the loader's
    worker processes, ``sandbox.fhir.transaction_plan``): the ids its POST entries get, and each chunk of
    creates validated and turned into rows.  ``BundleProcessor`` still runs the Bundle as always and uses
    a chunk only if the same entries turn out to create the same resources (a PUT whose resource exists
    after all is an update, and its chunk is worked out again here).
    """

    post_ids: dict[int, str]  # entry index -> the id a POST entry creates
    chunks: dict[tuple[str, tuple[int, ...]], PreparedCreates]  # (method, entry indices) -> its rows


@dataclass
class _References:
    """fullUrl -> ``Type/id`` of every entry with an identity, and conditional references resolved so far."""

    by_full_url: dict[str, str] = field(default_factory=dict)
    entry_of: dict[str, Entry] = field(default_factory=dict)
    conditional: dict[str, str] = field(default_factory=dict)


class BundleProcessor:
    """Runs one transaction or batch Bundle in one sandbox on behalf of the request's actor."""

    def __init__(
        self,
        ctx: FhirContext,
        prefer: str | None = None,
        *,
        conn: Connection | None = None,
        plan: TransactionPlan | None = None,
    ) -> None:
        """``conn``: run inside the caller's open write transaction, each unit of work (the whole
        transaction, or one batch entry) in a savepoint of it, rather than in transactions of its own.
        ``plan``: what was worked out for this very Bundle beforehand (``TransactionPlan``)."""
        self.ctx = ctx
        self.prefer = prefer
        self.conn = conn
        self.plan = plan
        self.refs = _References()
        self.creates: dict[tuple[str, str], Entry] = {}  # conditional creates by (type, criteria)

    # ---- entry point ---------------------------------------------------------------------------------

    def process(self, bundle: Any) -> bytes:
        return dump_json(self.run(bundle))

    def run(self, bundle: Any) -> dict[str, Any]:
        """Run the Bundle; its response Bundle, not yet serialized (``resource`` elements are fragments)."""
        kind = check_bundle(bundle, shell_checked=self.plan is not None)
        entries = self._entries(bundle)
        if kind == "transaction":
            for entry in entries:
                if entry.error is not None:
                    raise entry.error
            self._transaction(entries)
        else:
            self._batch(entries)
        response: dict[str, Any] = {
            "resourceType": "Bundle",
            "id": new_id(),
            "type": f"{kind}-response",
            "entry": [entry.response for entry in entries],
        }
        if not entries:
            del response["entry"]
        return response

    def _entries(self, bundle: dict[str, Any]) -> list[Entry]:
        entries = [self._parse_entry(n, raw) for n, raw in enumerate(bundle.get("entry") or [])]
        for entry in entries:
            if entry.full_url:
                self.refs.entry_of[entry.full_url] = entry
        return entries

    # ---- transaction -----------------------------------------------------------------------------------

    def _transaction(self, entries: list[Entry]) -> None:
        with self._writing() as conn:
            self._apply(conn, entries)

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """One all-or-nothing unit of work: a database transaction, or a savepoint in the caller's."""
        if self.conn is None:
            with self.ctx.db.write() as conn:
                yield conn
        else:
            # At the driver: SQLAlchemy's ``begin_nested`` did the same with more bookkeeping, and a group of
            # transactions POSTed together (``bundle_routes.write_group``) takes one a Bundle.
            with driver_savepoint(self.conn, "bundle"):
                yield self.conn

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        if self.conn is None:
            with self.ctx.db.read() as conn:
                yield conn
        else:
            yield self.conn  # what the caller's transaction wrote so far is visible only through it

    def _apply(self, conn: Connection, entries: list[Entry]) -> None:
        """Every entry of a transaction, in the specification's order, in the unit of work ``conn`` holds."""
        ordered = sorted(entries, key=lambda e: _PHASE[e.method])
        touched: dict[str, Entry] = {}
        for entry in ordered:
            if entry.method == "DELETE":
                self._at(entry, lambda e=entry: self._delete(conn, e, touched))
        writes = [e for e in ordered if e.method in ("POST", "PUT", "PATCH")]
        for entry in writes:
            self._at(entry, lambda e=entry: self._identify(conn, e))
            if entry.target is not None and entry.existing is None and entry.same_as is None:
                _claim(touched, entry.target, entry)
        posts = [e for e in ordered if e.method == "POST"]
        self._store_new(conn, [e for e in posts if e.existing is None and e.same_as is None], "POST")
        self._store_new(conn, self._puts_creating(conn, [e for e in ordered if e.method == "PUT"]), "PUT")
        for entry in ordered:
            if entry.method != "DELETE" and entry.stored is None:
                self._at(entry, lambda e=entry: self._run(conn, e))

    def _store_new(self, conn: Connection, entries: list[Entry], method: str) -> None:
        """Resources that exist nowhere in this view yet, stored together rather than one by one.

        Each is rewritten and validated on its own, so an error still names its
        entry; then the repository stores a chunk at a time with one statement per
        table (chunks bound the index rows held in memory for a very large Bundle).
        """
        for start in range(0, len(entries), CREATE_CHUNK):
            chunk = entries[start : start + CREATE_CHUNK]
            prepared = self._planned(chunk, method)
            if prepared is None:
                for entry in chunk:
                    self._at(entry, lambda e=entry: self._prepare_create(conn, e))
                items = [(e.rtype or "", _id_of(e), e.resource) for e in chunk]
                prepared = prepare_creates(self.ctx.fhir.registry, self.ctx.view.overlay, items, self._now())
            self._store_chunk(conn, chunk, prepared, method)

    def _now(self) -> tuple[str, str]:
        """The moment new resources are written at (``instant_now()``)."""
        return instant_now()

    def _planned(self, chunk: list[Entry], method: str) -> PreparedCreates | None:
        """The plan's rows for this chunk, if it has them for exactly these entries and resources."""
        if self.plan is None:
            return None
        prepared = self.plan.chunks.get((method, tuple(e.index for e in chunk)))
        if prepared is None or prepared.keys != tuple((e.rtype or "", _id_of(e)) for e in chunk):
            return None
        return prepared

    def _store_chunk(self, conn: Connection, chunk: list[Entry], prepared: PreparedCreates, method: str) -> None:
        fhir, view = self.ctx.fhir, self.ctx.view
        for entry in chunk:  # a SMART token's scopes: creating needs "c", and the results must stay in reach
            self._at(entry, lambda e=entry: fhir.before_write(conn, view, e.rtype or "", None))  # noqa: B023
        created = fhir.repo.store_creates(conn, view, prepared, self.ctx.actor, method=method)
        fhir.after_write(conn, view, created, created=True)
        for entry, stored in zip(chunk, created, strict=True):
            self._respond(entry, stored, 201)

    def _puts_creating(self, conn: Connection, puts: list[Entry]) -> list[Entry]:
        """The PUT entries that create (update as create): their resource was never in this view, not even deleted.

        Loaders send whole charts as PUTs with fixed ids; one lookup finds which are new.
        Any other PUT (conditional, If-Match, an id that differs) takes the one-by-one path.
        """
        candidates = self._put_candidates(puts)
        if not candidates:
            return []
        keys = [(e.rtype or "", e.rid or "") for e in candidates]
        known = self.ctx.fhir.repo.current_many(conn, self.ctx.view, keys, include_deleted=True)
        return [e for e, key in zip(candidates, keys, strict=True) if key not in known]

    def _put_candidates(self, puts: list[Entry]) -> list[Entry]:
        """The PUT entries that create if their resource is absent; any other PUT is an update, one by one."""
        return [e for e in puts if not e.conditional and e.if_match is None and e.resource.get("id") == e.rid]

    def _prepare_create(self, conn: Connection, entry: Entry) -> None:
        self._rewrite(conn, entry)
        validate(entry.resource, entry.rtype)

    # ---- batch ---------------------------------------------------------------------------------------------

    def _batch(self, entries: list[Entry]) -> None:
        ordered = [e for e in sorted(entries, key=lambda e: _PHASE[e.method]) if e.error is None]
        with self._reading() as conn:
            for entry in ordered:
                if entry.method in ("POST", "PUT", "PATCH"):
                    self._guarded(entry, lambda e=entry: self._identify(conn, e))
        for entry in ordered:
            if entry.error is not None:
                continue
            if entry.method in ("GET", "HEAD"):
                with self._reading() as conn:
                    self._guarded(entry, lambda e=entry: self._run(conn, e))
                continue

            def work(e: Entry = entry) -> None:
                with self._writing() as conn:
                    if e.method == "DELETE":
                        self._delete(conn, e, {})
                    else:
                        self._run(conn, e)

            self._guarded(entry, work)
        for entry in entries:
            if entry.error is not None:
                entry.response = {"response": _error_response(entry.error)}

    def _guarded(self, entry: Entry, work: Callable[[], None]) -> None:
        """Run one batch entry; its failure becomes its own response and touches nothing else."""
        try:
            self._at(entry, work)
        except FhirError as exc:
            entry.error = exc
        except Exception:
            log.exception("unhandled error in %s of a batch", entry.where)
            entry.error = FhirError.of(500, "exception", f"{entry.where}: internal server error; it changed nothing")

    # ---- the steps of one entry ---------------------------------------------------------------------------

    def _at(self, entry: Entry, work: Callable[[], None]) -> None:
        """Run ``work``, locating any error at this entry (``Bundle.entry[n]``) for the client."""
        try:
            work()
        except FhirError as exc:
            raise _located(exc, entry) from None

    def _identify(self, conn: Connection, entry: Entry) -> None:
        """Settle which resource a POST/PUT/PATCH writes, before any entry's references are rewritten."""
        fhir, view = self.ctx.fhir, self.ctx.view
        assert entry.rtype is not None
        if entry.method == "POST":
            if entry.if_none_exist:
                found = self._conditional_match(conn, entry.rtype, entry.if_none_exist, "If-None-Exist")
                if found:
                    entry.existing = found
                else:
                    # Loaders repeat a shared resource (a practitioner, a location) in one Bundle: create it once.
                    entry.same_as = self.creates.setdefault((entry.rtype, entry.if_none_exist), entry)
                    if entry.same_as is entry:
                        entry.same_as = None
            if entry.same_as is not None:
                assert entry.same_as.target is not None
                rid = entry.same_as.target.split("/", 1)[1]
            elif entry.existing is not None:
                rid = entry.existing.id
            else:
                planned = self.plan.post_ids.get(entry.index) if self.plan is not None else None
                rid = planned or new_id()
        elif entry.conditional:
            assert entry.query is not None
            found = self._conditional_match(conn, entry.rtype, entry.query, f"Conditional {entry.method.lower()}")
            if found is not None:
                rid = found.id
            elif entry.method == "PATCH":
                raise FhirError.of(404, "not-found", f"No {entry.rtype} matches '{entry.query}'; nothing to patch")
            elif isinstance(entry.resource.get("id"), str):
                rid = check_id(entry.resource["id"])
                if fhir.repo.current(conn, view, entry.rtype, rid) is not None:
                    raise FhirError.of(
                        409, "conflict", f"{entry.rtype}/{rid} exists but does not match '{entry.query}'"
                    )
            else:
                rid, entry.fresh = new_id(), True
        else:
            assert entry.rid is not None
            rid = entry.rid
        entry.target = f"{entry.rtype}/{rid}"
        if entry.full_url:
            self.refs.by_full_url[entry.full_url] = entry.target
            base = self.ctx.base + "/"
            if entry.full_url.startswith(base):
                # A relative reference resolves against the base of the entry's absolute fullUrl.
                self.refs.by_full_url.setdefault(entry.full_url[len(base) :], entry.target)

    def _conditional_match(self, conn: Connection, rtype: str, criteria: str, what: str) -> Stored | None:
        found = self.ctx.fhir.match(conn, self.ctx.view, rtype, criteria)
        if len(found) > 1:
            raise FhirError.of(412, "multiple-matches", f"{what} '{criteria}' matched more than one {rtype}")
        return found[0] if found else None

    def _delete(self, conn: Connection, entry: Entry, touched: dict[str, Entry]) -> None:
        fhir, view, actor = self.ctx.fhir, self.ctx.view, self.ctx.actor
        assert entry.rtype is not None
        if entry.conditional:
            assert entry.query is not None
            found = self._conditional_match(conn, entry.rtype, entry.query, "Conditional delete")
            rids = [found.id] if found else []
        else:
            assert entry.rid is not None
            rids = [entry.rid]
        stored = None
        for rid in rids:
            _claim(touched, f"{entry.rtype}/{rid}", entry)
            stored = fhir.delete(conn, view, entry.rtype, rid, actor, if_match=entry.if_match)
        response: dict[str, Any] = {"status": "204 No Content"}
        if stored is not None:
            response["etag"] = stored.etag
            response["lastModified"] = stored.instant
        entry.response = {"response": response}

    def _run(self, conn: Connection, entry: Entry) -> None:
        if entry.method in ("GET", "HEAD"):
            self._read(conn, entry)
            return
        fhir, view, actor = self.ctx.fhir, self.ctx.view, self.ctx.actor
        assert entry.rtype is not None and entry.target is not None
        if entry.existing is not None:
            self._respond(entry, entry.existing, 200)
            return
        if entry.same_as is not None:
            if entry.same_as.stored is None:
                raise FhirError.of(
                    400, "processing", f"It repeats the conditional create of {entry.same_as.where}, which failed"
                )
            self._respond(entry, entry.same_as.stored, 200)
            return
        rid = entry.target.split("/", 1)[1]
        self._rewrite(conn, entry)
        outcome: WriteOutcome
        if entry.method == "POST":
            outcome = fhir.create(conn, view, entry.resource, actor, rid=rid)
        elif entry.method == "PATCH":
            outcome = fhir.patch(conn, view, entry.rtype, rid, _patch_operations(entry), actor, if_match=entry.if_match)
        elif entry.fresh:
            outcome = fhir.create(conn, view, entry.resource, actor, rid=rid)
        else:
            resource = entry.resource
            if entry.conditional:
                if resource.get("id") not in (None, rid):
                    raise FhirError.of(400, "invalid", f"The resource's id does not match the matched {entry.target}")
                resource = {**resource, "id": rid}
            outcome = fhir.update(conn, view, entry.rtype, rid, resource, actor, if_match=entry.if_match)
        self._respond(entry, outcome.stored, 201 if outcome.created else 200)

    def _read(self, conn: Connection, entry: Entry) -> None:
        fhir, view = self.ctx.fhir, self.ctx.view
        head = entry.method == "HEAD"
        if entry.rid is not None:
            assert entry.rtype is not None
            if entry.vid is not None:
                stored = fhir.vread(conn, view, entry.rtype, entry.rid, entry.vid)
            else:
                stored = fhir.read(conn, view, entry.rtype, entry.rid)
            response = {"status": "200 OK", "etag": stored.etag, "lastModified": stored.instant}
            entry.response = {"response": response}
            if not head:
                entry.response = {
                    "fullUrl": f"{self.ctx.base}/{stored.resource_type}/{stored.id}",
                    "resource": orjson.Fragment(stored.content or b"{}"),
                    "response": response,
                }
            return
        query = parse_qsl(entry.query or "", keep_blank_values=True)
        plan = parse(fhir.registry, entry.rtype, query, default_count=fhir.default_count, max_count=fhir.max_count)
        result = fhir.run_plan(conn, view, plan)
        page_url = f"{self.ctx.base}/{entry.rtype}" if entry.rtype else self.ctx.base
        body = searchset(result, self.ctx.base, query, page_url, summary=plan.summary, elements=plan.elements)
        entry.response = {"response": {"status": "200 OK"}}
        if not head:
            entry.response = {"resource": orjson.Fragment(body), "response": {"status": "200 OK"}}

    def _respond(self, entry: Entry, stored: Stored, status: int) -> None:
        entry.stored = stored
        path = f"{stored.resource_type}/{stored.id}"
        response: dict[str, Any] = {
            "status": _status_line(status),
            "location": f"{path}/_history/{stored.version_id}",
            "etag": stored.etag,
            "lastModified": stored.instant,
        }
        out: dict[str, Any] = {"fullUrl": f"{self.ctx.base}/{path}"}
        if self.prefer == "OperationOutcome":
            message = f"{path} version {stored.version_id} stored"
            response["outcome"] = operation_outcome([Issue("informational", message, "information")])
        elif self.prefer != "minimal":
            out["resource"] = orjson.Fragment(stored.content or b"{}")
        out["response"] = response
        entry.response = out

    # ---- references ---------------------------------------------------------------------------------------

    def _rewrite(self, conn: Connection, entry: Entry) -> None:
        """Point every reference at a bundle entry or a conditional reference at the ``Type/id`` it resolves to."""

        def resolve(reference: str, path: str) -> str | None:
            source = self.refs.entry_of.get(reference)
            if source is not None and source.error is not None:
                raise FhirError.of(
                    400, "processing", f"{path} refers to {source.where}, which failed", f"{entry.where}.{path}"
                )
            target = self.refs.by_full_url.get(reference)
            if target is not None:
                return target
            if reference.startswith(_PLACEHOLDER):
                raise FhirError.of(
                    400,
                    "not-found",
                    f"{path} refers to '{reference}', which is no entry's fullUrl in this Bundle",
                    f"{entry.where}.{path}",
                )
            rtype, sep, criteria = reference.partition("?")
            if sep and is_resource_type(rtype):
                return self._conditional_reference(conn, entry, reference, rtype, criteria, path)
            return None

        root = entry.resource
        if entry.method == "PATCH":
            root = entry.resource = _patch_operations(entry)
        _rewrite_references(root, "resource", resolve)

    def _conditional_reference(
        self, conn: Connection, entry: Entry, reference: str, rtype: str, criteria: str, path: str
    ) -> str:
        resolved = self.refs.conditional.get(reference)
        if resolved is not None:
            return resolved
        found = self.ctx.fhir.match(conn, self.ctx.view, rtype, criteria)
        if len(found) != 1:
            problem = "matches no" if not found else "matches more than one"
            raise FhirError.of(
                412,
                "not-found" if not found else "multiple-matches",
                f"The conditional reference '{reference}' at {path} {problem} {rtype}",
                f"{entry.where}.{path}",
            )
        resolved = f"{rtype}/{found[0].id}"
        self.refs.conditional[reference] = resolved
        return resolved

    # ---- parsing --------------------------------------------------------------------------------------------

    def _parse_entry(self, index: int, raw: Any) -> Entry:
        entry = Entry(index, "GET", "")
        try:
            _parse_into(entry, raw, self.ctx.base)
        except FhirError as exc:
            entry.error = _located(exc, entry)
        return entry


def check_bundle(bundle: Any, *, shell_checked: bool = False) -> str:
    """The Bundle's type, once it is a well-formed transaction or batch (400 or 422 otherwise).

    ``shell_checked``: the Bundle around the entries was validated already (by the planner, on this very
    Bundle), so the models need not see it again.
    """
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FhirError.of(400, "invalid", "POST to the FHIR base takes a Bundle of type transaction or batch")
    kind = bundle.get("type")
    if kind not in ("transaction", "batch"):
        raise FhirError.of(
            400, "invalid", f"A Bundle POSTed to the base must be a transaction or batch, not '{kind}'", "Bundle.type"
        )
    entries = bundle.get("entry", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise FhirError.of(400, "structure", "Bundle.entry must be an array of objects", "Bundle.entry")
    if not shell_checked:
        # Each entry's resource is validated once, when it is written; here only the Bundle around them.
        shells = [{k: v for k, v in e.items() if k != "resource"} for e in entries]
        shell = {**bundle, "entry": [s for s in shells if s]}  # an entry without request is reported as such later
        if not shell["entry"]:
            del shell["entry"]
        validate(shell, "Bundle")
    seen: dict[str, int] = {}
    for n, entry in enumerate(entries):
        full_url = entry.get("fullUrl")
        if isinstance(full_url, str) and "/_history/" not in full_url:
            if full_url in seen:
                raise FhirError.of(
                    400,
                    "invalid",
                    f"Bundle.entry[{n}] has the same fullUrl '{full_url}' as Bundle.entry[{seen[full_url]}]",
                    f"Bundle.entry[{n}].fullUrl",
                )
            seen[full_url] = n
    return kind


def _parse_into(entry: Entry, raw: dict[str, Any], base: str) -> None:
    request = raw.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("method"), str) or "url" not in request:
        raise FhirError.of(400, "required", "Each entry of a transaction or batch needs request.method and request.url")
    method = request["method"].upper()
    if method not in METHODS:
        raise FhirError.of(400, "not-supported", f"request.method '{request['method']}' is not an HTTP verb FHIR uses")
    entry.method = method
    url = str(request["url"])
    entry.url = url
    if url.startswith(base + "/"):
        url = url[len(base) + 1 :]
    elif url.startswith(("http://", "https://")):
        raise FhirError.of(400, "not-supported", f"request.url '{url}' is not on this server's base {base}")
    path, sep, query = url.lstrip("/").partition("?")
    entry.query = query if sep else None
    parts = [p for p in path.split("/") if p] if path else []
    if parts and not is_resource_type(parts[0]):
        raise FhirError.of(400, "not-supported", f"Unknown resource type '{parts[0]}' in request.url '{url}'")
    entry.rtype = parts[0] if parts else None
    entry.full_url = raw.get("fullUrl") or None
    if request.get("ifMatch") is not None:
        entry.if_match = _version_of(str(request["ifMatch"]))
    entry.if_none_exist = request.get("ifNoneExist") or None
    if method in ("GET", "HEAD"):
        _parse_read(entry, parts, url)
        return
    if method == "POST":
        if len(parts) != 1 or entry.query is not None:
            raise FhirError.of(
                400, "not-supported", f"POST entries create a resource: request.url is a type, not '{url}'"
            )
    elif len(parts) == 2 and entry.query is None:
        entry.rid = check_id(parts[1])
    elif len(parts) != 1 or not entry.query:
        raise FhirError.of(
            400, "invalid", f"{method} request.url must be '[type]/[id]' or '[type]?[criteria]', not '{url}'"
        )
    if method == "DELETE":
        return
    resource = raw.get("resource")
    if not isinstance(resource, dict):
        raise FhirError.of(400, "required", f"A {method} entry needs a resource")
    expected = "Binary" if method == "PATCH" else entry.rtype
    if resource.get("resourceType") != expected:
        raise FhirError.of(
            400,
            "invalid",
            f"The entry's resource is a {resource.get('resourceType')}, but {method} {url} needs a {expected}",
        )
    entry.resource = resource


def _parse_read(entry: Entry, parts: list[str], url: str) -> None:
    if len(parts) == 2 and parts[1] != "_history":
        entry.rid = check_id(parts[1])
    elif len(parts) == 4 and parts[2] == "_history":
        entry.rid, entry.vid = check_id(parts[1]), parts[3]
    elif len(parts) > 1:
        raise FhirError.of(400, "not-supported", f"GET entries read, vread or search; '{url}' is none of these")


def _version_of(etag: str) -> int:
    value = etag.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        raise FhirError.of(400, "invalid", f"ifMatch must be a version ETag like W/\"3\", not '{etag}'")
    return int(value)


def _patch_operations(entry: Entry) -> Any:
    """The JSON Patch a PATCH entry carries in a Binary (the R4 way), decoded once."""
    if isinstance(entry.resource, list):
        return entry.resource
    binary = entry.resource
    if "json-patch" not in str(binary.get("contentType", "")):
        raise FhirError.of(
            400,
            "not-supported",
            "A PATCH entry's Binary must hold a JSON Patch (contentType application/json-patch+json)",
        )
    try:
        return parse_json(base64.b64decode(str(binary.get("data", "")), validate=True))
    except (binascii.Error, ValueError):
        raise FhirError.of(400, "structure", "The PATCH entry's Binary.data is not base64") from None


def _id_of(entry: Entry) -> str:
    """The id of the resource an entry writes (its ``target`` is known)."""
    return (entry.target or "").split("/", 1)[1]


def _claim(touched: dict[str, Entry], target: str, entry: Entry) -> None:
    """A transaction may touch each resource once (http.html#trules: identities may not overlap)."""
    other = touched.setdefault(target, entry)
    if other is not entry:
        raise FhirError.of(400, "invalid", f"{entry.where} and {other.where} both change {target}")


def _rewrite_references(node: Any, path: str, resolve: Callable[[str, str], str | None]) -> None:
    """Rewrite, in place, every ``Reference.reference`` (nested anywhere, extensions too) and narrative link."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str):
                if key == "reference":
                    new = resolve(value, f"{path}.{key}")
                    if new is not None:
                        node[key] = new
                elif key == "div" and "urn:" in value:
                    node[key] = _NARRATIVE_LINK.sub(lambda m: _narrative_link(m, path, resolve), value)
            elif isinstance(value, dict | list):
                _rewrite_references(value, f"{path}.{key}", resolve)
    elif isinstance(node, list):
        for n, item in enumerate(node):
            if isinstance(item, dict | list):
                _rewrite_references(item, f"{path}[{n}]", resolve)


def _narrative_link(match: re.Match[str], path: str, resolve: Callable[[str, str], str | None]) -> str:
    try:
        new = resolve(match.group(2), f"{path}.div")
    except FhirError:
        return match.group(0)  # a dangling link in narrative is not worth failing the write
    return match.group(1) + (new or match.group(2)) + match.group(3)


def _located(error: FhirError, entry: Entry) -> FhirError:
    """The same error, with every issue saying which entry it came from (``Bundle.entry[n]``)."""
    where = entry.where
    label = f"{where} ({entry.method} {entry.url})" if entry.url else where
    issues = []
    for issue in error.issues:
        if issue.diagnostics.startswith(where):
            issues.append(issue)
            continue
        issues.append(
            Issue(issue.code, f"{label}: {issue.diagnostics}", issue.severity, _expression(issue.expression, entry))
        )
    return FhirError(error.status, issues)


def _expression(expression: str | None, entry: Entry) -> str:
    where = entry.where
    if not expression:
        return where
    if expression.startswith(where):
        return expression
    rtype = entry.resource.get("resourceType") if isinstance(entry.resource, dict) else None
    if rtype and (expression == rtype or expression.startswith((rtype + ".", rtype + "["))):
        return f"{where}.resource{expression[len(rtype) :]}"
    if entry.resource is not None:
        return f"{where}.resource.{expression}"
    return where


@cache
def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _error_response(error: FhirError) -> dict[str, Any]:
    return {"status": _status_line(error.status), "outcome": error.outcome()}
