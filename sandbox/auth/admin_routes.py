"""The SMART part of the admin API (admin token): registering apps and making EHR launches for vendors' CI.

- ``POST /admin/clients`` ``{"client_id", "redirect_uris", "scopes", "public", "jwks" | "jwks_url",
  "auto_approve", "launch_url", "faults"}`` -> 201 with the client (and ``client_secret``, once, for a
  confidential client without keys); ``GET /admin/clients``, ``GET`` and ``DELETE /admin/clients/{id}``;
  ``PUT /admin/clients/{id}/faults`` ``{"faults": [...]}`` switches simulated failures on and off.
- ``POST /admin/launches`` ``{"client_id", "sandbox", "patient", "encounter"?, "user"?, "appContext"?}`` -> 201
  ``{"launch", "iss", "launch_url"}``; ``appContext`` (as a CDS card's SMART link carries it) comes back in the
  launch's token response, so a vendor's CI can test an app's handling of it without a CDS service.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from sqlalchemy import Connection
from starlette.responses import Response

from sandbox.admin.routes import _caller, _json_object, _run
from sandbox.auth import clients
from sandbox.auth.launches import create_launch
from sandbox.urls import public_root

router = APIRouter()


@router.post("/clients", status_code=201)
async def register(request: Request) -> dict[str, Any]:
    _caller(request)
    data = await _json_object(request)
    client, secret = await _run(request, lambda conn: clients.register_client(conn, data))
    body = client.to_json()
    if secret is not None:
        body["client_secret"] = secret  # shown once; only its hash is kept
    return body


@router.get("/clients")
async def list_all(request: Request) -> dict[str, Any]:
    _caller(request)
    found = await _run(request, clients.list_clients, read_only=True)
    return {"clients": [c.to_json() for c in found]}


@router.get("/clients/{client_id}")
async def get_one(client_id: str, request: Request) -> dict[str, Any]:
    _caller(request)
    client = await _run(request, lambda conn: clients.get_client(conn, client_id), read_only=True)
    return client.to_json()


@router.delete("/clients/{client_id}", status_code=204)
async def remove(client_id: str, request: Request) -> Response:
    _caller(request)
    await _run(request, lambda conn: clients.delete_client(conn, client_id))
    return Response(status_code=204)


@router.put("/clients/{client_id}/faults")
async def faults(client_id: str, request: Request) -> dict[str, Any]:
    _caller(request)
    data = await _json_object(request)
    client = await _run(request, lambda conn: clients.set_faults(conn, client_id, data.get("faults")))
    return client.to_json()


@router.post("/launches", status_code=201)
async def launch(request: Request) -> dict[str, Any]:
    _caller(request)
    data = await _json_object(request)
    unknown = sorted(set(data) - {"client_id", "sandbox", "patient", "encounter", "user", "appContext"})
    if unknown:
        raise HTTPException(400, f"Unknown fields: {', '.join(unknown)}")
    for key in ("client_id", "sandbox", "patient"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise HTTPException(400, f"'{key}' is required (a string)")
    for key in ("encounter", "user", "appContext"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise HTTPException(400, f"'{key}' must be a string")
    root = public_root(request)
    policy = request.app.state.smart.policy

    def work(conn: Connection) -> dict[str, Any]:
        value, iss = create_launch(
            conn,
            data["client_id"],
            data["sandbox"],
            data["patient"],
            data.get("encounter"),
            data.get("user"),
            root=root,
            policy=policy,
            app_context=data.get("appContext"),
        )
        client = clients.get_client(conn, data["client_id"])
        return {"launch": value, "iss": iss, "launch_url": clients.launch_url(client, value, iss)}

    return await _run(request, work)
