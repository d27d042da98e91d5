"""``POST [base]``: transaction and batch Bundles (the processing lives in ``transaction.py``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from sandbox.concurrency import run_in_threadpool
from sandbox.fhir.context import FhirContext, fhir_context
from sandbox.fhir.responses import fhir_response, prefer_return
from sandbox.fhir.routes import _body
from sandbox.fhir.transaction import CREATE_CHUNK, BundleProcessor
from sandbox.fhir.transaction_plan import plan_transaction
from sandbox.fhir.validation import parse_json
from sandbox.fhir.values import instant_now

router = APIRouter()


@router.post("")
async def transaction_or_batch(request: Request, ctx: FhirContext = Depends(fhir_context)) -> Response:
    body = await _body(request)
    prefer = prefer_return(request.headers.get("prefer"))
    return fhir_response(await run_in_threadpool(process, ctx, body, prefer))


def process(ctx: FhirContext, body: bytes, prefer: str | None) -> bytes:
    """Run a Bundle POSTed to the base; the response Bundle, serialized.

    A transaction's creates are validated and turned into rows (``plan_transaction``) before its database
    transaction opens, so the transaction holds the database only to store them: on SQLite, where writers
    take turns, one request's validation then runs while another's rows are written (the database releases
    the GIL), instead of after it.  A Bundle that cannot be planned runs as it always did, and so does one
    of more than ``CREATE_CHUNK`` entries: its plan would hold every chunk's rows in memory at once.
    """
    bundle = parse_json(body)
    plan = None
    if _worth_planning(bundle):
        plan = plan_transaction(bundle, ctx.fhir.registry, ctx.view, ctx.actor, ctx.base, instant_now())
        if plan is None:
            # The planner rewrites references in place, to ids of its own: start again from the request.
            bundle = parse_json(body)
    return BundleProcessor(ctx, prefer, plan=plan).process(bundle)


def _worth_planning(bundle: Any) -> bool:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle" or bundle.get("type") != "transaction":
        return False
    entries = bundle.get("entry")
    return isinstance(entries, list) and 0 < len(entries) <= CREATE_CHUNK
