"""Rendering web pages: autoescaped Jinja2 templates, and the security headers on every web response."""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine, Sequence
from typing import Any
from urllib.parse import urlsplit

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
    own_policy = response.headers.get("Content-Security-Policy")
    response.headers.update(SECURITY_HEADERS)
    if own_policy:  # a page that opens a SMART app widens the policy for that app's origin, on that response only
        response.headers["Content-Security-Policy"] = own_policy
    return response


_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of a URL, when it is safe to name in a CSP source list (no spaces, no ``;``)."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    return origin if _ORIGIN.match(origin) else None


def csp_allowing(*, frame_src: Sequence[str] = (), form_action: Sequence[str] = ()) -> dict[str, str]:
    """The pages' Content-Security-Policy with some other origins allowed: as an iframe's source (``frame-src``),
    or as where a form may send the browser (``form-action`` also governs the redirect that answers a post)."""
    policy = SECURITY_HEADERS["Content-Security-Policy"]
    if form_action:
        policy = policy.replace("form-action 'self'", " ".join(["form-action 'self'", *sorted(set(form_action))]))
    if frame_src:
        policy += "; frame-src " + " ".join(sorted(set(frame_src)))
    return {"Content-Security-Policy": policy}


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
