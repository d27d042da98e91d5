"""The command line: ``ehr-sandbox serve`` and friends.  Thin: parse flags, call the library, print errors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sandbox.config import Settings, load_or_create_admin_token
from sandbox.demo import create_demo, needs_demo


class CliError(Exception):
    """A user mistake: printed as one line, exit status 2."""


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from sandbox.app import create_app

    settings = Settings.from_env().with_overrides(host=args.host, port=args.port, base_url=args.base_url)
    token, generated = load_or_create_admin_token(settings)
    settings = settings.with_overrides(admin_token=token)
    app = create_app(settings)
    from sandbox.hl7v2.service import mllp_port_from_env

    try:
        mllp_port = args.mllp_port if args.mllp_port is not None else mllp_port_from_env()
    except ValueError as exc:
        raise CliError(str(exc)) from None
    app.state.hl7v2.configure(host=settings.host, mllp_port=mllp_port)
    from tasks.live import start_live_checks  # task checklists re-checked as sandboxes change

    start_live_checks(app.state.db, app.state.fhir)
    demo = None
    if args.demo and needs_demo(app.state.db):
        demo = create_demo(app.state.db, app.state.fhir, settings.data_dir)
    base = settings.public_base
    print(f"ehr-sandbox serving on {base}")
    print(f"  FHIR R4 (default sandbox, open): {base}/fhir  (metadata: {base}/fhir/metadata)")
    print(f"  Sandboxes:                        {base}/sandboxes/{{id}}/fhir")
    print(f"  HL7 v2 MLLP (MSH-6 = sandbox id):  {settings.host}:{mllp_port}  (HTTP: {base}/sandboxes/{{id}}/hl7v2)")
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
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=args.log_level, access_log=args.access_log)


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
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument("--no-access-log", dest="access_log", action="store_false")
    serve.add_argument(
        "--no-demo",
        dest="demo",
        action="store_false",
        help="on first start, do not set up the demo cohort (training-case baseline, a trainer, two trainees)",
    )
    serve.set_defaults(func=_serve)
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except CliError as exc:
        print(f"ehr-sandbox: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"ehr-sandbox: {exc.strerror or exc} ({getattr(exc, 'filename', '') or 'check the address and port'})",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
