"""Rendering web pages: autoescaped Jinja2 templates, and the security headers on every web response."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.responses import HTMLResponse, RedirectResponse, Response

# Autoescaping always on: every value a template shows may come from a user (names, cohort names, emails).
_templates = Environment(loader=PackageLoader("web", "templates"), autoescape=True, undefined=StrictUndefined)

SECURITY_HEADERS = {
    # No inline scripts or styles, no frames, forms post only here.
    "Content-Security-Policy": (
        "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # Pages hold personal data and CSRF tokens: no shared or back-button caches.
    "Cache-Control": "no-store",
}


def secure(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def page(template: str, context: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return HTMLResponse(_templates.get_template(template).render(**context), status, headers=headers)


def redirect(location: str) -> Response:
    """303 See Other: after a form post, the browser follows with a GET."""
    return RedirectResponse(location, status_code=303)


class WebRoute(APIRoute):
    """The route class of every web page: whatever the handler answers carries the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_headers(request: Request) -> Response:
            return secure(await handler(request))

        return with_headers
