"""The FHIR REST routes: thin handlers that parse HTTP, call Interactions, and shape responses.

The same router serves the default sandbox at ``/fhir`` and every other one at
``/sandboxes/{sandbox_id}/fhir``.  Sync handlers run in the thread pool; the
database work they do is synchronous SQLAlchemy.  Read by id, and on PostgreSQL
most searches, are awaited on the event loop instead (``Database.loop_rows``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

import sandbox.fhir.paths  # noqa: F401  (registers the typed path segments)
from sandbox.concurrency import run_in_threadpool
from sandbox.fhir.context import FhirContext, fhir_context
from sandbox.fhir.interactions import check_id
from sandbox.fhir.outcome import FhirError, Issue, not_found
from sandbox.fhir.resource_types import is_resource_type
from sandbox.fhir.responses import (
    fhir_response,
    history_bundle,
    prefer_return,
    prefer_strict,
    resource_headers,
    searchset,
    write_response,
)
from sandbox.fhir.search import SearchResult
from sandbox.fhir.search_plan import SearchPlan, parse
from sandbox.fhir.subsetting import subset
from sandbox.fhir.validation import parse_json, parse_resource
from sandbox.fhir.values import date_range, instant_now

router = APIRouter()

HISTORY_PARAMS = {"_count", "_offset", "_since", "_at", "_snapshot"}


def _type(rtype: str) -> str:
    if not is_resource_type(rtype):
        raise FhirError.of(404, "not-supported", f"Unknown resource type '{rtype}'")
    return rtype


def _if_match(request: Request) -> int | None:
    raw = request.headers.get("if-match")
    if raw is None:
        return None
    value = raw.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        raise FhirError.of(400, "invalid", f"If-Match must be a version ETag like W/\"3\", not '{raw}'")
    return int(value)


async def _body(request: Request) -> bytes:
    limit = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise FhirError.of(413, "too-costly", f"The request body is larger than {limit} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise FhirError.of(413, "too-costly", f"The request body is larger than {limit} bytes")
    return body


def _query(request: Request) -> list[tuple[str, str]]:
    return [(k, v) for k, v in request.query_params.multi_items()]


# ---- history -----------------------------------------------------------------------------------------


def _history_instant(name: str, raw: str) -> tuple[str, str]:
    found = date_range(raw)
    if found is None:
        raise FhirError.of(400, "invalid", f"{name} must be a FHIR date, dateTime or instant, not '{raw}'")
    return found


def _history(ctx: FhirContext, request: Request, rtype: str | None, rid: str | None) -> Response:
    """Instance, type and system history, newest first.

    ``_since`` (written at or after), ``_at`` (current at some point in that
    period), ``_count``; the paging links carry ``_snapshot``, the time the first
    page was taken, so later pages do not shift while others write.
    """
    query = _query(request)
    params: dict[str, str] = {}
    for name, value in query:
        if name in params and name in HISTORY_PARAMS:
            raise FhirError.of(400, "invalid", f"{name} may appear only once in a history request")
        params[name] = value
    unknown = sorted(set(params) - HISTORY_PARAMS - {"_format", "_pretty"})
    if unknown and prefer_strict(request.headers.get("prefer")):
        raise FhirError.of(400, "not-supported", f"History does not support {', '.join(unknown)}")
    raw_count = params.get("_count", str(ctx.fhir.default_count))
    if not raw_count.isdigit():
        raise FhirError.of(400, "invalid", f"_count must be a non-negative integer, not '{raw_count}'")
    count = min(int(raw_count), ctx.fhir.max_count)
    raw_offset = params.get("_offset", "0")
    if not raw_offset.isdigit():
        raise FhirError.of(400, "invalid", f"_offset must be a non-negative integer, not '{raw_offset}'")
    offset = int(raw_offset)
    since = _history_instant("_since", params["_since"])[0] if "_since" in params else None
    at = _history_instant("_at", params["_at"]) if "_at" in params else None
    until = _history_instant("_snapshot", params["_snapshot"])[0] if "_snapshot" in params else None
    with ctx.db.read() as conn:
        if rtype and rid:
            ctx.fhir.repo.current(conn, ctx.view, rtype, rid) or _raise_not_found(rtype, rid)
        ctx.fhir.check_history(conn, ctx.view, rtype, rid)
        versions, total = ctx.fhir.repo.history(
            conn, ctx.view, rtype=rtype, rid=rid, since=since, at=at, until=until, limit=count, offset=offset
        )
    if until is None:
        # The newest version listed now bounds every later page, so versions written meanwhile cannot shift them.
        until = versions[0].last_updated if versions and offset == 0 else instant_now()[1]
    snapshot = until + "Z"
    page_url = "/".join(p for p in (ctx.base, rtype, rid, "_history") if p)
    link_query = [(k, v) for k, v in query if k != "_snapshot"] + [("_snapshot", snapshot)]
    return fhir_response(
        history_bundle(versions, total, ctx.base, page_url, query, link_query, offset=offset, count=count)
    )


def _raise_not_found(rtype: str, rid: str) -> Any:
    raise not_found(rtype, rid)


@router.get("/_history")
def history_system(request: Request, ctx: FhirContext = Depends(fhir_context)) -> Response:
    return _history(ctx, request, None, None)


@router.get("/{rtype}/_history")
def history_type(rtype: str, request: Request, ctx: FhirContext = Depends(fhir_context)) -> Response:
    return _history(ctx, request, _type(rtype), None)


@router.get("/{rtype}/{rid}/_history")
def history_instance(rtype: str, rid: str, request: Request, ctx: FhirContext = Depends(fhir_context)) -> Response:
    return _history(ctx, request, _type(rtype), rid)


# ---- search -------------------------------------------------------------------------------------


async def _search(ctx: FhirContext, request: Request, rtype: str | None, query: list[tuple[str, str]]) -> Response:
    """Parse on the loop, then run the search there (``Interactions.searches_on_loop``) or in the thread pool."""
    strict = prefer_strict(request.headers.get("prefer"))
    fhir = ctx.fhir
    plan = parse(fhir.registry, rtype, query, strict=strict, default_count=fhir.default_count, max_count=fhir.max_count)
    if fhir.searches_on_loop(ctx.db, plan):
        result = await fhir.run_plan_on_loop(ctx.db, ctx.view, plan)
        return _searchset(ctx, rtype, query, plan, result)
    return await run_in_threadpool(_search_in_pool, ctx, rtype, query, plan)


def _search_in_pool(ctx: FhirContext, rtype: str | None, query: list[tuple[str, str]], plan: SearchPlan) -> Response:
    with ctx.db.read(snapshot=ctx.db.read_snapshots) as conn:
        result = ctx.fhir.run_plan(conn, ctx.view, plan)
    return _searchset(ctx, rtype, query, plan, result)


def _searchset(
    ctx: FhirContext, rtype: str | None, query: list[tuple[str, str]], plan: SearchPlan, result: SearchResult
) -> Response:
    page_url = f"{ctx.base}/{rtype}" if rtype else ctx.base
    return fhir_response(searchset(result, ctx.base, query, page_url, summary=plan.summary, elements=plan.elements))


@router.get("")
async def search_system(request: Request, ctx: FhirContext = Depends(fhir_context)) -> Response:
    """Search across types: ``GET [base]?_type=Patient,Observation&_lastUpdated=ge2024``."""
    return await _search(ctx, request, None, _query(request))


@router.get("/{rtype}")
async def search_type(rtype: str, request: Request, ctx: FhirContext = Depends(fhir_context)) -> Response:
    return await _search(ctx, request, _type(rtype), _query(request))


async def _form_query(request: Request) -> list[tuple[str, str]]:
    """POST _search: the URL's parameters plus the form body's."""
    body = await _body(request)
    content_type = request.headers.get("content-type", "")
    if "application/x-www-form-urlencoded" not in content_type:
        raise FhirError.of(415, "not-supported", "POST _search takes an application/x-www-form-urlencoded body")
    return _query(request) + parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)


@router.post("/_search")
async def search_system_post(request: Request, ctx: FhirContext = Depends(fhir_context)) -> Response:
    return await _search(ctx, request, None, await _form_query(request))


@router.post("/{rtype}/_search")
async def search_type_post(rtype: str, request: Request, ctx: FhirContext = Depends(fhir_context)) -> Response:
    _type(rtype)
    return await _search(ctx, request, rtype, await _form_query(request))


# ---- instance reads --------------------------------------------------------------------------------


@router.get("/{rtype}/{rid}")
async def read(rtype: str, rid: str, request: Request, ctx: FhirContext = Depends(fhir_context)) -> Response:
    """Read by id, the hottest route: awaited on the event loop, no thread hop (``Database.loop_rows``)."""
    _type(rtype)
    stored = await ctx.fhir.read_on_loop(ctx.db, ctx.view, rtype, rid)
    headers = resource_headers(stored)
    if request.headers.get("if-none-match", "").strip() == stored.etag:
        return Response(status_code=304, headers=headers)
    summary = request.query_params.get("_summary")
    elements = tuple(e for e in request.query_params.get("_elements", "").split(",") if e)
    if summary or elements:
        return fhir_response(subset(stored.content or b"", summary, elements), headers=headers)
    return fhir_response(stored.content, headers=headers)


@router.get("/{rtype}/{rid}/_history/{vid}")
def vread(rtype: str, rid: str, vid: str, ctx: FhirContext = Depends(fhir_context)) -> Response:
    _type(rtype)
    with ctx.db.read() as conn:
        stored = ctx.fhir.vread(conn, ctx.view, rtype, rid, vid)
    return fhir_response(stored.content, headers=resource_headers(stored))


# ---- writes -------------------------------------------------------------------------------------------


@router.post("/{rtype}")
async def create(rtype: str, request: Request, ctx: FhirContext = Depends(fhir_context)) -> Response:
    _type(rtype)
    resource = parse_resource(await _body(request), rtype)
    if_none_exist = request.headers.get("if-none-exist")
    prefer = prefer_return(request.headers.get("prefer"))

    def work() -> Response:
        with ctx.db.write() as conn:
            outcome = ctx.fhir.create(conn, ctx.view, resource, ctx.actor, if_none_exist=if_none_exist)
        return write_response(outcome.stored, 201 if outcome.created else 200, ctx.base, prefer)

    return await run_in_threadpool(work)


@router.put("/{rtype}/{rid}")
async def update(rtype: str, rid: str, request: Request, ctx: FhirContext = Depends(fhir_context)) -> Response:
    _type(rtype)
    check_id(rid)
    resource = parse_resource(await _body(request), rtype)
    if_match = _if_match(request)
    prefer = prefer_return(request.headers.get("prefer"))

    def work() -> Response:
        with ctx.db.write() as conn:
            outcome = ctx.fhir.update(conn, ctx.view, rtype, rid, resource, ctx.actor, if_match=if_match)
        return write_response(outcome.stored, 201 if outcome.created else 200, ctx.base, prefer)

    return await run_in_threadpool(work)


@router.put("/{rtype}")
async def conditional_update(rtype: str, request: Request, ctx: FhirContext = Depends(fhir_context)) -> Response:
    _type(rtype)
    criteria = str(request.url.query)
    resource = parse_resource(await _body(request), rtype)
    if_match = _if_match(request)
    prefer = prefer_return(request.headers.get("prefer"))

    def work() -> Response:
        with ctx.db.write() as conn:
            outcome = ctx.fhir.conditional_update(
                conn, ctx.view, rtype, criteria, resource, ctx.actor, if_match=if_match
            )
        return write_response(outcome.stored, 201 if outcome.created else 200, ctx.base, prefer)

    return await run_in_threadpool(work)


@router.patch("/{rtype}/{rid}")
async def patch(rtype: str, rid: str, request: Request, ctx: FhirContext = Depends(fhir_context)) -> Response:
    _type(rtype)
    content_type = request.headers.get("content-type", "")
    if "json-patch+json" not in content_type:
        raise FhirError.of(
            415, "not-supported", "PATCH takes a JSON Patch body (Content-Type: application/json-patch+json)"
        )
    operations = parse_json(await _body(request))
    if_match = _if_match(request)
    prefer = prefer_return(request.headers.get("prefer"))

    def work() -> Response:
        with ctx.db.write() as conn:
            outcome = ctx.fhir.patch(conn, ctx.view, rtype, rid, operations, ctx.actor, if_match=if_match)
        return write_response(outcome.stored, 200, ctx.base, prefer)

    return await run_in_threadpool(work)


@router.delete("/{rtype}/{rid}")
def delete(rtype: str, rid: str, request: Request, ctx: FhirContext = Depends(fhir_context)) -> Response:
    _type(rtype)
    if_match = _if_match(request)
    with ctx.db.write() as conn:
        stored = ctx.fhir.delete(conn, ctx.view, rtype, rid, ctx.actor, if_match=if_match)
    headers = {"ETag": stored.etag} if stored else {}
    return fhir_response(None, 204, headers)


@router.delete("/{rtype}")
def conditional_delete(rtype: str, request: Request, ctx: FhirContext = Depends(fhir_context)) -> Response:
    _type(rtype)
    with ctx.db.write() as conn:
        count = ctx.fhir.conditional_delete(conn, ctx.view, rtype, str(request.url.query), ctx.actor)
    message = f"Deleted {count} {rtype}" if count else f"No {rtype} matched; nothing deleted"
    return fhir_response(
        {"resourceType": "OperationOutcome", "issue": [Issue("informational", message, "information").to_json()]}
    )


# ---- the hot routes -------------------------------------------------------------------------------------


async def _hot_read(request: Request) -> Response:
    params = request.path_params
    return await read(params["rtype"], params["rid"], request, await fhir_context(request))


async def _hot_search(request: Request) -> Response:
    return await _search(await fhir_context(request), request, _type(request.path_params["rtype"]), _query(request))


class _HotRoute(Route):
    """A Starlette route that names itself in the scope, as FastAPI's do: the metrics label requests by it."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


def hot_routes(base: str) -> list[Route]:
    """Read by id and type search again, at typed paths (sandbox/fhir/paths.py) and as plain Starlette routes,
    for the app to try before anything else under ``base``.

    The router tries routes one by one, and these two otherwise pass the $operations, $export and _history
    routes first; FastAPI's per-request dependency solving was a third of a read's CPU.  Typed segments
    cannot take another route's URL; a URL they refuse (an id with a character R4 does not allow) reaches
    ``router``'s untyped routes, which answer it as before.  The handlers are the same.
    """
    return [
        _HotRoute(f"{base}/{{rtype:fhir_type}}/{{rid:fhir_id}}", _hot_read, methods=["GET"], include_in_schema=False),
        _HotRoute(f"{base}/{{rtype:fhir_type}}", _hot_search, methods=["GET"], include_in_schema=False),
    ]
