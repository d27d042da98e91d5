"""HTTP routes of CDS Hooks: registering services and reading the log (admin API), our JWK Set, the demo services.

Admin API (JSON, errors ``{"detail"}``), per sandbox:

- ``POST /admin/sandboxes/{id}/cds-services`` ``{"discovery_url", "id"?}``: read the discovery document and
  register its services (201); ``{"builtin": true}`` puts the built-in demo services back;
- ``GET .../cds-services``, ``GET .../cds-services/{registration}``, ``DELETE`` (204),
  ``POST .../cds-services/{registration}/refresh`` (re-read discovery);
- ``GET /admin/sandboxes/{id}/cds-log`` (``?kind=&hook=&status=&patient=&limit=&offset=``) and
  ``GET .../cds-log/{call}`` (request, response, cards and the decisions taken on them);
- ``GET /admin/sandboxes/{id}/cds-decisions``.

Who: an admin; a vendor who is a member of the sandbox (the default sandbox: read only); a trainer of the
sandbox's cohort may read.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from sqlalchemy import Connection
from starlette.responses import JSONResponse, Response

from sandbox.accounts.cohorts import can_reach
from sandbox.admin.routes import _caller, _json_object, _optional_str, _run
from sandbox.cdshooks import log, services
from sandbox.cdshooks.client import CdsClient
from sandbox.cdshooks.demo_services import router as demo_router
from sandbox.cdshooks.jwt import JWKS_PATH
from sandbox.concurrency import run_in_threadpool
from sandbox.store import sandboxes
from sandbox.store.admin_errors import AdminError
from sandbox.store.layers import DEFAULT_SANDBOX
from sandbox.urls import public_root

admin_router = APIRouter()
public_router = APIRouter()
public_router.include_router(demo_router)


@public_router.get(JWKS_PATH)
async def jwks(request: Request) -> Response:
    """Our public key, for CDS services to check the JWT on each call (the JWT's ``jku`` names this URL)."""
    return JSONResponse(await run_in_threadpool(_cds(request).signer.jwks))


def _cds(request: Request) -> CdsClient:
    return request.app.state.cds


async def _member(request: Request, sandbox_id: str, *, write: bool) -> str:
    """The caller may manage (``write``) or read the sandbox's CDS services; returns its overlay layer."""
    principal = _caller(request, "vendor", "trainer")

    def check(conn: Connection) -> str:
        sandboxes.get_layer(conn, sandbox_id, "sandbox")
        user = principal.user
        if user is not None and not principal.is_admin:
            if write and principal.role != "vendor":
                raise HTTPException(403, f"A {principal.role} may read a sandbox's CDS services, not change them")
            if write and sandbox_id == DEFAULT_SANDBOX:  # open to everyone: one vendor must not set it for all
                raise HTTPException(403, "Only an admin may change the default sandbox's CDS services")
            if not can_reach(conn, user, sandbox_id):
                raise HTTPException(403, f"You are not a member of sandbox '{sandbox_id}'")
        return sandbox_id

    await _run(request, check, read_only=True)
    return _cds(request).views.get(sandbox_id).overlay


def _registration_json(request: Request, registration: services.Registration) -> dict[str, Any]:
    return registration.to_json(public_root(request))


async def _admin(work: Any) -> Any:
    try:
        return await work
    except AdminError as exc:
        raise HTTPException(exc.status, exc.message) from None


@admin_router.post("/sandboxes/{sandbox_id}/cds-services", status_code=201)
async def register(sandbox_id: str, request: Request) -> dict[str, Any]:
    await _member(request, sandbox_id, write=True)
    data = await _json_object(request)
    if data.get("builtin") is True:
        registration = await _run(request, lambda conn: services.restore_builtin(conn, sandbox_id))
        return _registration_json(request, registration)
    url, wanted_id = data.get("discovery_url"), _optional_str(data, "id")
    registration = await _admin(
        _cds(request).register(sandbox_id, url, root=public_root(request), registration_id=wanted_id)  # type: ignore[arg-type]
    )
    return _registration_json(request, registration)


@admin_router.get("/sandboxes/{sandbox_id}/cds-services")
async def list_registrations(sandbox_id: str, request: Request) -> dict[str, Any]:
    await _member(request, sandbox_id, write=False)
    found = await _run(request, lambda conn: services.listing(conn, sandbox_id), read_only=True)
    return {"registrations": [_registration_json(request, r) for r in found]}


@admin_router.get("/sandboxes/{sandbox_id}/cds-services/{registration_id}")
async def get_registration(sandbox_id: str, registration_id: str, request: Request) -> dict[str, Any]:
    await _member(request, sandbox_id, write=False)
    found = await _run(request, lambda conn: services.get(conn, sandbox_id, registration_id), read_only=True)
    return _registration_json(request, found)


@admin_router.delete("/sandboxes/{sandbox_id}/cds-services/{registration_id}", status_code=204)
async def remove_registration(sandbox_id: str, registration_id: str, request: Request) -> Response:
    await _member(request, sandbox_id, write=True)
    await _run(request, lambda conn: services.remove(conn, sandbox_id, registration_id))
    return Response(status_code=204)


@admin_router.post("/sandboxes/{sandbox_id}/cds-services/{registration_id}/refresh")
async def refresh_registration(sandbox_id: str, registration_id: str, request: Request) -> dict[str, Any]:
    await _member(request, sandbox_id, write=True)
    registration = await _admin(_cds(request).refresh(sandbox_id, registration_id, root=public_root(request)))
    return _registration_json(request, registration)


@admin_router.get("/sandboxes/{sandbox_id}/cds-log")
async def list_calls(sandbox_id: str, request: Request) -> dict[str, Any]:
    layer = await _member(request, sandbox_id, write=False)
    params = request.query_params
    limit, offset = params.get("limit", "50"), params.get("offset", "0")
    if not limit.isdigit() or not offset.isdigit() or not 1 <= int(limit) <= 500:
        raise HTTPException(400, "limit is 1 to 500 and offset a whole number")
    kind = params.get("kind")
    if kind not in (None, "discovery", "hook", "feedback"):
        raise HTTPException(400, "kind is discovery, hook or feedback")

    def work(conn: Connection) -> list[log.Call]:
        return log.calls(
            conn,
            layer,
            kind=kind,
            hook=params.get("hook"),
            status=params.get("status"),
            patient_id=params.get("patient"),
            limit=int(limit),
            offset=int(offset),
        )

    return {"calls": [c.to_json(full=False) for c in await _run(request, work, read_only=True)]}


@admin_router.get("/sandboxes/{sandbox_id}/cds-log/{call_id}")
async def get_call(sandbox_id: str, call_id: str, request: Request) -> dict[str, Any]:
    layer = await _member(request, sandbox_id, write=False)

    def work(conn: Connection) -> dict[str, Any]:
        call = log.get_call(conn, layer, call_id)
        if call is None:
            raise HTTPException(404, f"No CDS Hooks call '{call_id}' in this sandbox's log")
        return {**call.to_json(), "decisions": [d.to_json() for d in log.decisions(conn, layer, call_id=call_id)]}

    return await _run(request, work, read_only=True)


@admin_router.get("/sandboxes/{sandbox_id}/cds-decisions")
async def list_decisions(sandbox_id: str, request: Request) -> dict[str, Any]:
    layer = await _member(request, sandbox_id, write=False)
    found = await _run(request, lambda conn: log.decisions(conn, layer), read_only=True)
    return {"decisions": [d.to_json() for d in found]}
