"""``POST [base]``: transaction and batch Bundles (the processing lives in ``transaction.py``)."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from sandbox.concurrency import run_in_threadpool
from sandbox.fhir.context import FhirContext, fhir_context
from sandbox.fhir.responses import fhir_response, prefer_return
from sandbox.fhir.routes import _body
from sandbox.fhir.transaction import CREATE_CHUNK, BundleProcessor, TransactionPlan
from sandbox.fhir.transaction_plan import plan_transaction
from sandbox.fhir.validation import dump_json, parse_json
from sandbox.fhir.values import instant_now
from sandbox.store.database import Database
from sandbox.store.group_commit import Batcher

log = logging.getLogger("ehr_sandbox")
router = APIRouter()

# Planned transactions written in one database transaction: at 10 entries a Bundle, enough to share a commit
# (SQLite, 10-entry Bundles, server CPU a Bundle: 6.4 ms alone, 5.8 two together, 4.9 four together), few
# enough that a response is not held long behind the others'.
GROUP_LIMIT = 16


@dataclass(frozen=True)
class Planned:
    """A transaction Bundle whose creates are worked out (``plan_transaction``), to be written."""

    ctx: FhirContext
    prefer: str | None
    bundle: dict[str, Any]
    plan: TransactionPlan
    context: contextvars.Context  # the request's (its id on the log lines of its write)


@dataclass(frozen=True)
class Written:
    """A planned transaction's outcome: its response Bundle (not yet serialized), or what it raised."""

    response: dict[str, Any] | None = None
    error: Exception | None = None


class TransactionWriter:
    """Writes planned transaction Bundles in groups (``write_group``), on SQLite only.

    PostgreSQL runs concurrent write transactions side by side: there a group is one thread's serial work
    where each Bundle alone is a thread and a connection of its own.  Grouped, 10-entry Bundles from eight
    clients cost the server the same CPU (5.4-6.2 ms a Bundle either way, three alternating runs) and went
    through at 72-103 a second instead of 122-140; so there each is written where it was planned, alone.
    """

    def __init__(self, db: Database, limit: int = GROUP_LIMIT) -> None:
        self.batches: Batcher[Planned, Written] | None = None
        if db.is_sqlite:
            self.batches = Batcher(lambda group: write_group(db, group), limit)

    async def drain(self) -> None:
        """Wait for the groups already taken on (stopping: before the database is closed under them)."""
        if self.batches is not None:
            await self.batches.drain()


@router.post("")
async def transaction_or_batch(request: Request, ctx: FhirContext = Depends(fhir_context)) -> Response:
    body = await _body(request)
    prefer = prefer_return(request.headers.get("prefer"))
    batches = request.app.state.transactions.batches
    done = await run_in_threadpool(process, ctx, body, prefer, grouped=batches is not None)
    if isinstance(done, Planned):
        written = await batches.submit(done)
        if written.error is not None:
            raise written.error
        done = dump_json(written.response)
    return fhir_response(done)


def process(ctx: FhirContext, body: bytes, prefer: str | None, *, grouped: bool = False) -> bytes | Planned:
    """Run a Bundle POSTed to the base: the response Bundle, serialized; or, if ``grouped``, for a
    transaction whose creates could be planned, that plan, for ``TransactionWriter`` to write.

    A transaction's creates are validated and turned into rows (``plan_transaction``) before its database
    transaction opens, so the transaction holds the database only to store them: on SQLite, where writers
    take turns, one request's validation then runs while another's rows are written (the database releases
    the GIL), instead of after it; and there the planned transactions that arrive together are written in
    one database transaction (``write_group``).  A Bundle that cannot be planned runs here as it always did,
    and so does one of more than ``CREATE_CHUNK`` entries: its plan would hold every chunk's rows in memory.
    """
    bundle = parse_json(body)
    if _worth_planning(bundle):
        plan = plan_transaction(bundle, ctx.fhir.registry, ctx.view, ctx.actor, ctx.base, instant_now())
        if plan is None:
            # The planner rewrites references in place, to ids of its own: start again from the request.
            bundle = parse_json(body)
        elif grouped:
            return Planned(ctx, prefer, bundle, plan, contextvars.copy_context())
        return BundleProcessor(ctx, prefer, plan=plan).process(bundle)
    return BundleProcessor(ctx, prefer).process(bundle)


def write_group(db: Database, group: Sequence[Planned]) -> list[Written]:
    """Planned transactions, in order, in one database transaction: each in a savepoint of it, so one that
    fails (a conflict, a reference it may not make) rolls back alone and gets its own error, as it would
    have alone; the others commit together.  The results are returned after the commit; if the commit
    fails, every Bundle of the group gets that error, nothing of it written."""
    results: list[Written] = []
    try:
        with db.write() as conn:
            for planned in group:
                processor = BundleProcessor(planned.ctx, planned.prefer, conn=conn, plan=planned.plan)
                try:
                    results.append(Written(planned.context.run(processor.run, planned.bundle)))
                except Exception as exc:  # its savepoint was rolled back (``BundleProcessor._writing``)
                    results.append(Written(error=exc))
    except Exception as exc:
        log.exception("group of %d transaction Bundles failed", len(group))
        return [Written(error=exc) for _ in group]
    return results


def _worth_planning(bundle: Any) -> bool:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle" or bundle.get("type") != "transaction":
        return False
    entries = bundle.get("entry")
    return isinstance(entries, list) and 0 < len(entries) <= CREATE_CHUNK
