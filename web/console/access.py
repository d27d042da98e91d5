"""Who may see what in the consoles, and the services the console pages call.

Trainers see only the cohorts they train (admins see every cohort): a cohort that does not exist is 404,
someone else's is 403, decided on the server for every page and every form post.  The pages call the same
service functions as the admin API (``sandbox.accounts.cohorts``, ``sandbox.store.sandboxes``) in one
transaction, off the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import Request
from sqlalchemy import Connection

from sandbox.accounts import cohorts as cohort_ops
from sandbox.accounts.users import User
from sandbox.concurrency import run_in_threadpool
from sandbox.fhir.outcome import FhirError
from sandbox.store.admin_errors import AdminError
from web.signin import WebError

T = TypeVar("T")

_TITLES = {400: "Cannot do that", 404: "Not found", 409: "Cannot do that now"}


def trained_cohort(conn: Connection, user: User, cohort_id: str) -> cohort_ops.Cohort:
    """The cohort, if ``user`` trains it (or is an admin): else 404 (no such cohort) or 403 (someone else's)."""
    cohort = cohort_ops.get_cohort(conn, cohort_id)  # NotFound -> 404 first
    if user.role != "admin" and cohort.trainer_id != user.id:
        raise WebError(403, "Not allowed", "This cohort is trained by someone else.")
    return cohort


def as_web_error(exc: AdminError | FhirError) -> WebError:
    """A service's refusal as an error page: the admin services' errors, and the FHIR-facing services' (HL7 v2's
    log: a message not in it, or resent the wrong way) with their OperationOutcome's diagnostics."""
    message = exc.message if isinstance(exc, AdminError) else "; ".join(i.diagnostics for i in exc.issues)
    return WebError(exc.status, _TITLES.get(exc.status, "Cannot do that"), message)


async def run(request: Request, work: Callable[[Connection], T], *, read_only: bool = False) -> T:
    """``work`` in one transaction in the thread pool; a service's error becomes an error page."""
    db = request.app.state.db

    def go() -> T:
        with db.read() if read_only else db.write() as conn:
            return work(conn)

    try:
        return await run_in_threadpool(go)
    except (AdminError, FhirError) as exc:
        raise as_web_error(exc) from None
