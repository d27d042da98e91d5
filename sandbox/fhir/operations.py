"""FHIR operations: ``Patient/[id]/$everything``, ``$validate``, ``$meta``, ``$meta-add``, ``$meta-delete``.

``OPERATIONS`` is what the CapabilityStatement advertises, so a name is listed
there only when a route below serves it.  Any other ``$name`` answers
not-supported instead of falling through to the read and search routes.
This router is mounted before the generic one (see ``app.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import Connection, Integer, Select, String, and_, bindparam, case, func, or_, select, tuple_
from starlette.responses import Response

import sandbox.fhir.paths  # noqa: F401  (registers the {operation:fhir_operation} segment)
from sandbox.concurrency import run_in_threadpool
from sandbox.fhir.compartment import compartment_members
from sandbox.fhir.context import FhirContext, fhir_context
from sandbox.fhir.interactions import check_id
from sandbox.fhir.outcome import FhirError, Issue, operation_outcome
from sandbox.fhir.resource_types import is_resource_type
from sandbox.fhir.responses import fhir_response, prefer_strict, searchset
from sandbox.fhir.routes import _body, _type
from sandbox.fhir.search import SearchResult, resolve_includes
from sandbox.fhir.search_cursor import Cursor, decode
from sandbox.fhir.search_plan import Include
from sandbox.fhir.search_sql import visible
from sandbox.fhir.validation import parse_json, validate
from sandbox.fhir.values import date_range
from sandbox.store.layers import View
from sandbox.store.repository import Stored
from sandbox.store.schema import resources

router = APIRouter()

_SPEC = "http://hl7.org/fhir/OperationDefinition/"
_BULK = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"


@dataclass(frozen=True)
class Operation:
    name: str  # without the "$"
    definition: str
    resource_types: tuple[str, ...] | None  # None: every resource type; () for a system-level operation
    levels: tuple[str, ...]  # "system", "type" and/or "instance"


OPERATIONS: tuple[Operation, ...] = (
    Operation("everything", _SPEC + "Patient-everything", ("Patient",), ("instance",)),
    Operation("validate", _SPEC + "Resource-validate", None, ("type", "instance")),
    Operation("meta", _SPEC + "Resource-meta", None, ("instance",)),
    Operation("meta-add", _SPEC + "Resource-meta-add", None, ("instance",)),
    Operation("meta-delete", _SPEC + "Resource-meta-delete", None, ("instance",)),
    # FHIR Bulk Data Access 2.0.0, served by ``sandbox/bulk/routes.py``.
    Operation("export", _BULK + "export", (), ("system",)),
    Operation("export", _BULK + "patient-export", ("Patient",), ("type",)),
    Operation("export", _BULK + "group-export", ("Group",), ("instance",)),
)
# Resources that $everything brings along when the patient's records refer to them.
EVERYTHING_REFERENCED = ("Practitioner", "Organization", "Location", "Medication")


def _parameters(body: bytes) -> list[dict[str, Any]]:
    """The ``parameter`` list of a Parameters body (validated); an empty body is no parameters."""
    if not body.strip():
        return []
    parameters = validate(parse_json(body), "Parameters")
    return list(parameters.get("parameter", []))


def _value(part: dict[str, Any]) -> Any:
    for key, value in part.items():
        if key.startswith("value"):
            return value
    return None


# ---- $everything ----------------------------------------------------------------------------------


@router.get("/Patient/{rid}/$everything")
def everything_get(rid: str, request: Request, ctx: FhirContext = Depends(fhir_context)) -> Response:
    query = list(request.query_params.multi_items())
    return _everything(ctx, rid, query, prefer_strict(request.headers.get("prefer")))


@router.post("/Patient/{rid}/$everything")
async def everything_post(rid: str, request: Request, ctx: FhirContext = Depends(fhir_context)) -> Response:
    query = list(request.query_params.multi_items())
    for part in _parameters(await _body(request)):
        value = _value(part)
        if value is None:
            raise FhirError.of(400, "invalid", f"Parameter '{part.get('name')}' of $everything needs a value")
        query.append((str(part["name"]), str(value)))
    return await run_in_threadpool(_everything, ctx, rid, query, prefer_strict(request.headers.get("prefer")))


def _everything(ctx: FhirContext, rid: str, query: list[tuple[str, str]], strict: bool) -> Response:
    """The patient, its compartment, and the practitioners, organizations, locations and medications they name.

    Compartment membership and references come from the search index
    (``sp_reference``), never from scanning stored JSON.  Pages hold the
    patient and compartment resources (search mode ``match``, patient first,
    then by type and id) and page by cursor like searches; what a page's
    resources refer to comes along as ``include``.
    """
    check_id(rid)
    fhir = ctx.fhir
    since: str | None = None
    types: set[str] | None = None
    count = fhir.default_count
    cursor: Cursor | None = None
    ignored: list[Issue] = []
    for name, raw in query:
        if name == "_since":
            found = date_range(raw)
            if found is None:
                raise FhirError.of(400, "invalid", f"_since must be an instant, not '{raw}'")
            since = found[0]
        elif name == "_type":
            wanted = {t.strip() for t in raw.split(",") if t.strip()}
            unknown = sorted(t for t in wanted if not is_resource_type(t))
            if unknown or not wanted:
                raise FhirError.of(400, "invalid", f"_type names unknown resource types: {', '.join(unknown) or raw}")
            types = wanted if types is None else types | wanted
        elif name == "_count":
            if not raw.isdigit():
                raise FhirError.of(400, "invalid", f"_count must be a non-negative integer, not '{raw}'")
            count = min(int(raw), fhir.max_count)
        elif name == "_cursor":
            cursor = decode(raw, _EVERYTHING_ORDER, 1)
            if cursor.values[0] not in (0, 1) or isinstance(cursor.values[0], bool):
                raise FhirError.of(400, "invalid", "This _cursor is not one of this server's; start again")
        elif name not in ("_format", "_pretty"):
            issue = Issue(
                "not-supported",
                f"$everything parameter '{name}' is not supported and was ignored",
                "error" if strict else "warning",
            )
            if strict:
                raise FhirError(400, [issue])
            ignored.append(issue)
    with ctx.db.read() as conn:
        fhir.read(conn, ctx.view, "Patient", rid)  # 404 or 410 before anything else
        types = fhir.readable_types(types)  # a SMART token: only the types its scopes reach
        page = _compartment_page(conn, ctx.view, rid, types, since, count, cursor)
        wanted_refs = [t for t in EVERYTHING_REFERENCED if types is None or t in types]
        includes = [Include("*", None, t, False, False) for t in wanted_refs]
        included = resolve_includes(conn, fhir.repo, ctx.view, page.matches, includes)
        page.matches = fhir.visible(conn, ctx.view, page.matches)
        included = fhir.visible(conn, ctx.view, included)
    page.included = [s for s in included if not since or s.last_updated >= since]
    page.issues = ignored
    return fhir_response(searchset(page, ctx.base, query, f"{ctx.base}/Patient/{rid}/$everything"))


_EVERYTHING_ORDER = "$everything"  # what the cursors are made for: patient first, then type, then id


def _compartment_page(
    conn: Connection,
    view: View,
    pid: str,
    types: set[str] | None,
    since: str | None,
    count: int,
    cursor: Cursor | None,
) -> SearchResult:
    statements = _compartment_statements(view, frozenset(types) if types is not None else None)
    if statements is None:
        return SearchResult([], total=0)
    total_statement, first, forward_from, backward_from = statements
    params: dict[str, Any] = {"pid": pid, "since": since}
    total = conn.execute(total_statement, params).scalar_one()
    if count == 0:
        return SearchResult([], total=total)
    forward = cursor is None or cursor.forward
    params["limit"] = count + 1
    if cursor is None:
        statement = first
    else:
        statement = forward_from if forward else backward_from
        params.update(c_flag=cursor.values[0], c_type=cursor.resource_type, c_id=cursor.id)
    rows = conn.execute(statement, params).all()
    more = len(rows) > count
    rows = rows[:count] if forward else list(reversed(rows[:count]))
    page = [
        Stored(row.resource_type, row.id, row.version_id, row.last_updated, False, row.content, row.layer_id)
        for row in rows
    ]
    result = SearchResult(page, total=total)
    if rows and (more if forward else True):
        last = rows[-1]
        result.next_cursor = Cursor(True, False, _EVERYTHING_ORDER, (last.flag,), last.resource_type, last.id)
    if rows and (cursor is not None if forward else more):
        first_row = rows[0]
        result.previous_cursor = Cursor(
            False, False, _EVERYTHING_ORDER, (first_row.flag,), first_row.resource_type, first_row.id
        )
    return result


@lru_cache(maxsize=256)
def _compartment_statements(view: View, types: frozenset[str] | None) -> tuple[Select, Select, Select, Select] | None:
    """The count and page statements of $everything for one sandbox and ``_type``, built once.

    The compartment is a union of some sixty branches; building and compiling
    it anew on every request cost several times what running it does, so the
    statements take the patient, ``_since``, the cursor and the limit as bind
    parameters and stay in SQLAlchemy's compiled cache.
    """
    members = compartment_members(view, types, bindparam("pid"))
    if members is None:
        return None
    m = members.subquery("members")
    r = resources
    # Joining on the members' keys reaches the resources table by its primary key, member by member.
    joined = r.join(m, and_(r.c.layer_id == m.c.layer_id, r.c.resource_type == m.c.resource_type, r.c.id == m.c.id))
    since = bindparam("since", type_=String)
    where = [visible(view, None, r), or_(since.is_(None), r.c.last_updated >= since)]
    total = select(func.count()).select_from(joined).where(*where)
    flag = case((and_(r.c.resource_type == "Patient", r.c.id == bindparam("pid")), 0), else_=1)
    order = [flag, r.c.resource_type, r.c.id]
    position = tuple_(
        bindparam("c_flag", type_=Integer), bindparam("c_type", type_=String), bindparam("c_id", type_=String)
    )
    columns = (r.c.layer_id, r.c.resource_type, r.c.id, r.c.version_id, r.c.last_updated, r.c.content)
    limit = bindparam("limit", type_=Integer)
    page = select(*columns, flag.label("flag")).select_from(joined).where(*where).limit(limit)
    return (
        total,
        page.order_by(*order),
        page.where(tuple_(*order) > position).order_by(*order),
        page.where(tuple_(*order) < position).order_by(*[o.desc() for o in order]),
    )


# ---- $validate -------------------------------------------------------------------------------------

_MODES = ("create", "update", "delete")


class _Rollback(Exception):
    """Undoes a trial write: $validate runs the real interaction and throws its result away."""


@router.post("/{rtype}/$validate")
async def validate_type(rtype: str, request: Request, ctx: FhirContext = Depends(fhir_context)) -> Response:
    return await _validate(ctx, request, _type(rtype), None)


@router.post("/{rtype}/{rid}/$validate")
async def validate_instance(
    rtype: str, rid: str, request: Request, ctx: FhirContext = Depends(fhir_context)
) -> Response:
    return await _validate(ctx, request, _type(rtype), check_id(rid))


async def _validate(ctx: FhirContext, request: Request, rtype: str, rid: str | None) -> Response:
    body = await _body(request)
    mode = request.query_params.get("mode")
    profile = request.query_params.get("profile")
    resource: Any = None
    payload = parse_json(body) if body.strip() else None
    if isinstance(payload, dict) and payload.get("resourceType") == "Parameters" and rtype != "Parameters":
        # Not validated as a whole: the resource inside is what is being validated, invalid or not.
        parts = payload.get("parameter", [])
        if not isinstance(parts, list) or not all(
            isinstance(p, dict) and isinstance(p.get("name"), str) for p in parts
        ):
            raise FhirError.of(400, "structure", "Parameters.parameter must be a list of named parts")
        for part in parts:
            if part["name"] == "resource":
                resource = part.get("resource")
            elif part["name"] == "mode":
                mode = str(_value(part))
            elif part["name"] == "profile":
                profile = str(_value(part))
            else:
                raise FhirError.of(400, "not-supported", f"$validate has no parameter '{part['name']}'")
    else:
        resource = payload
    if mode is not None and mode not in _MODES:
        raise FhirError.of(400, "not-supported", f"$validate mode must be one of {', '.join(_MODES)}, not '{mode}'")
    if profile is not None:
        raise FhirError.of(400, "not-supported", "Validation against profiles is not supported; omit 'profile'")
    if mode in ("update", "delete") and rid is None:
        raise FhirError.of(400, "invalid", f"$validate mode={mode} is invoked on an instance: {rtype}/[id]/$validate")
    if resource is None and mode != "delete":
        raise FhirError.of(400, "required", "$validate needs a resource: the body, or a Parameters with 'resource'")
    return await run_in_threadpool(_validate_work, ctx, rtype, rid, mode, resource)


def _validate_work(ctx: FhirContext, rtype: str, rid: str | None, mode: str | None, resource: Any) -> Response:
    try:
        if mode is None:
            validate(resource, rtype)
            message = f"The {rtype} is valid"
        else:
            message = _trial(ctx, rtype, rid, mode, resource)
    except FhirError as error:
        if error.status >= 500:
            raise
        return fhir_response(operation_outcome(error.issues))
    return fhir_response(operation_outcome([Issue("informational", message, "information")]))


def _trial(ctx: FhirContext, rtype: str, rid: str | None, mode: str, resource: Any) -> str:
    """Run the create, update or delete for real inside a transaction that is then rolled back."""
    message = ""
    try:
        with ctx.db.write() as conn:
            if mode == "create":
                validate(resource, rtype)  # create takes its type from the body; $validate checks the URL's too
                ctx.fhir.create(conn, ctx.view, resource, ctx.actor)
                message = f"The {rtype} would be accepted by a create"
            elif mode == "update":
                assert rid is not None
                ctx.fhir.update(conn, ctx.view, rtype, rid, resource, ctx.actor)
                message = f"The {rtype} would be accepted as an update of {rtype}/{rid}"
            else:
                assert rid is not None
                deleted = ctx.fhir.delete(conn, ctx.view, rtype, rid, ctx.actor)
                message = (
                    f"{rtype}/{rid} can be deleted"
                    if deleted
                    else f"{rtype}/{rid} does not exist or is already deleted; a delete would change nothing"
                )
            raise _Rollback
    except _Rollback:
        pass
    return message


# ---- $meta, $meta-add, $meta-delete ----------------------------------------------------------------------


def _meta_parameters(meta: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [{"name": "return", "valueMeta": meta}]}


def _meta_of(stored: Stored) -> dict[str, Any]:
    return dict(parse_json(stored.content or b"{}").get("meta") or {})


@router.get("/{rtype}/{rid}/$meta")
@router.post("/{rtype}/{rid}/$meta")
def meta(rtype: str, rid: str, ctx: FhirContext = Depends(fhir_context)) -> Response:
    _type(rtype)
    with ctx.db.read() as conn:
        stored = ctx.fhir.read(conn, ctx.view, rtype, rid)
    return fhir_response(_meta_parameters(_meta_of(stored)))


@router.get("/{rtype}/{rid}/_history/{vid}/$meta")
@router.post("/{rtype}/{rid}/_history/{vid}/$meta")
def meta_version(rtype: str, rid: str, vid: str, ctx: FhirContext = Depends(fhir_context)) -> Response:
    _type(rtype)
    with ctx.db.read() as conn:
        stored = ctx.fhir.vread(conn, ctx.view, rtype, rid, vid)
    return fhir_response(_meta_parameters(_meta_of(stored)))


@router.post("/{rtype}/{rid}/$meta-add")
async def meta_add(rtype: str, rid: str, request: Request, ctx: FhirContext = Depends(fhir_context)) -> Response:
    return await _change_meta(ctx, request, _type(rtype), check_id(rid), add=True)


@router.post("/{rtype}/{rid}/$meta-delete")
async def meta_delete(rtype: str, rid: str, request: Request, ctx: FhirContext = Depends(fhir_context)) -> Response:
    return await _change_meta(ctx, request, _type(rtype), check_id(rid), add=False)


async def _change_meta(ctx: FhirContext, request: Request, rtype: str, rid: str, *, add: bool) -> Response:
    """Add or remove profiles, tags and security labels as a new version, written through ``update``.

    The spec lets these operations change meta without a new version; here
    every change is a version like any other write, so it is attributed to its
    actor, indexed for ``_tag``/``_security``/``_profile``, and sent to the outbox.
    A request that changes nothing writes nothing.
    """
    name = "$meta-add" if add else "$meta-delete"
    parts = _parameters(await _body(request))
    metas = [p for p in parts if p.get("name") == "meta"]
    if len(metas) != 1 or "valueMeta" not in metas[0] or len(parts) != 1:
        raise FhirError.of(400, "invalid", f"{name} takes a Parameters with exactly one 'meta' (valueMeta)")
    change: dict[str, Any] = metas[0]["valueMeta"]

    def work() -> Response:
        with ctx.db.write() as conn:
            current = ctx.fhir.read(conn, ctx.view, rtype, rid)
            resource = parse_json(current.content or b"{}")
            old = dict(resource.get("meta") or {})
            new = _merged_meta(old, change) if add else _pruned_meta(old, change)
            if new != old:
                resource["meta"] = new
                outcome = ctx.fhir.update(conn, ctx.view, rtype, rid, resource, ctx.actor, if_match=current.version_id)
                current = outcome.stored
        return fhir_response(_meta_parameters(_meta_of(current)))

    return await run_in_threadpool(work)


def _coding_key(coding: dict[str, Any]) -> tuple[Any, Any]:
    return coding.get("system"), coding.get("code")  # the spec: identity is system + code


def _merged_meta(old: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    new = dict(old)
    profiles = list(old.get("profile", []))
    profiles += [p for p in change.get("profile", []) if p not in profiles]
    if profiles:
        new["profile"] = profiles
    for key in ("tag", "security"):
        codings = list(old.get(key, []))
        seen = {_coding_key(c) for c in codings}
        for coding in change.get(key, []):
            if _coding_key(coding) not in seen:
                seen.add(_coding_key(coding))
                codings.append(coding)
        if codings:
            new[key] = codings
    return new


def _pruned_meta(old: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    new = dict(old)
    drop_profiles = set(change.get("profile", []))
    kept: dict[str, list[Any]] = {"profile": [p for p in old.get("profile", []) if p not in drop_profiles]}
    for key in ("tag", "security"):
        drop = {_coding_key(c) for c in change.get(key, [])}
        kept[key] = [c for c in old.get(key, []) if _coding_key(c) not in drop]
    for key, values in kept.items():
        if values:
            new[key] = values
        else:
            new.pop(key, None)  # FHIR JSON has no empty arrays
    return new


# ---- anything else named $... -------------------------------------------------------------------------------


def _not_supported(operation: str, where: str) -> FhirError:
    name = operation.removeprefix("$")
    known = [op for op in OPERATIONS if op.name == name]
    if not known:
        return FhirError.of(404, "not-supported", f"Operation {operation} is not supported by this server")
    served = "; ".join(_served_at(op) for op in known)
    return FhirError.of(400, "not-supported", f"{operation} is not supported {where}; it is served {served}")


def _served_at(op: Operation) -> str:
    if op.resource_types == ():
        return "at system level"
    scope = ", ".join(op.resource_types or ("any resource type",))
    return f"at {' and '.join(op.levels)} level on {scope}"


_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


@router.api_route("/{operation:fhir_operation}", methods=_ALL_METHODS, include_in_schema=False)
def unknown_system_operation(operation: str, request: Request, ctx: FhirContext = Depends(fhir_context)) -> Response:
    raise _not_supported(operation, "at system level")


@router.api_route("/{rtype}/{operation:fhir_operation}", methods=_ALL_METHODS, include_in_schema=False)
def unknown_type_operation(
    rtype: str, operation: str, request: Request, ctx: FhirContext = Depends(fhir_context)
) -> Response:
    raise _not_supported(operation, f"with {request.method} on {rtype}")


@router.api_route("/{rtype}/{rid}/{operation:fhir_operation}", methods=_ALL_METHODS, include_in_schema=False)
def unknown_instance_operation(
    rtype: str, rid: str, operation: str, request: Request, ctx: FhirContext = Depends(fhir_context)
) -> Response:
    raise _not_supported(operation, f"with {request.method} on an instance of {rtype}")
