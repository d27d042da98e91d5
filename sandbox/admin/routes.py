"""The admin REST API under ``/admin`` (JSON): sandboxes, baselines, users and their tokens, cohorts.

Handlers are thin: check the caller's role, parse the JSON body, call
``sandbox.store.sandboxes`` or ``sandbox.accounts`` in one write transaction,
shape the answer.  Errors are ``{"detail": "..."}`` with 400, 401, 403, 404 or 409.
Admins may do everything; a trainer may manage only the cohorts they train and
those cohorts' sandboxes; trainees and vendors get 403 everywhere here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, HTTPException, Request
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError
from starlette.responses import Response, StreamingResponse

from sandbox.accounts import cohorts as cohort_ops
from sandbox.accounts import tokens, users
from sandbox.accounts.roster import RosterLine, parse_roster
from sandbox.admin.audit import audit_bundle
from sandbox.auth import Principal
from sandbox.concurrency import run_in_threadpool
from sandbox.fhir.outcome import FhirError
from sandbox.fhir.validation import dump_json, parse_json
from sandbox.fhir.values import date_range
from sandbox.store import sandboxes
from sandbox.store.admin_errors import AdminError
from sandbox.urls import fhir_base, public_root

router = APIRouter()

T = TypeVar("T")


# ---- plumbing ------------------------------------------------------------------------------------


def _caller(request: Request, *roles: str) -> Principal:
    return request.app.state.authenticate.admin_api(request, *roles)


async def _run(request: Request, work: Callable[[Connection], T], *, read_only: bool = False) -> T:
    """Run ``work`` in one transaction off the event loop; admin errors become HTTP errors."""
    db = request.app.state.db

    def run() -> T:
        with db.read() if read_only else db.write() as conn:
            return work(conn)

    try:
        return await run_in_threadpool(run)
    except AdminError as exc:
        raise HTTPException(exc.status, exc.message) from None
    except IntegrityError:
        # Two requests raced for the same id or email; the loser changed nothing.
        raise HTTPException(409, "Another request changed the same thing at the same time; try again") from None


async def _body_bytes(request: Request) -> bytes:
    limit = request.app.state.settings.max_body_bytes
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"The request body is larger than {limit} bytes")
    return body


async def _json_object(request: Request, *, required: bool = True) -> dict[str, Any]:
    body = await _body_bytes(request)
    if not body.strip() and not required:
        return {}
    try:
        data = parse_json(body)
    except FhirError as exc:
        raise HTTPException(400, str(exc.issues[0].diagnostics)) from None
    if not isinstance(data, dict):
        raise HTTPException(400, "The request body must be a JSON object")
    if _holds_nul(data):  # PostgreSQL cannot store it; refused on SQLite too, so both backends answer alike
        raise HTTPException(400, "NUL characters (\\u0000) are not allowed in the request body")
    return data


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def _optional_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise HTTPException(400, f"'{key}' must be a string")
    return value


def _sandbox_json(request: Request, info: sandboxes.LayerInfo) -> dict[str, Any]:
    return {**info.to_json(), "fhir_base": fhir_base(request, info.id)}


def _check_trainer_reaches(conn: Connection, principal: Principal, sandbox_id: str) -> None:
    if principal.user is not None and not cohort_ops.can_reach(conn, principal.user, sandbox_id):
        raise HTTPException(403, f"Sandbox '{sandbox_id}' is not in a cohort you train")


def _check_trains(conn: Connection, principal: Principal, cohort_id: str) -> None:
    if principal.user is not None and not cohort_ops.trains(conn, principal.user, cohort_id):
        cohort_ops.get_cohort(conn, cohort_id)  # 404 first when it does not exist at all
        raise HTTPException(403, f"You do not train cohort '{cohort_id}'")


# ---- sandboxes -----------------------------------------------------------------------------------------


@router.post("/sandboxes", status_code=201)
async def create_sandbox(request: Request) -> dict[str, Any]:
    _caller(request)
    data = await _json_object(request)
    name, baseline, wanted_id = data.get("name"), _optional_str(data, "baseline"), _optional_str(data, "id")
    info = await _run(
        request,
        lambda conn: sandboxes.create_sandbox(conn, name, baseline, sandbox_id=wanted_id),  # type: ignore[arg-type]
    )
    return _sandbox_json(request, info)


@router.get("/sandboxes")
async def list_sandboxes(request: Request) -> dict[str, Any]:
    principal = _caller(request, "trainer")

    def work(conn: Connection) -> list[sandboxes.LayerInfo]:
        found = sandboxes.list_layers(conn, "sandbox")
        if principal.user is None or principal.is_admin:
            return found
        mine = cohort_ops.reachable_sandboxes(conn, principal.user)
        return [s for s in found if s.id in mine]

    return {"sandboxes": [_sandbox_json(request, s) for s in await _run(request, work, read_only=True)]}


@router.get("/sandboxes/{sandbox_id}")
async def get_sandbox(sandbox_id: str, request: Request) -> dict[str, Any]:
    principal = _caller(request, "trainer")

    def work(conn: Connection) -> sandboxes.LayerInfo:
        _check_trainer_reaches(conn, principal, sandbox_id)
        return sandboxes.get_layer(conn, sandbox_id, "sandbox", sizes=True)

    return _sandbox_json(request, await _run(request, work, read_only=True))


@router.delete("/sandboxes/{sandbox_id}", status_code=204)
async def delete_sandbox(sandbox_id: str, request: Request) -> Response:
    _caller(request)
    await _run(request, lambda conn: sandboxes.delete_sandbox(conn, sandbox_id))
    request.app.state.views.forget(sandbox_id)
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/reset")
async def reset_sandbox(sandbox_id: str, request: Request) -> dict[str, Any]:
    principal = _caller(request, "trainer")

    def work(conn: Connection) -> sandboxes.LayerInfo:
        _check_trainer_reaches(conn, principal, sandbox_id)
        return sandboxes.reset_sandbox(conn, sandbox_id)

    return _sandbox_json(request, await _run(request, work))


@router.post("/sandboxes/{sandbox_id}/snapshot", status_code=201)
async def snapshot_sandbox(sandbox_id: str, request: Request) -> dict[str, Any]:
    principal = _caller(request, "trainer")
    data = await _json_object(request)
    name, wanted_id = data.get("name"), _optional_str(data, "id")

    def work(conn: Connection) -> sandboxes.LayerInfo:
        _check_trainer_reaches(conn, principal, sandbox_id)
        return sandboxes.snapshot_sandbox(conn, sandbox_id, name, baseline_id=wanted_id)  # type: ignore[arg-type]

    info = await _run(request, work)
    return {**info.to_json(), "source_sandbox": sandbox_id}


@router.get("/sandboxes/{sandbox_id}/export")
async def export_sandbox(sandbox_id: str, request: Request, format: str = "ndjson") -> Response:
    principal = _caller(request, "trainer")

    def check(conn: Connection) -> None:
        _check_trainer_reaches(conn, principal, sandbox_id)
        sandboxes.get_layer(conn, sandbox_id, "sandbox")

    await _run(request, check, read_only=True)
    return await _export(request, sandbox_id, format, fhir_base(request, sandbox_id))


async def _export(request: Request, layer_id: str, fmt: str, base: str) -> Response:
    db = request.app.state.db
    if fmt == "bundle":

        def bundle() -> bytes:
            with db.read() as conn:
                return dump_json(sandboxes.export_bundle(conn, sandboxes.layer_view(conn, layer_id), base))

        return Response(await run_in_threadpool(bundle), media_type="application/fhir+json")
    if fmt != "ndjson":
        raise HTTPException(400, f"format must be ndjson or bundle, not '{fmt}'")

    def lines() -> Any:
        with db.read() as conn:
            yield from sandboxes.export_ndjson(conn, sandboxes.layer_view(conn, layer_id))

    return StreamingResponse(
        lines(),
        media_type="application/fhir+ndjson",
        headers={"Content-Disposition": f'attachment; filename="{layer_id}.ndjson"'},
    )


# ---- baselines -------------------------------------------------------------------------------------------


@router.get("/baselines")
async def list_baselines(request: Request) -> dict[str, Any]:
    _caller(request, "trainer")
    found = await _run(request, lambda conn: sandboxes.list_layers(conn, "baseline"), read_only=True)
    return {"baselines": [b.to_json() for b in found]}


@router.post("/baselines", status_code=201)
async def create_baseline(request: Request) -> dict[str, Any]:
    """An empty baseline for a loader to fill; a sandbox made from it freezes it."""
    _caller(request)
    data = await _json_object(request)
    name, wanted_id = data.get("name"), _optional_str(data, "id")
    info = await _run(request, lambda conn: sandboxes.create_baseline(conn, name, baseline_id=wanted_id))  # type: ignore[arg-type]
    return info.to_json()


@router.get("/baselines/{baseline_id}")
async def get_baseline(baseline_id: str, request: Request) -> dict[str, Any]:
    _caller(request, "trainer")
    return (
        await _run(request, lambda conn: sandboxes.get_layer(conn, baseline_id, "baseline", sizes=True), read_only=True)
    ).to_json()


@router.delete("/baselines/{baseline_id}", status_code=204)
async def delete_baseline(baseline_id: str, request: Request) -> Response:
    _caller(request)
    await _run(request, lambda conn: sandboxes.delete_baseline(conn, baseline_id))
    return Response(status_code=204)


@router.get("/baselines/{baseline_id}/export")
async def export_baseline(baseline_id: str, request: Request, format: str = "ndjson") -> Response:
    _caller(request)
    await _run(request, lambda conn: sandboxes.get_layer(conn, baseline_id, "baseline"), read_only=True)
    return await _export(request, baseline_id, format, public_root(request) + "/fhir")


# ---- users and tokens ------------------------------------------------------------------------------------


@router.get("/users")
async def list_users(request: Request, role: str | None = None) -> dict[str, Any]:
    _caller(request)
    return {
        "users": [u.to_json() for u in await _run(request, lambda conn: users.list_users(conn, role), read_only=True)]
    }


@router.post("/users", status_code=201)
async def create_user(request: Request) -> dict[str, Any]:
    _caller(request)
    data = await _json_object(request)
    password = _optional_str(data, "password")
    user = await _run(
        request,
        lambda conn: users.create_user(conn, data.get("name"), data.get("email"), data.get("role"), password=password),  # type: ignore[arg-type]
    )
    return user.to_json()


@router.get("/users/{user_id}")
async def get_user(user_id: str, request: Request) -> dict[str, Any]:
    _caller(request)
    return (await _run(request, lambda conn: users.get_user(conn, user_id), read_only=True)).to_json()


@router.delete("/users/{user_id}", status_code=204)
async def delete_user(user_id: str, request: Request) -> Response:
    _caller(request)
    await _run(request, lambda conn: users.delete_user(conn, user_id))
    return Response(status_code=204)


@router.post("/users/{user_id}/tokens", status_code=201)
async def issue_token(user_id: str, request: Request) -> dict[str, Any]:
    """A new API token; the secret is in this answer only."""
    _caller(request)
    data = await _json_object(request, required=False)
    label = data.get("label", "api")
    info, secret = await _run(request, lambda conn: tokens.issue_token(conn, user_id, label))
    return {**info.to_json(), "token": secret}


@router.get("/users/{user_id}/tokens")
async def list_tokens(user_id: str, request: Request) -> dict[str, Any]:
    _caller(request)
    return {
        "tokens": [
            t.to_json() for t in await _run(request, lambda conn: tokens.list_tokens(conn, user_id), read_only=True)
        ]
    }


@router.delete("/users/{user_id}/tokens/{token_id}", status_code=204)
async def revoke_token(user_id: str, token_id: str, request: Request) -> Response:
    _caller(request)
    await _run(request, lambda conn: tokens.revoke_token(conn, user_id, token_id))
    return Response(status_code=204)


# ---- cohorts -------------------------------------------------------------------------------------------------


def _roster_lines(value: Any) -> list[RosterLine]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise HTTPException(400, "'members' must be a list of {name, email, role} objects")
    lines = []
    for m in value:
        role = m.get("role", "trainee")
        if not isinstance(m.get("name"), str) or not isinstance(m.get("email"), str) or not isinstance(role, str):
            raise HTTPException(400, "Each member needs a name and an email (strings), and optionally a role")
        lines.append(RosterLine(m["name"], m["email"], role))
    return lines


@router.get("/cohorts")
async def list_cohorts(request: Request) -> dict[str, Any]:
    principal = _caller(request, "trainer")
    trainer = principal.user.id if principal.user is not None and not principal.is_admin else None
    found = await _run(request, lambda conn: cohort_ops.list_cohorts(conn, trainer), read_only=True)
    return {"cohorts": [c.to_json() for c in found]}


@router.post("/cohorts", status_code=201)
async def create_cohort(request: Request) -> dict[str, Any]:
    """``{"name", "trainer", "baseline"?, "sandbox_mode"?: "private"|"shared", "members"?: [{name, email, role}]}``.

    A trainer may create cohorts only for themself (``trainer`` omitted or their own id or email).
    """
    principal = _caller(request, "trainer")
    data = await _json_object(request)
    trainer = _optional_str(data, "trainer")
    baseline = _optional_str(data, "baseline")
    mode = _optional_str(data, "sandbox_mode") or "private"
    roster = _roster_lines(data.get("members"))
    if principal.user is not None and not principal.is_admin:
        if trainer not in (None, principal.user.id, principal.user.email):
            raise HTTPException(403, "A trainer may create cohorts only for themself")
        trainer = principal.user.id
    if trainer is None:
        raise HTTPException(400, "'trainer' (a user id or email) is required")

    def work(conn: Connection) -> cohort_ops.Cohort:
        for line in roster:
            users.check_email(line.email)
        return cohort_ops.create_cohort(
            conn,
            data.get("name"),
            trainer,
            baseline_id=baseline,
            mode=mode,
            roster=roster,  # type: ignore[arg-type]
            lab=request.app.state.settings.demo_lab,
        )

    cohort = await _run(request, work)
    return _cohort_json(request, cohort)


def _cohort_json(request: Request, cohort: cohort_ops.Cohort) -> dict[str, Any]:
    data = cohort.to_json()
    for member in data["members"]:
        member["fhir_base"] = fhir_base(request, member["sandbox"])
    return data


@router.get("/cohorts/{cohort_id}")
async def get_cohort(cohort_id: str, request: Request) -> dict[str, Any]:
    principal = _caller(request, "trainer")

    def work(conn: Connection) -> cohort_ops.Cohort:
        _check_trains(conn, principal, cohort_id)
        return cohort_ops.get_cohort(conn, cohort_id)

    return _cohort_json(request, await _run(request, work, read_only=True))


@router.delete("/cohorts/{cohort_id}", status_code=204)
async def delete_cohort(cohort_id: str, request: Request) -> Response:
    principal = _caller(request, "trainer")

    def work(conn: Connection) -> list[str]:
        _check_trains(conn, principal, cohort_id)
        ids = cohort_ops.get_cohort(conn, cohort_id).sandbox_ids
        cohort_ops.delete_cohort(conn, cohort_id)
        return ids

    for sandbox_id in await _run(request, work):
        request.app.state.views.forget(sandbox_id)
    return Response(status_code=204)


@router.post("/cohorts/{cohort_id}/members", status_code=201)
async def add_members(cohort_id: str, request: Request) -> dict[str, Any]:
    """One member as JSON (``{"user": id-or-email}`` or ``{"name", "email", "role"}``), or a CSV roster (text/csv)."""
    principal = _caller(request, "trainer")
    # Who may add members is settled before the body is read: a stranger gets 403, not a roster's 400.
    await _run(request, lambda conn: _check_trains(conn, principal, cohort_id), read_only=True)
    if "text/csv" in request.headers.get("content-type", ""):
        text = (await _body_bytes(request)).decode("utf-8", "replace")
        try:
            roster = parse_roster(text)
        except AdminError as exc:
            raise HTTPException(exc.status, exc.message) from None
    else:
        data = await _json_object(request)
        user_ref = _optional_str(data, "user")
        roster = [] if user_ref else _roster_lines([data])

    def work(conn: Connection) -> list[cohort_ops.Member]:
        _check_trains(conn, principal, cohort_id)
        lab = request.app.state.settings.demo_lab
        if not roster:
            return [cohort_ops.add_member(conn, cohort_id, user_ref, lab=lab)]  # type: ignore[arg-type]
        for line in roster:
            users.check_email(line.email)
        return cohort_ops.add_roster(conn, cohort_id, roster, lab=lab)

    added = await _run(request, work)
    return {"added": [{**m.to_json(), "fhir_base": fhir_base(request, m.sandbox_id)} for m in added]}


@router.delete("/cohorts/{cohort_id}/members/{user_ref}", status_code=204)
async def remove_member(cohort_id: str, user_ref: str, request: Request) -> Response:
    principal = _caller(request, "trainer")

    def work(conn: Connection) -> str:
        _check_trains(conn, principal, cohort_id)
        sandbox_id = cohort_ops.get_member(conn, cohort_id, user_ref).sandbox_id
        cohort_ops.remove_member(conn, cohort_id, user_ref)
        return sandbox_id

    request.app.state.views.forget(await _run(request, work))
    return Response(status_code=204)


@router.post("/cohorts/{cohort_id}/reset")
async def reset_cohort(cohort_id: str, request: Request) -> dict[str, Any]:
    principal = _caller(request, "trainer")

    def work(conn: Connection) -> list[str]:
        _check_trains(conn, principal, cohort_id)
        return cohort_ops.reset_cohort(conn, cohort_id)

    return {"reset": await _run(request, work)}


@router.post("/cohorts/{cohort_id}/members/{user_ref}/reset")
async def reset_member(cohort_id: str, user_ref: str, request: Request) -> dict[str, Any]:
    principal = _caller(request, "trainer")

    def work(conn: Connection) -> str:
        _check_trains(conn, principal, cohort_id)
        return cohort_ops.reset_member(conn, cohort_id, user_ref)

    return {"reset": [await _run(request, work)]}


# ---- attribution ----------------------------------------------------------------------------------------------


@router.get("/sandboxes/{sandbox_id}/audit")
async def sandbox_audit(sandbox_id: str, request: Request) -> Response:
    """Who wrote what in the sandbox (its own writes), as a Bundle of AuditEvents: ``?_since=&_count=&_offset=``."""
    principal = _caller(request, "trainer")
    params = request.query_params
    count, offset = params.get("_count", "100"), params.get("_offset", "0")
    if not count.isdigit() or not offset.isdigit() or not 0 < int(count) <= 1000:
        raise HTTPException(400, "_count must be 1 to 1000 and _offset a whole number")
    since = None
    if "_since" in params:
        found = date_range(params["_since"])
        if found is None:
            raise HTTPException(400, f"_since must be an instant, not '{params['_since']}'")
        since = found[0]
    base = fhir_base(request, sandbox_id)

    def work(conn: Connection) -> dict[str, Any]:
        _check_trainer_reaches(conn, principal, sandbox_id)
        sandboxes.get_layer(conn, sandbox_id, "sandbox")
        repo = request.app.state.repo
        return audit_bundle(conn, repo, sandbox_id, base, since=since, count=int(count), offset=int(offset))

    return Response(dump_json(await _run(request, work, read_only=True)), media_type="application/fhir+json")
