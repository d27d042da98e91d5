"""``POST [base]``: transaction and batch Bundles (the processing lives in ``transaction.py``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from sandbox.concurrency import run_in_threadpool
from sandbox.fhir.context import FhirContext, fhir_context
from sandbox.fhir.responses import fhir_response, prefer_return
from sandbox.fhir.routes import _body
from sandbox.fhir.transaction import BundleProcessor
from sandbox.fhir.validation import parse_json

router = APIRouter()


@router.post("")
async def transaction_or_batch(request: Request, ctx: FhirContext = Depends(fhir_context)) -> Response:
    bundle = parse_json(await _body(request))
    processor = BundleProcessor(ctx, prefer_return(request.headers.get("prefer")))
    return fhir_response(await run_in_threadpool(processor.process, bundle))
