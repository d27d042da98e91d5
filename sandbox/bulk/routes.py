"""FHIR Bulk Data Access 2.0.0 ``$export``: kick-off, status polling, cancellation, output files.

Mounted under every FHIR base, before the operations router (whose catch-all for
unknown ``$operations`` would take these paths).  Every route goes through
``fhir_context``, so the one Authenticator decides who may reach the sandbox;
on top of that, a job's status and files answer only the caller that kicked it
off (``requiresAccessToken``), and only in the sandbox it was started in.

- ``GET|POST [base]/$export``, ``[base]/Patient/$export``, ``[base]/Group/[id]/$export``:
  ``Prefer: respond-async`` required; 202 with ``Content-Location`` of the status URL.
- ``GET [base]/bulk-export/[job]``: 202 with ``X-Progress`` and ``Retry-After`` while it runs,
  200 with the manifest when done, 500 with an OperationOutcome if it failed.
- ``DELETE [base]/bulk-export/[job]``: 202; the job and its files are gone, its status is then 404.
- ``GET [base]/bulk-export/[job]/files/[n]``: one NDJSON file of the manifest.
"""

from __future__ import annotations

import re
from email.utils import format_datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from sandbox.bulk import jobs
from sandbox.concurrency import run_in_threadpool
from sandbox.fhir.context import FhirContext, fhir_context
from sandbox.fhir.criteria import split_criteria
from sandbox.fhir.interactions import check_id
from sandbox.fhir.outcome import FhirError, Issue, operation_outcome
from sandbox.fhir.resource_types import is_resource_type
from sandbox.fhir.responses import fhir_response
from sandbox.fhir.routes import _body
from sandbox.fhir.search_params import patient_compartment
from sandbox.fhir.validation import parse_json, validate
from sandbox.fhir.values import date_range

router = APIRouter()

NDJSON = "application/fhir+ndjson"
OUTPUT_FORMATS = {"application/fhir+ndjson", "application/ndjson", "ndjson"}
RETRY_AFTER = "1"  # seconds: exports of a sandbox take seconds, not hours
_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
# Several searches in one _typeFilter value are separated by commas; a comma inside a search (an OR of values)
# is not followed by a resource type and "?".
_FILTER_SEPARATOR = re.compile(r",(?=[A-Z][A-Za-z]*\?)")
_REJECTED = {
    "_elements": "_elements is not supported; every exported resource is complete",
    "includeAssociatedData": "includeAssociatedData is not supported",
}


# ---- kick-off ------------------------------------------------------------------------------------------------


@router.get("/$export")
@router.post("/$export")
async def export_system(request: Request, ctx: FhirContext = Depends(fhir_context)) -> Response:
    return await _kick_off(request, ctx, "system", None, "/$export")


@router.get("/Patient/$export")
@router.post("/Patient/$export")
async def export_patients(request: Request, ctx: FhirContext = Depends(fhir_context)) -> Response:
    return await _kick_off(request, ctx, "patient", None, "/Patient/$export")


@router.get("/Group/{group_id}/$export")
@router.post("/Group/{group_id}/$export")
async def export_group(group_id: str, request: Request, ctx: FhirContext = Depends(fhir_context)) -> Response:
    return await _kick_off(request, ctx, "group", check_id(group_id), f"/Group/{group_id}/$export")


async def _kick_off(request: Request, ctx: FhirContext, level: str, group_id: str | None, path: str) -> Response:
    if "respond-async" not in _prefer_tokens(request.headers.get("prefer")):
        raise FhirError.of(400, "invalid", "A bulk export runs asynchronously: send the header Prefer: respond-async")
    query = list(request.query_params.multi_items())
    if request.method == "POST":
        query += _post_parameters(await _body(request))
    options = _options(query, level, request.method)
    # The kick-off URL as the client sent it: a POST's Parameters are not part of it (as the spec says).
    request_url = ctx.base + path + (f"?{request.url.query}" if request.url.query else "")

    def start() -> str:
        with ctx.db.write() as conn:
            if group_id is not None:
                ctx.fhir.read(conn, ctx.view, "Group", group_id)  # 404 or 410 now, not later in the status
            return jobs.create(
                conn,
                ctx.view.sandbox_id,
                level=level,
                group_id=group_id,
                request_url=request_url,
                actor=ctx.actor.id,
                requires_token=ctx.actor.id != "anonymous",
                **options,
            )

    job_id = await run_in_threadpool(start)
    request.app.state.bulk.wake()
    location = f"{ctx.base}/bulk-export/{job_id}"
    return Response(status_code=202, headers={"Content-Location": location})


