"""Public URLs the server hands out (fullUrl, links, fhir_base), from the configured base URL or the request."""

from __future__ import annotations

from starlette.requests import Request

from sandbox.store.layers import DEFAULT_SANDBOX

# The request's root URL by what it is made of: building it (Starlette's URL parsing) was a tenth of a read by id.
_ROOTS: dict[tuple[object, ...], str] = {}


def public_root(request: Request) -> str:
    """The server's public URL: ``EHR_SANDBOX_BASE_URL`` / ``--base-url`` when set (a proxy), else the request's."""
    base_url = request.app.state.settings.base_url
    if base_url:
        return base_url.rstrip("/")
    scope = request.scope
    server = scope.get("server")
    key = (
        scope.get("scheme"),
        tuple(server) if server else None,  # a list under some servers (and Starlette's TestClient)
        request.headers.get("host"),
        scope.get("app_root_path", scope.get("root_path", "")),
    )
    root = _ROOTS.get(key)
    if root is None:
        if len(_ROOTS) >= 256:  # Host headers are the client's to choose: keep the cache bounded
            _ROOTS.clear()
        root = _ROOTS[key] = str(request.base_url).rstrip("/")
    return root


def fhir_base(request: Request, sandbox_id: str) -> str:
    """A sandbox's FHIR base: ``/fhir`` for the default sandbox, ``/sandboxes/{id}/fhir`` for the others."""
    return fhir_base_at(public_root(request), sandbox_id)


def fhir_base_at(root: str, sandbox_id: str) -> str:
    """``fhir_base`` under a given public root, for code that has no request (a service called by a page)."""
    return root.rstrip("/") + ("/fhir" if sandbox_id == DEFAULT_SANDBOX else f"/sandboxes/{sandbox_id}/fhir")
