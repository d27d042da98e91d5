"""The app's route table, flattened: every (method, full path template) it answers, however routers are nested.

FastAPI before 0.16x copied included routes into ``app.routes`` with their prefix; later versions keep the
included router and its prefix instead.  Both are walked here, so a test built on this table covers every
route anyone adds, without a list to keep up to date.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any


def route_table(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from route_table(included.routes, prefix + route.include_context.prefix)
            continue
        path = getattr(route, "path", None)
        methods = getattr(route, "methods", None)
        if path is None or not methods:
            continue  # mounts and websockets: none here yet
        for method in sorted(methods - {"HEAD"}):
            yield method, prefix + path