def _prefer_tokens(header: str | None) -> set[str]:
    return {part.strip().lower() for part in (header or "").replace(";", ",").split(",")}


def _post_parameters(body: bytes) -> list[tuple[str, str]]:
    """A POST kick-off's Parameters as (name, value) pairs; ``patient`` references become ``patient=Patient/x``."""
    if not body.strip():
        return []
    parameters = validate(parse_json(body), "Parameters")
    found: list[tuple[str, str]] = []
    for part in parameters.get("parameter", []):
        name = str(part.get("name"))
        if name == "patient":
            reference = part.get("valueReference", {}).get("reference")
            if not isinstance(reference, str):
                raise FhirError.of(400, "invalid", "Parameter 'patient' needs a valueReference with a reference")
            found.append((name, reference))
            continue
        values = [v for k, v in part.items() if k.startswith("value")]
        if len(values) != 1:
            raise FhirError.of(400, "invalid", f"Parameter '{name}' of $export needs exactly one value[x]")
        found.append((name, str(values[0])))
    return found


def _options(query: list[tuple[str, str]], level: str, method: str) -> dict[str, Any]:
    """Check the kick-off parameters; every problem is a 400 before any job exists."""
    output_format = NDJSON
    since: str | None = None
    types: list[str] = []
    patients: list[str] = []
    filters: list[tuple[str, str]] = []
    compartment = set(patient_compartment()) | {"Patient"}
    for name, raw in query:
        if name == "_outputFormat":
            if raw not in OUTPUT_FORMATS:
                known = ", ".join(sorted(OUTPUT_FORMATS))
                raise FhirError.of(400, "not-supported", f"_outputFormat '{raw}' is not supported; use one of {known}")
        elif name == "_since":
            since = _since(raw)
        elif name == "_type":
            for rtype in (t.strip() for t in raw.split(",")):
                if not is_resource_type(rtype):
                    raise FhirError.of(400, "not-supported", f"_type names an unknown resource type: '{rtype}'")
                if level != "system" and rtype not in compartment:
                    raise FhirError.of(
                        400,
                        "not-supported",
                        f"_type '{rtype}' is not in the Patient compartment, so a {level}-level export never holds it",
                    )
                if rtype not in types:
                    types.append(rtype)
        elif name == "_typeFilter":
            for search in _FILTER_SEPARATOR.split(raw):
                rtype = _type_filter(search)
                if level != "system" and rtype not in compartment:
                    raise FhirError.of(
                        400, "not-supported", f"_typeFilter '{search}': {rtype} is not in the Patient compartment"
                    )
                filters.append((rtype, search.strip()))
        elif name == "patient":
            if level == "system" or method != "POST":
                raise FhirError.of(
                    400, "not-supported", "The patient parameter is for POST kick-offs of Patient or Group exports"
                )
            rtype, _, rid = raw.rpartition("/")
            if rtype.rpartition("/")[2] != "Patient":
                raise FhirError.of(400, "invalid", f"patient must reference a Patient, not '{raw}'")
            patients.append(check_id(rid))
        elif name in _REJECTED:
            raise FhirError.of(400, "not-supported", _REJECTED[name])
        elif name != "_format":
            raise FhirError.of(400, "not-supported", f"$export has no parameter '{name}'")
    left_out = sorted({rtype for rtype, _ in filters if types and rtype not in types})
    if left_out:
        raise FhirError.of(400, "invalid", f"_typeFilter searches {', '.join(left_out)}, which _type leaves out")
    return {
        "output_format": output_format,
        "since": since,
        "types": types or None,
        "patients": patients or None,
        "type_filters": [search for _, search in filters] or None,
    }


