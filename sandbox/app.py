"""The app factory: one FastAPI app serving the FHIR API of every sandbox."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import insert, select
from sqlalchemy.exc import DataError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from sandbox.admin.routes import router as admin_router
from sandbox.auth import Authenticator
from sandbox.auth.admin_routes import router as smart_admin_router
from sandbox.auth.authorize import router as authorize_router
from sandbox.auth.cds_tokens import cds_token_issuer
from sandbox.auth.endpoints import SmartState, well_known
from sandbox.auth.endpoints import router as oauth_router
from sandbox.auth.keys import SigningKeys
from sandbox.bulk.routes import router as bulk_router
from sandbox.bulk.worker import ExportWorker
from sandbox.cdshooks.client import CdsClient
from sandbox.cdshooks.routes import admin_router as cds_admin_router
from sandbox.cdshooks.routes import public_router as cds_public_router
from sandbox.concurrency import run_in_threadpool
from sandbox.config import Settings, load_or_create_admin_token
from sandbox.fhir.bundle_routes import TransactionWriter
from sandbox.fhir.bundle_routes import router as bundle_router
from sandbox.fhir.capability import router as capability_router
from sandbox.fhir.context import Views
from sandbox.fhir.interactions import Interactions
from sandbox.fhir.operations import router as operations_router
from sandbox.fhir.outcome import FhirError, Issue
from sandbox.fhir.request_log import RecordFhirRequests, RequestLog
from sandbox.fhir.responses import fhir_response
from sandbox.fhir.routes import hot_routes
from sandbox.fhir.routes import router as fhir_router
from sandbox.fhir.search_params import registry
from sandbox.fhir.values import instant_now
from sandbox.heap import freeze_startup_heap
from sandbox.hl7v2.demo_lab import demo_lab_port_from_env, reachable_host
from sandbox.hl7v2.routes import router as hl7v2_router
from sandbox.hl7v2.service import Hl7v2Service
from sandbox.logs import REQUEST_ID
from sandbox.metrics import exposition
from sandbox.observed import ObservedRequests
from sandbox.request_guard import RefuseNul
from sandbox.store.database import Database
from sandbox.store.layers import DEFAULT_SANDBOX
from sandbox.store.repository import Repository
from sandbox.store.schema import layers
from sandbox.subscriptions.delivery import SubscriptionWorker
from web.routes import install as install_web

log = logging.getLogger("ehr_sandbox")


def ensure_default_sandbox(db: Database) -> None:
    try:
        with db.write() as conn:
            if conn.execute(select(layers.c.id).where(layers.c.id == DEFAULT_SANDBOX)).first() is None:
                conn.execute(
                    insert(layers).values(
                        id=DEFAULT_SANDBOX,
                        kind="sandbox",
                        name="Default sandbox",
                        baseline_id=None,
                        created_at=instant_now()[1],
                    )
                )
    except IntegrityError:
        pass  # another server starting at the same time made it first


def create_app(settings: Settings, *, db: Database | None = None) -> FastAPI:
    db = db or Database(settings.database_url)
    db.create_schema()
    ensure_default_sandbox(db)
    admin_token = settings.admin_token or load_or_create_admin_token(settings)[0]

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await app.state.hl7v2.start()  # the MLLP listener and outbound worker, if `serve` configured them
        app.state.request_log.start()
        app.state.bulk.start()  # bulk $export jobs run in the background of whichever worker takes them
        await run_in_threadpool(app.state.subscriptions.start)  # rest-hook notifications from the outbox
        freeze_startup_heap()  # full collections stop walking the imports and the app: see sandbox/heap.py
        yield
        await app.state.transactions.drain()
        await run_in_threadpool(app.state.subscriptions.stop)
        await run_in_threadpool(app.state.bulk.stop)
        app.state.request_log.stop()
        await app.state.hl7v2.stop()
        db.dispose()

    app = FastAPI(title="ehr-sandbox", version="0.1.0", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    reg = registry()
    repo = Repository(reg)
    app.state.settings = settings
    app.state.db = db
    app.state.repo = repo
    app.state.fhir = Interactions(repo, reg, default_count=settings.default_page_size, max_count=settings.max_page_size)
    app.state.views = Views(db)
    app.state.smart = smart = SmartState(SigningKeys(db))
    app.state.authenticate = Authenticator(admin_token, db, clock=lambda: smart.policy.clock())
    app.state.hl7v2 = Hl7v2Service(db, app.state.fhir, app.state.views)
    app.state.transactions = TransactionWriter(db)  # planned transaction Bundles POSTed to a FHIR base
    app.state.request_log = RequestLog(db)
    app.state.bulk = ExportWorker(db, repo)
    app.state.subscriptions = SubscriptionWorker(db, app.state.fhir)
    app.add_middleware(RecordFhirRequests, log=app.state.request_log)  # the vendor console's log of FHIR calls
    # CDS Hooks calls carry a patient-scoped, read-only SMART token for services that read beyond their prefetch.
    app.state.cds = CdsClient(db, app.state.fhir, app.state.views, token_issuer=cds_token_issuer(db, smart))

    # The probes first: the router tries routes in order, and a load balancer asks these every few seconds.
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        """Liveness: the process answers (restart it if not).  Touches nothing else."""
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        """Readiness: the database answers too (send traffic here if so)."""
        try:
            await run_in_threadpool(db.ping)
        except Exception as exc:  # whatever the driver raises, the answer is "not ready", with why
            log.warning("readiness check failed: %s", exc)
            return JSONResponse({"status": "unavailable", "database": type(exc).__name__}, 503)
        return JSONResponse({"status": "ready", "database": "ok"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        body, content_type = await run_in_threadpool(exposition, db)
        return Response(body, media_type=content_type)

    # The FHIR bases next.  The router tries routes in order, so first the hot routes of both bases (read by
    # id, type search; typed so that they take nothing else), then each base's routers together.  Within a
    # base: the SMART configuration, /metadata, $export and the other $operations before the generic
    # routes, whose /{rtype}/{rid} would take them.
    bases = ("/fhir", "/sandboxes/{sandbox_id}/fhir")
    for base in bases:
        for route in hot_routes(base):
            app.router.routes.append(route)
    for base in bases:
        for router in (bundle_router, well_known, capability_router, bulk_router, operations_router, fhir_router):
            app.include_router(router, prefix=base)
    # SMART App Launch's authorization server, under /auth and /sandboxes/{id}/auth.
    for prefix in ("/auth", "/sandboxes/{sandbox_id}/auth"):
        app.include_router(authorize_router, prefix=prefix)
        app.include_router(oauth_router, prefix=prefix)
    app.include_router(admin_router, prefix="/admin")
    app.include_router(smart_admin_router, prefix="/admin")
    app.include_router(cds_admin_router, prefix="/admin")
    app.include_router(cds_public_router)  # /cds-hooks/jwks.json and the demo services at /cds-services
    app.include_router(hl7v2_router, prefix="/sandboxes/{sandbox_id}/hl7v2")
    install_web(app)  # the web UI: sign-in sessions and pages

    app.add_middleware(RefuseNul)
    # Outermost, so that its request id is on every log line and its timing covers the error handlers too.
    app.add_middleware(ObservedRequests, access_log_enabled=settings.log_format == "json" and settings.access_log)

    _install_error_handlers(app)
    return app


def app_from_env() -> FastAPI:
    """The app of one ``serve --workers N`` process: the parent put its settings in the environment."""
    from sandbox.logs import configure

    settings = Settings.from_env()
    lab_port = demo_lab_port_from_env()  # the parent's, checked by it
    if lab_port is not None:
        settings = settings.with_overrides(demo_lab=(reachable_host(settings.host), lab_port))
    configure(settings.log_format, os.environ.get("EHR_SANDBOX_LOG_LEVEL", "info"))
    return create_app(settings)


def _is_fhir(request: Request) -> bool:
    path = request.url.path
    return path.startswith("/fhir") or (path.startswith("/sandboxes/") and "/fhir" in path)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FhirError)
    async def fhir_error(_request: Request, exc: FhirError) -> Response:
        return fhir_response(exc.outcome(), exc.status, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if not _is_fhir(request):
            return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)
        code = {404: "not-found", 405: "not-supported"}.get(exc.status_code, "processing")
        message = (
            str(exc.detail) if exc.status_code != 405 else f"{request.method} is not supported on {request.url.path}"
        )
        return fhir_response(
            {"resourceType": "OperationOutcome", "issue": [Issue(code, message).to_json()]}, exc.status_code
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        issues = [Issue("invalid", f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}") for e in exc.errors()]
        return fhir_response({"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}, 400)

    @app.exception_handler(DataError)
    async def unstorable(request: Request, exc: DataError) -> Response:
        # A value the checks let through but the database refuses (NUL in text, a string past a column's
        # length on PostgreSQL...): the client's input, not a bug of the server; the transaction rolled back.
        log.warning("database refused a value on %s %s: %s", request.method, request.url.path, exc.orig)
        message = "A value in the request cannot be stored (a NUL character, or a value too long); nothing changed"
        if not _is_fhir(request):
            return JSONResponse({"detail": message}, 400)
        return fhir_response({"resourceType": "OperationOutcome", "issue": [Issue("invalid", message).to_json()]}, 400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        issue = Issue("exception", "Internal server error; the request changed nothing")
        request_id = REQUEST_ID.get()
        headers = {"X-Request-ID": request_id} if request_id else None
        return fhir_response({"resourceType": "OperationOutcome", "issue": [issue.to_json()]}, 500, headers)
