"""Public URLs the server hands out (fullUrl, links, fhir_base), from the configured base URL or the request."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from sandbox.store.layers import DEFAULT_SANDBOX

_roots: dict[tuple[Any, ...], str] = {}


def public_root(request: Request) -> str:
    """The server's public URL: ``EHR_SANDBOX_BASE_URL`` / ``--base-url`` when set (a proxy), else the request's."""
    base_url = request.app.state.settings.base_url
    if base_url:
        return base_url.rstrip("/")
    # Parsing the request's URL was a twentieth of a read by id; what it depends on takes a few values, so
    # remember each answer (the cache starts over past 256: a client may send any Host header).
    scope = request.scope
    server = tuple(scope.get("server") or ())  # a list under the test client
    key = (scope.get("scheme"), server, scope.get("root_path", ""), request.headers.get("host"))
    root = _roots.get(key)
    if root is None:
        if len(_roots) >= 256:
            _roots.clear()
        root = _roots[key] = str(request.base_url).rstrip("/")
    return root


def fhir_base(request: Request, sandbox_id: str) -> str:
    """A sandbox's FHIR base: ``/fhir`` for the default sandbox, ``/sandboxes/{id}/fhir`` for the others."""
    return fhir_base_at(public_root(request), sandbox_id)


def fhir_base_at(root: str, sandbox_id: str) -> str:
    """``fhir_base`` under a given public root, for code that has no request (a service called by a page)."""
    return root.rstrip("/") + ("/fhir" if sandbox_id == DEFAULT_SANDBOX else f"/sandboxes/{sandbox_id}/fhir")
