"""The admin commands: ``ehr-sandbox sandbox|baseline|user|cohort ...``.

They work on the database directly (``$EHR_SANDBOX_DATABASE_URL``), like the
admin API does, so a trainer can reset a cohort with the server running or not.
Each failure prints one line saying what went wrong and exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

from sandbox.accounts import cohorts as cohort_ops
from sandbox.accounts import tokens, users
from sandbox.accounts.roster import parse_roster
from sandbox.cli import CliError, database_error
from sandbox.config import Settings
from sandbox.fhir.validation import dump_json
from sandbox.store import sandboxes
from sandbox.store.admin_errors import AdminError
from sandbox.store.database import Database

Handler = Callable[[Connection, argparse.Namespace], None]


@contextmanager
def _transaction(*, write: bool) -> Iterator[Connection]:
    from sandbox.app import ensure_default_sandbox  # the app module pulls in FastAPI: only when a command runs

    settings = Settings.from_env()
    db = Database(settings.database_url)
    try:
        db.create_schema()
        ensure_default_sandbox(db)
        with db.write() if write else db.read() as conn:
            yield conn
    except OperationalError as exc:
        raise database_error(exc) from None
    except AdminError as exc:
        raise CliError(exc.message) from None
    finally:
        db.dispose()


def _command(handler: Handler, *, write: bool = True) -> Callable[[argparse.Namespace], None]:
    def run(args: argparse.Namespace) -> None:
        with _transaction(write=write) as conn:
            handler(conn, args)

    return run


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _read_text(path: str) -> str:
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None


def _password(args: argparse.Namespace) -> str | None:
    if not getattr(args, "password_stdin", False):
        return None
    return sys.stdin.readline().rstrip("\r\n")


# ---- sandbox ---------------------------------------------------------------------------------------


def _sandbox_create(conn: Connection, args: argparse.Namespace) -> None:
    info = sandboxes.create_sandbox(conn, args.name, args.baseline, sandbox_id=args.id)
    print(f"created sandbox {info.id}: /sandboxes/{info.id}/fhir")


def _sandbox_reset(conn: Connection, args: argparse.Namespace) -> None:
    info = sandboxes.reset_sandbox(conn, args.id)
    print(f"reset sandbox {info.id} to {'baseline ' + info.baseline_id if info.baseline_id else 'empty'}")


def _sandbox_snapshot(conn: Connection, args: argparse.Namespace) -> None:
    info = sandboxes.snapshot_sandbox(conn, args.id, args.name, baseline_id=args.baseline_id)
    print(f"created baseline {info.id} with {info.own_resources} resources")


def _sandbox_delete(conn: Connection, args: argparse.Namespace) -> None:
    sandboxes.delete_sandbox(conn, args.id)
    print(f"deleted sandbox {args.id}")


def _sandbox_list(conn: Connection, args: argparse.Namespace) -> None:
    found = sandboxes.list_layers(conn, "sandbox")
    if args.json:
        for info in found:
            print(json.dumps(info.to_json()))
        return
    rows = [
        [i.id, i.name, i.baseline_id or "-", str(i.own_resources), str(i.baseline_resources), _when(i.last_activity)]
        for i in found
    ]
    _table(rows, ["ID", "NAME", "BASELINE", "CHANGED", "BASELINE_RESOURCES", "LAST_ACTIVITY"])


def _export(conn: Connection, args: argparse.Namespace, kind: str) -> None:
    sandboxes.get_layer(conn, args.id, kind)
    view = sandboxes.layer_view(conn, args.id)
    out = sys.stdout.buffer if args.output == "-" else None
    try:
        target = out or open(args.output, "wb")  # noqa: SIM115 - closed below, stdout is not ours to close
    except OSError as exc:
        raise CliError(f"cannot write {args.output}: {exc.strerror}") from None
    try:
        if args.format == "bundle":
            target.write(dump_json(sandboxes.export_bundle(conn, view, args.base.rstrip("/"))) + b"\n")
        else:
            for line in sandboxes.export_ndjson(conn, view):
                target.write(line)
    finally:
        if out is None:
            target.close()
        else:
            target.flush()


def _when(index_form: str | None) -> str:
    return index_form[:19].replace("T", " ") if index_form else "-"


# ---- baseline --------------------------------------------------------------------------------------


def _baseline_create(conn: Connection, args: argparse.Namespace) -> None:
    info = sandboxes.create_baseline(conn, args.name, baseline_id=args.id)
    print(f"created baseline {info.id} (empty; load data into it before making sandboxes from it)")


def _baseline_list(conn: Connection, args: argparse.Namespace) -> None:
    found = sandboxes.list_layers(conn, "baseline")
    if args.json:
        for info in found:
            print(json.dumps(info.to_json()))
        return
    _table(
        [[i.id, i.name, str(i.own_resources), _when(i.created_at)] for i in found],
        ["ID", "NAME", "RESOURCES", "CREATED"],
    )


def _baseline_delete(conn: Connection, args: argparse.Namespace) -> None:
    sandboxes.delete_baseline(conn, args.id)
    print(f"deleted baseline {args.id}")


# ---- user --------------------------------------------------------------------------------------------


def _user_create(conn: Connection, args: argparse.Namespace) -> None:
    user = users.create_user(conn, args.name, args.email, args.role, password=_password(args))
    print(f"created {user.role} {user.id} <{user.email}>")


def _user_list(conn: Connection, args: argparse.Namespace) -> None:
    _table(
        [[u.id, u.name, u.email, u.role] for u in users.list_users(conn, args.role)], ["ID", "NAME", "EMAIL", "ROLE"]
    )


def _user_token(conn: Connection, args: argparse.Namespace) -> None:
    user = users.lookup_user(conn, args.user)
    _info, secret = tokens.issue_token(conn, user.id, args.label)
    print(f"token for {user.email} (shown once, keep it): {secret}")


def _user_password(conn: Connection, args: argparse.Namespace) -> None:
    user = users.lookup_user(conn, args.user)
    password = _password(args)
    if password is None:
        raise CliError("pass the new password on standard input with --password-stdin")
    users.set_password(conn, user.id, password)
    print(f"password set for {user.email}")


def _user_delete(conn: Connection, args: argparse.Namespace) -> None:
    user = users.lookup_user(conn, args.user)
    users.delete_user(conn, user.id)
    print(f"deleted user {user.email}")


# ---- cohort ----------------------------------------------------------------------------------------------


def _cohort_create(conn: Connection, args: argparse.Namespace) -> None:
    roster = parse_roster(_read_text(args.roster)) if args.roster else []
    cohort = cohort_ops.create_cohort(
        conn,
        args.name,
        args.trainer,
        baseline_id=args.baseline,
        mode="shared" if args.shared else "private",
        roster=roster,
    )
    print(f"created cohort {cohort.id} with {len(cohort.members)} members and {len(cohort.sandbox_ids)} sandboxes")


def _cohort_add(conn: Connection, args: argparse.Namespace) -> None:
    if bool(args.user) == bool(args.roster):
        raise CliError("give either --user EMAIL_OR_ID or --roster FILE.csv")
    if args.user:
        members = [cohort_ops.add_member(conn, args.id, args.user)]
    else:
        members = cohort_ops.add_roster(conn, args.id, parse_roster(_read_text(args.roster)))
    print(f"added {len(members)} members to cohort {args.id}")


def _cohort_remove(conn: Connection, args: argparse.Namespace) -> None:
    cohort_ops.remove_member(conn, args.id, args.user)
    print(f"removed {args.user} from cohort {args.id}")


def _cohort_reset(conn: Connection, args: argparse.Namespace) -> None:
    if args.trainee:
        sandbox_id = cohort_ops.reset_member(conn, args.id, args.trainee)
        print(f"reset sandbox {sandbox_id} of {args.trainee}")
    else:
        print(f"reset {len(cohort_ops.reset_cohort(conn, args.id))} sandboxes of cohort {args.id}")


def _cohort_list(conn: Connection, args: argparse.Namespace) -> None:
    rows = [
        [c.id, c.name, c.trainer_id, c.baseline_id or "-", c.mode, str(len(c.members))]
        for c in cohort_ops.list_cohorts(conn)
    ]
    _table(rows, ["ID", "NAME", "TRAINER", "BASELINE", "MODE", "MEMBERS"])


def _cohort_show(conn: Connection, args: argparse.Namespace) -> None:
    cohort = cohort_ops.get_cohort(conn, args.id)
    print(
        f"{cohort.name} ({cohort.id}): trainer {cohort.trainer_id}, baseline {cohort.baseline_id or '-'}, {cohort.mode}"
    )
    _table(
        [[m.user.name, m.user.email, m.user.role, m.sandbox_id] for m in cohort.members],
        ["NAME", "EMAIL", "ROLE", "SANDBOX"],
    )


def _cohort_delete(conn: Connection, args: argparse.Namespace) -> None:
    cohort_ops.delete_cohort(conn, args.id)
    print(f"deleted cohort {args.id} and its sandboxes")


# ---- the parser --------------------------------------------------------------------------------------------


def _export_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=["ndjson", "bundle"], default="ndjson")
    parser.add_argument("--output", "-o", default="-", help="file to write (default: standard output)")
    parser.add_argument("--base", default="http://localhost/fhir", help="base URL for the bundle's fullUrls")


def add_admin_commands(sub: Any) -> None:
    """Register the ``sandbox``, ``baseline``, ``user`` and ``cohort`` command groups on the main parser."""
    sandbox = sub.add_parser("sandbox", help="create, reset, snapshot, delete, list and export sandboxes")
    s = sandbox.add_subparsers(dest="action", required=True)
    p = s.add_parser("create", help="a new sandbox (empty, or over a baseline)")
    p.add_argument("name")
    p.add_argument("--baseline", help="baseline id the sandbox starts from")
    p.add_argument("--id", help="choose the sandbox id (default: made from the name)")
    p.set_defaults(func=_command(_sandbox_create))
    p = s.add_parser("reset", help="back to its baseline (its own changes are dropped)")
    p.add_argument("id")
    p.set_defaults(func=_command(_sandbox_reset))
    p = s.add_parser("snapshot", help="copy what a sandbox sees into a new baseline")
    p.add_argument("id")
    p.add_argument("name", help="name of the new baseline")
    p.add_argument("--baseline-id", help="choose the new baseline's id")
    p.set_defaults(func=_command(_sandbox_snapshot))
    p = s.add_parser("delete", help="delete a sandbox and everything written in it")
    p.add_argument("id")
    p.set_defaults(func=_command(_sandbox_delete))
    p = s.add_parser("list", help="sandboxes with sizes and last activity")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=_command(_sandbox_list, write=False))
    p = s.add_parser("export", help="the resources a sandbox sees, as NDJSON or a transaction bundle")
    p.add_argument("id")
    _export_flags(p)
    p.set_defaults(func=_command(lambda conn, args: _export(conn, args, "sandbox"), write=False))

    baseline = sub.add_parser("baseline", help="create, list, delete and export baselines")
    b = baseline.add_subparsers(dest="action", required=True)
    p = b.add_parser("create", help="an empty baseline, for a loader to fill")
    p.add_argument("name")
    p.add_argument("--id", help="choose the baseline id")
    p.set_defaults(func=_command(_baseline_create))
    p = b.add_parser("list", help="baselines with their sizes")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=_command(_baseline_list, write=False))
    p = b.add_parser("delete", help="delete a baseline no sandbox or cohort uses")
    p.add_argument("id")
    p.set_defaults(func=_command(_baseline_delete))
    p = b.add_parser("export", help="a baseline's resources, as NDJSON or a transaction bundle")
    p.add_argument("id")
    _export_flags(p)
    p.set_defaults(func=_command(lambda conn, args: _export(conn, args, "baseline"), write=False))

    user = sub.add_parser("user", help="users, their roles, passwords and API tokens")
    u = user.add_subparsers(dest="action", required=True)
    p = u.add_parser("create", help="a new user")
    p.add_argument("name")
    p.add_argument("email")
    p.add_argument("--role", required=True, choices=users.ROLES)
    p.add_argument("--password-stdin", action="store_true", help="read a password from standard input")
    p.set_defaults(func=_command(_user_create))
    p = u.add_parser("list", help="users")
    p.add_argument("--role", choices=users.ROLES)
    p.set_defaults(func=_command(_user_list, write=False))
    p = u.add_parser("token", help="issue an API token (printed once)")
    p.add_argument("user", help="email or user id")
    p.add_argument("--label", default="cli")
    p.set_defaults(func=_command(_user_token))
    p = u.add_parser("password", help="set a user's password (read from standard input)")
    p.add_argument("user", help="email or user id")
    p.add_argument("--password-stdin", action="store_true", required=True)
    p.set_defaults(func=_command(_user_password))
    p = u.add_parser("delete", help="delete a user who is in no cohort")
    p.add_argument("user", help="email or user id")
    p.set_defaults(func=_command(_user_delete))

    cohort = sub.add_parser("cohort", help="cohorts of trainees, their sandboxes and resets")
    c = cohort.add_subparsers(dest="action", required=True)
    p = c.add_parser("create", help="a cohort; with --roster its members and their sandboxes too")
    p.add_argument("name")
    p.add_argument("--trainer", required=True, help="email or user id of the trainer")
    p.add_argument("--baseline", help="baseline the sandboxes start from")
    p.add_argument("--shared", action="store_true", help="one shared sandbox instead of one per trainee")
    p.add_argument("--roster", help="CSV file of name,email,role ('-' for standard input)")
    p.set_defaults(func=_command(_cohort_create))
    p = c.add_parser("add", help="add one user, or a CSV roster")
    p.add_argument("id")
    p.add_argument("--user", help="email or user id")
    p.add_argument("--roster", help="CSV file of name,email,role ('-' for standard input)")
    p.set_defaults(func=_command(_cohort_add))
    p = c.add_parser("remove", help="remove a member (and their private sandbox)")
    p.add_argument("id")
    p.add_argument("user", help="email or user id")
    p.set_defaults(func=_command(_cohort_remove))
    p = c.add_parser("reset", help="reset every sandbox of the cohort, or one trainee's")
    p.add_argument("id")
    p.add_argument("--trainee", help="email or user id: reset only this trainee's sandbox")
    p.set_defaults(func=_command(_cohort_reset))
    p = c.add_parser("list", help="cohorts")
    p.set_defaults(func=_command(_cohort_list, write=False))
    p = c.add_parser("show", help="a cohort's members and their sandboxes")
    p.add_argument("id")
    p.set_defaults(func=_command(_cohort_show, write=False))
    p = c.add_parser("delete", help="delete a cohort and its sandboxes (users stay)")
    p.add_argument("id")
    p.set_defaults(func=_command(_cohort_delete))
