"""``ehr-sandbox tasks lint|start|check|hint|submit|retry`` and ``ehr-sandbox report``.  Thin: parse, call, print."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from sandbox.cli import CliError
from sandbox.config import Settings
from sandbox.fhir.interactions import Interactions
from sandbox.fhir.search_params import registry
from sandbox.store.database import Database
from sandbox.store.repository import Repository
from sandbox.store.schema import task_attempts
from tasks.engine import Attempt, TaskEngine, TaskFailure
from tasks.library import Library, UnknownTask
from tasks.loader import PackError, load_pack_file


def add_task_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    tasks = sub.add_parser("tasks", help="task packs and attempts: lint, start, check, hint, submit, retry")
    tsub = tasks.add_subparsers(dest="tasks_command", required=True)
    lint = tsub.add_parser("lint", help="validate task pack files without running them")
    lint.add_argument("paths", nargs="+", metavar="PATH", help="pack files (.yaml) or folders of them")
    lint.set_defaults(func=_lint)
    for name, help_text in [
        ("start", "start an attempt at a task (or show the active one)"),
        ("check", "run a task's checks now and print the checklist"),
        ("hint", "show the next hint (it may cost points)"),
        ("submit", "check a last time and close the attempt"),
        ("retry", "close the attempt, reset what the task says, start again"),
    ]:
        p = tsub.add_parser(name, help=help_text)
        p.add_argument("--sandbox", required=True, help="the trainee's sandbox id")
        p.add_argument("--task", required=True, help="task id, or PACK/TASK when several packs have it")
        p.add_argument(
            "--trainee", required=name == "start", help="user id (default for check: whoever has an attempt)"
        )
        p.add_argument("--pack", action="append", default=[], help="an extra pack file besides the built-in ones")
        p.add_argument("--json", action="store_true", help="print the attempt as JSON")
        if name == "start":
            p.add_argument("--cohort", default=None, help="the cohort this attempt counts for in reports")
        p.set_defaults(func=_attempt_command(name))
    report = sub.add_parser("report", help="a cohort's results: matrix as CSV, JSON, or xAPI 1.0.3 statements")
    report.add_argument("cohort", metavar="COHORT", help="cohort id")
    report.add_argument("--format", choices=["csv", "xapi", "json"], default="csv")
    report.add_argument("--pack", action="append", default=[], help="show every task of this pack id, even unstarted")
    report.add_argument("--output", default="-", help="a file to write (default: standard output)")
    report.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> None:
    from sandbox.store.admin_errors import AdminError
    from tasks.reports import cohort_report, to_csv, xapi_statements

    with _engine([]) as engine:
        try:
            with engine.db.read() as conn:
                report = cohort_report(conn, engine, args.cohort, packs=args.pack)
        except AdminError as exc:
            raise CliError(exc.message) from None
        except LookupError as exc:
            raise CliError(str(exc)) from None
        if args.format == "csv":
            text = to_csv(report)
        elif args.format == "xapi":
            text = json.dumps(xapi_statements(report, Settings.from_env().public_base), indent=2) + "\n"
        else:
            text = json.dumps(report.to_json(), indent=2) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
        return
    try:
        Path(args.output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {args.output}: {exc.strerror}") from None


def _lint(args: argparse.Namespace) -> None:
    files: list[Path] = []
    for raw in args.paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml")))
        elif path.exists():
            files.append(path)
        else:
            raise CliError(f"{raw}: no such file or folder")
    if not files:
        raise CliError("no pack files (*.yaml) found")
    errors = 0
    for file in files:
        try:
            pack = load_pack_file(file)
        except PackError as exc:
            print(f"error: {exc}", file=sys.stderr)
            errors += 1
            continue
        checks = sum(len(t.checks) for t in pack.tasks)
        print(f"ok: {file}: pack '{pack.id}', {len(pack.tasks)} tasks, {checks} checks")
    if errors:
        raise CliError(f"{errors} of {len(files)} pack files have errors")


@contextmanager
def _engine(extra_packs: list[str]) -> Iterator[TaskEngine]:
    try:
        library = Library.builtin([Path(p) for p in extra_packs])
    except PackError as exc:
        raise CliError(str(exc)) from None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    settings = Settings.from_env()
    db = Database(settings.database_url)
    reg = registry()
    try:
        db.create_schema()
        yield TaskEngine(db, Interactions(Repository(reg), reg), library)
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0]
        raise CliError(f"cannot use the database ({reason}); check EHR_SANDBOX_DATABASE_URL") from None
    except (TaskFailure, UnknownTask) as exc:
        raise CliError(str(exc)) from None
    finally:
        db.dispose()


def _attempt_command(name: str) -> Callable[[argparse.Namespace], None]:
    def run(args: argparse.Namespace) -> None:
        with _engine(args.pack) as engine:
            if name == "start":
                attempt = engine.start(args.sandbox, args.trainee, args.task, cohort_id=args.cohort)
                _show(attempt, args.json)
                return
            trainee = args.trainee or _trainee_of(engine, args.sandbox, args.task)
            if name == "hint":
                hint = engine.hint(args.sandbox, trainee, args.task)
                print(json.dumps({"hint": hint.text, "cost": hint.cost}) if args.json else hint.text)
                return
            action = {"check": engine.check, "submit": engine.submit, "retry": engine.retry}[name]
            _show(action(args.sandbox, trainee, args.task), args.json)

    return run


def _trainee_of(engine: TaskEngine, sandbox_id: str, task_ref: str) -> str:
    pack, task = engine.library.find(task_ref)
    t = task_attempts.c
    with engine.db.read() as conn:
        rows = conn.execute(
            select(t.trainee_id)
            .where(t.sandbox_id == sandbox_id, t.pack_id == pack.id, t.task_id == task.id)
            .distinct()
        ).all()
    if not rows:
        raise CliError(f"nobody has started task '{task.id}' in sandbox '{sandbox_id}' (tasks start --trainee ...)")
    if len(rows) > 1:
        names = ", ".join(sorted(r.trainee_id for r in rows))
        raise CliError(f"several trainees work on '{task.id}' in sandbox '{sandbox_id}' ({names}): pass --trainee")
    return rows[0].trainee_id


def _show(attempt: Attempt, as_json: bool) -> None:
    if as_json:
        print(json.dumps(attempt.to_json(), indent=2))
        return
    verdict = "passed" if attempt.passed else "not passed"
    print(
        f"{attempt.pack_id}/{attempt.task_id}  trainee {attempt.trainee_id}"
        f"  attempt {attempt.attempt} ({attempt.status})"
        f"  score {attempt.score:g}/{attempt.max_score:g}  {verdict}  {attempt.seconds_on_task:.0f}s on task"
    )
    for r in attempt.results:
        mark = {"pass": "PASS", "fail": "FAIL", "not-applicable": "N/A "}[r.status]
        print(f"  {mark}  {r.check_id:<24} {r.points:g}/{r.max_points:g}  {r.message}")
        if r.feedback:
            print(f"        {r.feedback}")
