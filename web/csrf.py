"""CSRF protection for web forms.

Signed in, every form carries the session's own token (``web_sessions.csrf_token``).  Before sign-in there
is no session to hold one, so the sign-in form uses a double-submit token: a random value both in a cookie
and in a hidden field; a cross-site page can make the browser send the cookie but cannot read it to fill
the field.  Tokens are compared in constant time.  Scripts (later) may send the token in ``X-CSRF-Token``.
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import Request

LOGIN_COOKIE = "ehr_sandbox_csrf"
FIELD = "csrf_token"
HEADER = "x-csrf-token"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def tokens_match(expected: str | None, given: str | None) -> bool:
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


async def submitted_token(request: Request) -> str | None:
    """The token a request sends back: the form field, else the header."""
    if request.headers.get("content-type", "").startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get(FIELD)
        if isinstance(value, str) and value:
            return value
    return request.headers.get(HEADER) or None
