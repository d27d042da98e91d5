"""The consoles' stylesheet, served by the app itself (the pages' CSP allows styles from 'self' only)."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from starlette.responses import Response

from web.pages import WebRoute

router = APIRouter(route_class=WebRoute, include_in_schema=False)
STYLESHEET = "/console/console.css"
_CSS = files("web.console").joinpath("console.css").read_bytes()


@router.get(STYLESHEET)
def stylesheet() -> Response:
    # The security headers say no-store; the file is small and read from memory.
    return Response(_CSS, media_type="text/css; charset=utf-8")