def _type_filter(search: str) -> str:
    """The type a ``_typeFilter`` search is on; a 400 unless the search planner accepts it, strictly."""
    try:
        return split_criteria(search)[0]
    except FhirError as error:
        raise FhirError.of(400, "invalid", f"_typeFilter '{search}': {error.issues[0].diagnostics}") from None


def _since(raw: str) -> str:
    # An unencoded "+hh:mm" zone arrives as a space: take it back, rather than reject a common client slip.
    text = raw.strip().replace(" ", "+")
    found = date_range(text) if _INSTANT.match(text) else None
    if found is None:
        raise FhirError.of(400, "invalid", f"_since must be an instant such as 2024-01-01T00:00:00Z, not '{raw}'")
    return found[0]


# ---- status, cancellation, files -------------------------------------------------------------------------------


def _own_job(ctx: FhirContext, job_id: str) -> jobs.Job:
    """The job, if it belongs to this sandbox and (when it needs a token) to this caller."""
    with ctx.db.read() as conn:
        job = jobs.get(conn, ctx.view.sandbox_id, job_id)
    if job is None:
        raise FhirError.of(404, "not-found", f"There is no bulk export '{job_id}' in this sandbox")
    if job.requires_token and ctx.actor.id != job.actor:
        if ctx.actor.id == "anonymous":
            error = FhirError.of(401, "login", "This export needs the credentials that started it")
            error.headers["WWW-Authenticate"] = 'Bearer realm="ehr-sandbox"'
            raise error
        raise FhirError.of(403, "forbidden", "This export was started by another client; only it may read it")
    return job


@router.get("/bulk-export/{job_id}")
def export_status(job_id: str, ctx: FhirContext = Depends(fhir_context)) -> Response:
    job = _own_job(ctx, job_id)
    if job.status in ("queued", "running"):
        progress = job.progress if job.status == "running" else "queued"
        return Response(status_code=202, headers={"X-Progress": progress or "running", "Retry-After": RETRY_AFTER})
    if job.status == "failed":
        return fhir_response(operation_outcome([Issue("exception", job.error or "The export failed")]), 500)
    with ctx.db.read() as conn:
        outputs = jobs.files(conn, ctx.view.sandbox_id, job_id)
    assert job.transaction_time is not None

    def entry(f: jobs.OutputFile) -> dict[str, Any]:
        return {"type": f.resource_type, "url": f"{ctx.base}/bulk-export/{job_id}/files/{f.file_no}", "count": f.count}

    manifest = {
        "transactionTime": job.transaction_time[:23] + "Z",
        "request": job.request_url,
        "requiresAccessToken": job.requires_token,
        "output": [entry(f) for f in outputs if f.resource_type != "OperationOutcome"],
        "error": [entry(f) for f in outputs if f.resource_type == "OperationOutcome"],
    }
    expires = jobs.expires(job)
    headers = {"Expires": format_datetime(expires, usegmt=True)} if expires else None
    return JSONResponse(manifest, headers=headers)


@router.delete("/bulk-export/{job_id}")
def export_cancel(job_id: str, ctx: FhirContext = Depends(fhir_context)) -> Response:
    _own_job(ctx, job_id)
    with ctx.db.write() as conn:
        if not jobs.cancel(conn, ctx.view.sandbox_id, job_id):
            raise FhirError.of(404, "not-found", f"There is no bulk export '{job_id}' in this sandbox")
    done = Issue("informational", f"Bulk export {job_id} is cancelled and its files deleted", "information")
    return fhir_response(operation_outcome([done]), 202)


@router.get("/bulk-export/{job_id}/files/{file_no}")
def export_file(job_id: str, file_no: str, ctx: FhirContext = Depends(fhir_context)) -> Response:
    job = _own_job(ctx, job_id)
    with ctx.db.read() as conn:
        known = {str(f.file_no) for f in jobs.files(conn, ctx.view.sandbox_id, job_id)}
    if job.status != "completed" or file_no not in known:
        raise FhirError.of(404, "not-found", f"Bulk export '{job_id}' has no file '{file_no}'")
    parts = jobs.file_parts(ctx.db, ctx.view.sandbox_id, job_id, int(file_no))
    return StreamingResponse(parts, media_type=NDJSON)
