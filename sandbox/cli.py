"""The command line: ``ehr-sandbox serve`` and friends.  Thin: parse flags, call the library, print errors."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy.exc import ArgumentError, OperationalError

from sandbox.config import Settings, load_or_create_admin_token
from sandbox.demo import create_demo, needs_demo
from sandbox.hl7v2.demo_lab import DESTINATION_ID, DemoLab, demo_lab_port, demo_lab_port_from_env, reachable_host
from sandbox.hl7v2.demo_lab import NAME as DEMO_LAB
from sandbox.hl7v2.mllp import ListenError, listening_socket
from sandbox.hl7v2.service import LISTENER, mllp_port_from_env
from sandbox.logs import FORMATS as LOG_FORMATS
from sandbox.store.migrations import SchemaError


class CliError(Exception):
    """A user mistake: printed as one line, exit status 2."""


def database_error(exc: OperationalError | ArgumentError) -> CliError:
    """A database that cannot be reached or named, as the one line every command prints for it."""
    if isinstance(exc, ArgumentError):  # an unknown dialect or driver, or no URL at all
        return CliError(f"cannot use the database URL ({exc}); check EHR_SANDBOX_DATABASE_URL")
    reason = str(exc.orig).strip().splitlines()[0]
    return CliError(f"cannot use the database ({reason}); check EHR_SANDBOX_DATABASE_URL")


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from sandbox.logs import configure as configure_logs

    settings = Settings.from_env().with_overrides(
        host=args.host, port=args.port, base_url=args.base_url, log_format=args.log_format
    )
    settings = settings.with_overrides(access_log=args.access_log)
    workers = args.workers if args.workers is not None else _int_env("EHR_SANDBOX_WORKERS", 1)
    if workers < 1:
        raise CliError(f"--workers must be 1 or more, not {workers}")
    try:
        lab_port = _demo_lab_port(args.demo_lab_port, from_env=True)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    in_process_worker = args.worker and os.environ.get("EHR_SANDBOX_NO_WORKER", "") in ("", "0", "false")
    try:
        log_config = configure_logs(settings.log_format, args.log_level)
    except ValueError as exc:
        raise CliError(f"{exc} (--log-format or $EHR_SANDBOX_LOG_FORMAT)") from None
    token, generated = load_or_create_admin_token(settings)
    lab = (reachable_host(settings.host), lab_port) if lab_port is not None else None
    settings = settings.with_overrides(admin_token=token, demo_lab=lab)
    if workers > 1:
        # Children are separate processes that read their settings from the environment (app_from_env);
        # their metrics meet in one directory so that /metrics on any of them adds up all of them.
        os.environ.update(_env_for_children(settings, args.log_level))
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="ehr-sandbox-metrics-"))
    from sandbox.app import create_app

    app = create_app(settings)
    try:
        mllp_port = args.mllp_port if args.mllp_port is not None else mllp_port_from_env()
    except ValueError as exc:
        raise CliError(str(exc)) from None
    # The ports are taken here, before the demo cohort is made and before uvicorn runs the app, whose start
    # would report a port in use as a traceback.
    supervisor_lab = None
    with _listening(SERVE_PORTS):
        if settings.port:  # uvicorn binds it when it starts; a port in use is found out (and said) here first
            listening_socket(HTTP_SERVER, settings.host, settings.port).close()
        if workers > 1:
            if lab_port is not None:
                supervisor_lab = DemoLab(settings.host, lab_port)
                supervisor_lab.bind()
        else:
            app.state.hl7v2.configure(
                host=settings.host, mllp_port=mllp_port, deliver=in_process_worker, demo_lab_port=lab_port
            )
            app.state.hl7v2.bind()
    db = app.state.db
    with db.exclusive("demo"):  # servers starting together: one makes the demo, the others see it made
        demo = None
        if args.demo and needs_demo(db):
            demo = create_demo(db, app.state.fhir, settings.data_dir, lab=settings.demo_lab)
    base = settings.public_base
    print(f"ehr-sandbox serving on {base}" + (f" ({workers} worker processes)" if workers > 1 else ""))
    print(f"  FHIR R4 (default sandbox, open): {base}/fhir  (metadata: {base}/fhir/metadata)")
    print(f"  Sandboxes:                        {base}/sandboxes/{{id}}/fhir")
    if workers == 1:
        print(
            f"  HL7 v2 MLLP (MSH-6 = sandbox id):  {settings.host}:{mllp_port}  (HTTP: {base}/sandboxes/{{id}}/hl7v2)"
        )
    else:
        print("  HL7 v2 MLLP: not in the web processes with --workers; run `ehr-sandbox mllp` beside them")
    if lab_port is not None:
        print(f"  Demo lab (takes orders, ACKs AA): {settings.host}:{lab_port}  (destination '{DESTINATION_ID}')")
    else:
        print("  Demo lab: off (--demo-lab-port 0)")
    if not in_process_worker:
        print("  Outbox (HL7 v2 delivery, task re-checks): not in this process; run `ehr-sandbox worker`")
    print(f"  Health: {base}/healthz  readiness: {base}/readyz  metrics: {base}/metrics")
    print(f"  Database:                         {_redact(settings.database_url)}")
    if generated:
        print(f"  Admin token (generated, saved in {settings.data_dir / 'admin-token'}): {token}")
    if demo is not None:
        print(f"  Demo cohort '{demo.cohort_id}' on baseline '{demo.baseline_id}' (accounts saved in {demo.saved_to}):")
        for email, role, password in demo.accounts:
            where = f"  sandbox {base}/sandboxes/{demo.sandboxes[email]}/fhir" if email in demo.sandboxes else ""
            print(f"    {role:8} {email}  password {password}{where}")
        print(f"  Sign in at {base}/login")
    sys.stdout.flush()
    # uvicorn's access line, unless the JSON log writes its own (with the request id and route template).
    uvicorn_access = args.access_log and settings.log_format == "text"
    if workers > 1:
        if in_process_worker:
            _start_outbox_consumers(app)  # threads in the supervising process, which serves no requests
        if supervisor_lab is not None:
            _start_demo_lab(supervisor_lab)  # beside the deliveries, so the demo's orders are answered
        app.state.db.dispose()
        uvicorn.run(
            "sandbox.app:app_from_env",
            factory=True,
            workers=workers,
            host=settings.host,
            port=settings.port,
            log_level=args.log_level,
            access_log=uvicorn_access,
            log_config=log_config,
            # A child imports the FHIR models and builds the app before it answers the supervisor's ping: on a
            # busy host that took longer than uvicorn's 5 s default, and the supervisor kept restarting it.
            timeout_worker_healthcheck=60,
        )
        return
    if in_process_worker:
        from sandbox.worker import housekeeping
        from tasks.live import start_live_checks  # task checklists re-checked as sandboxes change

        checker = start_live_checks(app.state.db, app.state.fhir, chores=housekeeping(app.state.db))
        app.state.hl7v2.on_sent = checker.poke  # a delivery's ACK changes the HL7 v2 log that task checks may read
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        access_log=uvicorn_access,
        log_config=log_config,
    )


def _start_outbox_consumers(app: object) -> None:
    import asyncio

    from sandbox.worker import OutboxConsumers

    state = app.state  # type: ignore[attr-defined]
    asyncio.run(OutboxConsumers(state.db, state.fhir).start())  # starts daemon threads, then returns


def _start_demo_lab(lab: DemoLab) -> None:
    """The (bound) demo lab on its own event loop, in a daemon thread of the supervising process (``--workers``)."""
    import asyncio
    import threading

    loop = asyncio.new_event_loop()
    loop.run_until_complete(lab.start())
    threading.Thread(target=loop.run_forever, name="demo-lab", daemon=True).start()


# How to choose another port, by the name of the server whose port is in use (``ListenError.name``).
HTTP_SERVER = "HTTP server"
SERVE_PORTS = {
    HTTP_SERVER: "--port or $EHR_SANDBOX_PORT",
    LISTENER: "--mllp-port or $EHR_SANDBOX_MLLP_PORT",
    DEMO_LAB: "--demo-lab-port or $EHR_SANDBOX_DEMO_LAB_PORT, or off for no demo lab",
}


@contextmanager
def _listening(remedies: dict[str, str]) -> Iterator[None]:
    """A port in use (``ListenError``) as the one line a user mistake gets, naming how to choose another."""
    try:
        yield
    except ListenError as exc:
        raise CliError(f"{exc}; choose another port with {remedies[exc.name]}") from None


def _demo_lab_port(flag: str | None, *, from_env: bool) -> int | None:
    """``--demo-lab-port``, else (``from_env``) $EHR_SANDBOX_DEMO_LAB_PORT or the default; None: no lab."""
    if flag is not None:
        return demo_lab_port(flag, "--demo-lab-port")
    return demo_lab_port_from_env() if from_env else None


def _env_for_children(settings: Settings, log_level: str) -> dict[str, str]:
    return {
        "EHR_SANDBOX_DATABASE_URL": settings.database_url,
        "EHR_SANDBOX_DATA_DIR": str(settings.data_dir),
        "EHR_SANDBOX_HOST": settings.host,
        "EHR_SANDBOX_PORT": str(settings.port),
        "EHR_SANDBOX_BASE_URL": settings.public_base,
        "EHR_SANDBOX_ADMIN_TOKEN": settings.admin_token or "",
        "EHR_SANDBOX_LOG_FORMAT": settings.log_format,
        "EHR_SANDBOX_LOG_LEVEL": log_level,
        # The supervisor runs the lab; the children send new cohort sandboxes' lab orders to it (app_from_env).
        "EHR_SANDBOX_DEMO_LAB_PORT": str(settings.demo_lab[1]) if settings.demo_lab else "off",
    }


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit():
        raise CliError(f"{name} must be a whole number, not '{raw}'")
    return int(raw)


def _worker(args: argparse.Namespace) -> None:
    from sandbox.logs import configure as configure_logs
    from sandbox.worker import run_outbox_worker

    settings = Settings.from_env()
    try:
        lab_port = _demo_lab_port(args.demo_lab_port, from_env=False)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    configure_logs(_log_format(args, settings), args.log_level)
    if args.interval <= 0:
        raise CliError(f"--interval must be a positive number of seconds, not {args.interval}")

    def started() -> None:
        _serve_metrics(args.metrics_port, settings)
        print(f"ehr-sandbox outbox worker on {_redact(settings.database_url)} (HL7 v2 delivery, task re-checks)")
        if lab_port is not None:
            print(f"  Demo lab (takes orders, ACKs AA): {settings.host}:{lab_port}")
        sys.stdout.flush()

    demo_lab = (settings.host, lab_port) if lab_port is not None else None
    with _listening({DEMO_LAB: "--demo-lab-port"}):
        run_outbox_worker(settings, interval=args.interval, started=started, demo_lab=demo_lab)


def _mllp(args: argparse.Namespace) -> None:
    from sandbox.logs import configure as configure_logs
    from sandbox.worker import run_mllp_listener

    settings = Settings.from_env()
    configure_logs(_log_format(args, settings), args.log_level)
    try:
        port = args.port if args.port is not None else mllp_port_from_env()
    except ValueError as exc:
        raise CliError(str(exc)) from None
    host = args.host or settings.host

    def started() -> None:
        _serve_metrics(args.metrics_port, settings)
        print(f"ehr-sandbox HL7 v2 MLLP listener on {host}:{port} (MSH-6 = sandbox id)")
        sys.stdout.flush()

    with _listening({LISTENER: "--port or $EHR_SANDBOX_MLLP_PORT"}):
        run_mllp_listener(settings, host=host, port=port, started=started)


def _serve_metrics(port: int | None, settings: Settings) -> None:
    """prometheus_client's own HTTP server, on a thread: a process without HTTP shows its MLLP counts (and
    answers a health check)."""
    if port is None:
        return
    from prometheus_client import start_http_server

    start_http_server(port, addr=settings.host)


def _log_format(args: argparse.Namespace, settings: Settings) -> str:
    chosen = args.log_format or settings.log_format
    if chosen not in LOG_FORMATS:
        raise CliError(f"the log format must be one of {', '.join(LOG_FORMATS)}, not '{chosen}'")
    return chosen


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ehr-sandbox", description="EHR sandbox: FHIR R4 server for training")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host", default=None, help="bind address (default 127.0.0.1, or $EHR_SANDBOX_HOST)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8080, or $EHR_SANDBOX_PORT)")
    serve.add_argument("--base-url", default=None, help="public base URL, if behind a proxy ($EHR_SANDBOX_BASE_URL)")
    serve.add_argument(
        "--mllp-port", type=int, default=None, help="HL7 v2 MLLP port (default 2575, or $EHR_SANDBOX_MLLP_PORT)"
    )
    serve.add_argument(
        "--demo-lab-port",
        default=None,
        help="port of the built-in demo lab that acknowledges outbound orders (default 2576, or "
        "$EHR_SANDBOX_DEMO_LAB_PORT; 0 or off: none)",
    )
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument("--no-access-log", dest="access_log", action="store_false")
    serve.add_argument(
        "--log-format", default=None, choices=LOG_FORMATS, help="text, or json lines ($EHR_SANDBOX_LOG_FORMAT)"
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="web processes on the port (default 1, or $EHR_SANDBOX_WORKERS); more than one serves HTTP only",
    )
    serve.add_argument(
        "--no-worker",
        dest="worker",
        action="store_false",
        help="do not run the outbox consumers (HL7 v2 delivery, task re-checks) here; run `ehr-sandbox worker` "
        "($EHR_SANDBOX_NO_WORKER=1)",
    )
    serve.add_argument(
        "--no-demo",
        dest="demo",
        action="store_false",
        help="on first start, do not set up the demo cohort (training-case baseline, a trainer, two trainees)",
    )
    serve.set_defaults(func=_serve)
    worker = sub.add_parser(
        "worker", help="run the outbox consumers (HL7 v2 outbound delivery, task re-checks) without HTTP"
    )
    worker.add_argument("--interval", type=float, default=0.5, help="seconds between polls when idle (default 0.5)")
    worker.add_argument(
        "--demo-lab-port",
        default=None,
        help="also run the built-in demo lab on this port (off by default: `serve` runs it; use this where the "
        "deliveries run on a host without a single-process `serve`)",
    )
    worker.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    worker.add_argument("--log-format", default=None, choices=LOG_FORMATS, help="($EHR_SANDBOX_LOG_FORMAT)")
    worker.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics over HTTP on this port (off by default)",
    )
    worker.set_defaults(func=_worker)
    mllp = sub.add_parser("mllp", help="run the HL7 v2 MLLP listener without HTTP")
    mllp.add_argument("--host", default=None, help="bind address (default 127.0.0.1, or $EHR_SANDBOX_HOST)")
    mllp.add_argument("--port", type=int, default=None, help="MLLP port (default 2575, or $EHR_SANDBOX_MLLP_PORT)")
    mllp.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    mllp.add_argument("--log-format", default=None, choices=LOG_FORMATS, help="($EHR_SANDBOX_LOG_FORMAT)")
    mllp.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics over HTTP on this port (off by default)",
    )
    mllp.set_defaults(func=_mllp)
    from sandbox.cli_admin import add_admin_commands  # imports CliError from here: must come after it exists

    add_admin_commands(sub)
    from sandbox.auth.cli import add_client_commands  # clients add|list|remove|faults

    add_client_commands(sub)
    from synthetic_data.cli import add_data_commands  # generate, load

    add_data_commands(sub)
    from sandbox.hl7v2.cli import add_hl7_commands  # hl7 send

    add_hl7_commands(sub)
    from tasks.cli import add_task_commands  # tasks lint|start|check|hint|submit|retry, report

    add_task_commands(sub)
    from sandbox.store.cli import add_db_commands  # db upgrade|current|check|revision

    add_db_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
    except CliError as exc:
        print(f"ehr-sandbox: {exc}", file=sys.stderr)
        return 2
    except (OperationalError, ArgumentError) as exc:  # serve, worker, mllp: the database is down or misnamed
        print(f"ehr-sandbox: {database_error(exc)}", file=sys.stderr)
        return 2
    except SchemaError as exc:  # a start that cannot upgrade the database (serve, worker, any command)
        print(f"ehr-sandbox: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"ehr-sandbox: {exc.strerror or exc} ({getattr(exc, 'filename', '') or 'check the address and port'})",
            file=sys.stderr,
        )
        return 1
    return status or 0


if __name__ == "__main__":
    # `python -m sandbox.cli` runs this file as __main__: run the imported module's main, so that the CliError the
    # command modules raise (imported from sandbox.cli) is the class main catches.
    from sandbox.cli import main as imported_main

    sys.exit(imported_main())
