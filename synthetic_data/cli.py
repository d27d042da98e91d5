"""``ehr-sandbox generate`` and ``ehr-sandbox load``: thin wrappers over the generator and the loader."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date
from pathlib import Path

from sandbox.cli import CliError

_BAR = 30
# Below this much input a worker's start (a second or two of imports) costs more than it saves.
_WORKERS_FROM_MB = 4


def add_data_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    generate = sub.add_parser(
        "generate",
        help="generate synthetic patients (FHIR bundles, NDJSON, HL7 v2)",
        description="Write DIR/fhir/*.json (transaction bundles), DIR/ndjson/{Type}.ndjson and DIR/hl7v2/*.hl7.",
    )
    generate.add_argument("--patients", type=int, required=True, help="how many patients (training cases included)")
    generate.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same bytes")
    generate.add_argument("--out", type=Path, required=True, help="output directory")
    generate.add_argument("--today", default=None, help="the date the records end on (default 2026-01-01)")
    generate.add_argument("--years", type=int, default=5, help="years of history per patient (default 5)")
    generate.add_argument("--cases", type=Path, default=None, help="a folder of case YAML files (default: built-in)")
    generate.add_argument("--no-cases", action="store_true", help="leave the training cases out")
    generate.add_argument("--quiet", action="store_true", help="no progress output")
    generate.set_defaults(func=_generate)

    load = sub.add_parser(
        "load",
        help="load FHIR bundles or NDJSON (ours or Synthea's) into a sandbox or baseline",
        description="Load transaction/batch/collection Bundles and NDJSON files through the one write path.",
    )
    load.add_argument("path", type=Path, help="a file, or a folder of .json/.ndjson files (our --out folder works)")
    target = load.add_mutually_exclusive_group()
    target.add_argument("--sandbox", default=None, help="the sandbox to load into (default: the default sandbox)")
    target.add_argument("--baseline", default=None, help="the baseline to load into (created if it does not exist)")
    load.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes that validate and index bundles while this one writes (default: one per core, "
        f"none for less than {_WORKERS_FROM_MB} MB of files; 0: none)",
    )
    load.add_argument("--quiet", action="store_true", help="no progress output")
    load.set_defaults(func=_load)


def _generate(args: argparse.Namespace) -> None:
    from synthetic_data.cases import CaseError, load_case
    from synthetic_data.generator import DEFAULT_TODAY, GeneratorOptions
    from synthetic_data.output import write_population

    if args.patients < 0:
        raise CliError(f"--patients must be 0 or more, not {args.patients}")
    if args.seed < 0:
        raise CliError(f"--seed must be 0 or more, not {args.seed}")
    try:
        today = date.fromisoformat(args.today) if args.today else DEFAULT_TODAY
    except ValueError:
        raise CliError(f"--today must be a date like 2026-01-01, not '{args.today}'") from None
    cases = None
    if args.no_cases:
        cases = ()
    elif args.cases is not None:
        if not args.cases.is_dir():
            raise CliError(f"--cases {args.cases} is not a folder of case YAML files")
        try:
            cases = tuple(load_case(p) for p in sorted(args.cases.glob("*.yaml")))
        except CaseError as exc:
            raise CliError(str(exc)) from None
    try:
        options = GeneratorOptions(args.patients, args.seed, today, args.years, cases)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        summary = write_population(args.out, options, None if args.quiet else _bar("generated", args.patients))
    except OSError as exc:
        raise CliError(
            f"cannot write to {args.out}: {exc.strerror or exc}; choose a folder you can write to with --out"
        ) from None
    if not args.quiet and sys.stderr.isatty():
        sys.stderr.write("\n")
    print(f"wrote {summary.patients} patients ({summary.resources} resources) to {args.out}")


def _load(args: argparse.Namespace) -> None:
    from sqlalchemy.exc import OperationalError

    from sandbox.app import ensure_default_sandbox
    from sandbox.config import Settings
    from sandbox.store import sandboxes
    from sandbox.store.admin_errors import AdminError, NotFound
    from sandbox.store.database import Database
    from sandbox.store.layers import DEFAULT_SANDBOX, UnknownSandbox, resolve_view
    from synthetic_data.loader import Loader, LoadError, discover

    if not args.path.exists():
        raise CliError(f"{args.path} does not exist; give a bundle, an NDJSON file or a folder of them")
    if args.workers is not None and args.workers < 0:
        raise CliError(f"--workers must be 0 or more, not {args.workers}")
    try:
        files = discover(args.path)
    except LoadError as exc:
        raise CliError(str(exc)) from None
    workers = args.workers
    if workers is None:
        size = sum(p.stat().st_size for p in files)
        workers = (os.cpu_count() or 1) if size >= _WORKERS_FROM_MB * 1_000_000 else 0
    settings = Settings.from_env()
    db = Database(settings.database_url)
    try:
        db.create_schema()
        ensure_default_sandbox(db)
        with db.write() as conn:
            if args.baseline:
                try:
                    view = sandboxes.baseline_view_for_loading(conn, args.baseline)
                except NotFound:
                    sandboxes.create_baseline(conn, args.baseline, baseline_id=args.baseline)
                    view = sandboxes.baseline_view_for_loading(conn, args.baseline)
                    print(f"created baseline {args.baseline}")
                base = f"{settings.public_base}/baselines/{args.baseline}"
            else:
                sandbox_id = args.sandbox or DEFAULT_SANDBOX
                try:
                    view = resolve_view(conn, sandbox_id)
                except UnknownSandbox:
                    raise CliError(
                        f"there is no sandbox '{sandbox_id}'; create it first or leave out --sandbox"
                    ) from None
                base = (
                    f"{settings.public_base}/fhir"
                    if sandbox_id == DEFAULT_SANDBOX
                    else (f"{settings.public_base}/sandboxes/{sandbox_id}/fhir")
                )
        loader = Loader(db, view, base=base, progress=None if args.quiet else _load_bar(), workers=workers)
        report = loader.load(args.path)
    except OperationalError as exc:
        raise CliError(f"cannot use the database ({exc.orig}); check EHR_SANDBOX_DATABASE_URL") from None
    except AdminError as exc:
        raise CliError(exc.message) from None
    except LoadError as exc:
        raise CliError(str(exc)) from None
    finally:
        db.dispose()
    if not args.quiet and sys.stderr.isatty():
        sys.stderr.write("\n")
    for line in report.summary_lines():
        print(line)
    if report.total == 0 and report.rejected:
        raise CliError("nothing was loaded; see the rejections above")


def _bar(verb: str, total: int):  # type: ignore[no-untyped-def]
    steps = _Steps()

    def show(done: int) -> None:
        if steps.due(done, total):
            _progress(done, total, f"{verb} {done}/{total} patients")

    return show


def _load_bar():  # type: ignore[no-untyped-def]
    steps = _Steps()

    def show(done: int, total: int, report) -> None:  # type: ignore[no-untyped-def]
        if steps.due(done, total):
            _progress(
                done,
                total,
                f"{done}/{total} files, {report.total:,} resources loaded, {len(report.rejected)} rejected",
            )

    return show


class _Steps:
    """On a terminal, redraw often; in a log, write a line at every tenth of the way."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = -1

    def due(self, done: int, total: int) -> bool:
        step = done * 10 // max(total, 1) if not self.tty else done * 200 // max(total, 1)
        if step == self.last and done != total:
            return False
        self.last = step
        return True


def _progress(done: int, total: int, text: str) -> None:
    filled = _BAR * done // max(total, 1)
    line = f"[{'#' * filled}{'.' * (_BAR - filled)}] {text}"
    sys.stderr.write(f"\r{line}" if sys.stderr.isatty() else f"{line}\n")
    sys.stderr.flush()
