"""HTTP routes of HL7 v2: post a message (``POST /sandboxes/{id}/hl7v2``, ER7 body), the message log, destinations.

The same credentials rules as the sandbox's FHIR API (the default sandbox is
open).  A posted message is answered with its ACK (``x-application/hl7-v2+er7``)
and status 200 whatever the acknowledgment code: the ACK carries the outcome.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from sandbox.concurrency import run_in_threadpool
from sandbox.fhir.outcome import FhirError
from sandbox.fhir.validation import parse_json
from sandbox.hl7v2 import destinations, log, replay
from sandbox.hl7v2.er7 import MAX_MESSAGE_BYTES
from sandbox.hl7v2.service import Hl7v2Service

router = APIRouter()

ER7 = "x-application/hl7-v2+er7"


def _service(request: Request) -> Hl7v2Service:
    return request.app.state.hl7v2


def _authorize(request: Request, sandbox_id: str) -> str:
    """The sandbox's overlay layer id, after the FHIR API's credential checks (401/403/404)."""
    request.app.state.authenticate(request, sandbox_id)
    return request.app.state.views.get(sandbox_id).overlay


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_MESSAGE_BYTES:
        raise FhirError.of(413, "too-costly", f"An HL7 v2 message may be at most {MAX_MESSAGE_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_MESSAGE_BYTES:
            raise FhirError.of(413, "too-costly", f"An HL7 v2 message may be at most {MAX_MESSAGE_BYTES} bytes")
    if not body.strip():
        raise FhirError.of(400, "required", "The body must be one HL7 v2 message in ER7 (pipe-and-hat) encoding")
    return bytes(body)


@router.post("")
async def post_message(request: Request, sandbox_id: str, validate: str | None = None) -> Response:
    """``?validate=strict`` checks the message against the standard (hl7apy) before applying it."""
    if validate not in (None, "strict"):
        raise FhirError.of(400, "invalid", "validate is 'strict' or absent")
    await run_in_threadpool(_authorize, request, sandbox_id)
    data = await _body(request)
    inbound = _service(request).inbound
    result = await run_in_threadpool(inbound.handle, data, sandbox_id=sandbox_id, strict=validate == "strict")
    headers = {"X-HL7-Ack-Code": result.code}
    if result.message_id:
        headers["X-HL7-Message-Id"] = result.message_id
    return Response(result.reply or "", 200, headers=headers, media_type=ER7)


@router.get("/messages")
def list_messages(
    request: Request,
    sandbox_id: str,
    direction: str | None = None,
    status: str | None = None,
    message_type: str | None = None,
    control_id: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Response:
    layer = _authorize(request, sandbox_id)
    if direction not in (None, "inbound", "outbound"):
        raise FhirError.of(400, "invalid", "direction is inbound or outbound")
    if not 1 <= limit <= 500 or offset < 0:
        raise FhirError.of(400, "invalid", "limit is 1 to 500 and offset is not negative")
    with request.app.state.db.read() as conn:
        entries = log.listing(
            conn,
            layer,
            direction=direction,
            status=status,
            message_type=message_type,
            control_id=control_id,
            limit=limit,
            offset=offset,
        )
    return JSONResponse({"messages": [e.to_json(full=False) for e in entries]})


@router.get("/messages/{message_id}")
def get_message(request: Request, sandbox_id: str, message_id: str) -> Response:
    layer = _authorize(request, sandbox_id)
    with request.app.state.db.read() as conn:
        return JSONResponse(replay.logged(conn, layer, message_id).to_json())


@router.post("/messages/{message_id}/resend")
def resend(request: Request, sandbox_id: str, message_id: str) -> Response:
    """Outbound: queue the message again, now.  Inbound: not meaningful (use reprocess)."""
    layer = _authorize(request, sandbox_id)
    with request.app.state.db.write() as conn:
        return JSONResponse(replay.resend(conn, layer, message_id).to_json(), 202)


@router.post("/messages/{message_id}/reprocess")
def reprocess(request: Request, sandbox_id: str, message_id: str) -> Response:
    """Inbound: apply the logged message again (even a duplicate control id), as a new log entry."""
    layer = _authorize(request, sandbox_id)
    result = replay.reprocess(_service(request).inbound, sandbox_id, layer, message_id)
    body: dict[str, Any] = {"ack_code": result.code, "ack": result.reply, "message_id": result.message_id}
    body["resources"] = result.resources
    return JSONResponse(body)


@router.get("/destinations")
def list_destinations(request: Request, sandbox_id: str) -> Response:
    _authorize(request, sandbox_id)
    with request.app.state.db.read() as conn:
        found = destinations.listing(conn, sandbox_id)
    return JSONResponse({"destinations": [d.to_json() for d in found]})


@router.put("/destinations/{destination_id}")
async def put_destination(request: Request, sandbox_id: str, destination_id: str) -> Response:
    await run_in_threadpool(_authorize, request, sandbox_id)
    body = parse_json(await request.body())

    def save() -> destinations.Destination:
        with request.app.state.db.write() as conn:
            return destinations.put(conn, sandbox_id, destination_id, body)

    return JSONResponse((await run_in_threadpool(save)).to_json())


@router.delete("/destinations/{destination_id}")
def delete_destination(request: Request, sandbox_id: str, destination_id: str) -> Response:
    _authorize(request, sandbox_id)
    with request.app.state.db.write() as conn:
        if not destinations.remove(conn, sandbox_id, destination_id):
            raise FhirError.of(404, "not-found", f"No destination '{destination_id}'")
    return Response(status_code=204)
