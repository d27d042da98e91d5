"""Refuse, before any route runs, what no route could look up: NUL characters in the path, the query or a
header (``%00`` included).

PostgreSQL cannot hold NUL in text, so a NUL reaching a query was a 500 there (and a value SQLite would never
match); FHIR strings may not contain it either.  One check at the door covers every route, present and future.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox.fhir.outcome import Issue
from sandbox.fhir.responses import fhir_response

MESSAGE = "NUL characters (%00) are not allowed in the URL or headers"


def has_nul(scope: Scope) -> bool:
    if "\x00" in scope["path"] or b"%00" in scope["query_string"] or b"\x00" in scope["query_string"]:
        return True
    return any(b"\x00" in value or b"%00" in value for _, value in scope["headers"])


class RefuseNul:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not has_nul(scope):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path.startswith("/fhir") or (path.startswith("/sandboxes/") and "/fhir" in path):
            response = fhir_response(
                {"resourceType": "OperationOutcome", "issue": [Issue("invalid", MESSAGE).to_json()]}, 400
            )
        else:
            response = JSONResponse({"detail": MESSAGE}, 400)
        await response(scope, receive, send)
