"""The ASGI middleware every HTTP request passes: a request id, Prometheus counts, one access log line.

Pure ASGI (no BaseHTTPMiddleware): it wraps ``send`` to see the status and
adds two dictionary lookups, a clock read and two metric updates to a
request, a few microseconds on the FHIR hot path.
"""

from __future__ import annotations

import logging
import time
from contextvars import Token
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.logs import REQUEST_ID, request_id_from
from sandbox.metrics import LATENCY, REQUESTS

access_log = logging.getLogger("ehr_sandbox.access")


class ObservedRequests:
    def __init__(self, app: ASGIApp, *, access_log_enabled: bool = False) -> None:
        self.app = app
        self.access_log_enabled = access_log_enabled
        # prometheus_client's labels() builds and locks on every call: keep the children it returns.
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(_header(scope, b"x-request-id"))
        token: Token[str | None] | None = REQUEST_ID.set(request_id)
        status = 500  # what the client sees if the app fails before answering
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            # The 500 handler runs outside every middleware (Starlette's ServerErrorMiddleware), in this same
            # task: leave the id set so that its log line and response carry it.  The task ends with the request.
            token = None
            raise
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            method = scope["method"]
            self._counter(method, route, status).inc()
            self._timer(method, route).observe(elapsed)
            if self.access_log_enabled:
                access_log.info(
                    "%s %s %s",
                    method,
                    scope["path"],
                    status,
                    extra={
                        "method": method,
                        "path": scope["path"],
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 3),
                    },
                )
            if token is not None:
                REQUEST_ID.reset(token)

    def _counter(self, method: str, route: str, status: int) -> Any:
        key = (method, route, status)
        child = self._counters.get(key)
        if child is None:
            child = self._counters[key] = REQUESTS.labels(method, route, str(status))
        return child

    def _timer(self, method: str, route: str) -> Any:
        key = (method, route)
        child = self._timers.get(key)
        if child is None:
            child = self._timers[key] = LATENCY.labels(method, route)
        return child


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


_templates: dict[tuple[int, str], str] = {}


def _route_template(scope: Scope) -> str:
    """The matched route's full path template (``/sandboxes/{sandbox_id}/fhir/{rtype}/{rid}``); ``unmatched``
    for a 404 on no route: one series per route, never one per URL.

    The route object knows its own template but not the prefix it was included under, so the prefix is
    the request path's leading segments with each path parameter's value put back as ``{name}``.  Answers
    are cached by route and prefix (a few per sandbox; the cache starts over past 4,096).
    """
    route: Any = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if template is None:
        return "unmatched"
    path: str = scope["path"]
    own = template.count("/") - (1 if template.endswith("/") else 0)
    if "{path" in template or own == 0 and template == "/":
        return template
    cut = len(path)
    for _ in range(own):
        cut = path.rfind("/", 0, cut)
        if cut < 0:
            return template
    if cut == 0:
        return template
    prefix = path[:cut]
    key = (id(route), prefix)
    found = _templates.get(key)
    if found is None:
        params = {
            v: k for k, v in scope.get("path_params", {}).items() if isinstance(v, str) and f"{{{k}}}" not in template
        }
        found = "".join(f"/{{{params[s]}}}" if s in params else f"/{s}" for s in prefix.strip("/").split("/"))
        found += template
        if len(_templates) >= 4096:
            _templates.clear()
        _templates[key] = found
    return found
