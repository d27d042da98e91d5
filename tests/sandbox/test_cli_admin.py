"""The admin commands of the CLI: ``ehr-sandbox sandbox|baseline|user|cohort ...``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from sandbox.accounts import tokens
from sandbox.cli import main
from sandbox.fhir.search_params import registry
from sandbox.fhir.validation import parse_json
from sandbox.store import sandboxes
from sandbox.store.database import Database
from sandbox.store.layers import resolve_view
from sandbox.store.repository import Actor, Repository


@pytest.fixture
def cli(db: Database, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run one command against the test database: (exit status, stdout, stderr)."""
    monkeypatch.setenv("EHR_SANDBOX_DATABASE_URL", db.url)

    def run(*argv: str, stdin: str | None = None) -> tuple[int, str, str]:
        if stdin is not None:
            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        status = main(list(argv))
        out, err = capsys.readouterr()
        return status, out, err

    return run


def fill(db: Database, baseline_id: str, n: int = 2) -> None:
    repo = Repository(registry())
    with db.write() as conn:
        view = sandboxes.baseline_view_for_loading(conn, baseline_id)
        for i in range(n):
            body = {"resourceType": "Patient", "name": [{"family": f"F{i}"}]}
            repo.write(conn, view, body, Actor("loader", "loader"), rtype="Patient", rid=f"p{i}", method="PUT")


def test_sandbox_lifecycle(cli, db):
    status, out, _ = cli("baseline", "create", "Ward 4", "--id", "ward-4")
    assert status == 0 and "created baseline ward-4" in out
    fill(db, "ward-4")
    status, out, _ = cli("sandbox", "create", "Ann's practice", "--baseline", "ward-4", "--id", "ann")
    assert status == 0 and out.strip() == "created sandbox ann: /sandboxes/ann/fhir"
    repo = Repository(registry())
    with db.write() as conn:
        view = resolve_view(conn, "ann")
        repo.write(conn, view, {"resourceType": "Patient"}, Actor("user:ann"), rtype="Patient", rid="p0", method="PUT")
    status, out, _ = cli("sandbox", "list")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "BASELINE", "CHANGED", "BASELINE_RESOURCES", "LAST_ACTIVITY"]
    ann = next(line for line in lines if line.startswith("ann "))
    assert "ward-4" in ann and " 1 " in ann and " 2 " in ann
    status, out, _ = cli("sandbox", "list", "--json")
    listed = {d["id"]: d for d in map(json.loads, out.splitlines())}
    assert listed["ann"]["changed_resources"] == 1 and "default" in listed

    status, out, _ = cli("sandbox", "snapshot", "ann", "Prepared", "--baseline-id", "prepared")
    assert status == 0 and out.strip() == "created baseline prepared with 2 resources"
    status, out, _ = cli("sandbox", "reset", "ann")
    assert status == 0 and out.strip() == "reset sandbox ann to baseline ward-4"
    with db.read() as conn:
        assert repo.current(conn, resolve_view(conn, "ann"), "Patient", "p0").version_id == 1
    status, out, _ = cli("baseline", "list")
    assert {line.split()[0] for line in out.splitlines()[1:]} == {"ward-4", "prepared"}
    status, out, _ = cli("sandbox", "delete", "ann")
    assert status == 0 and out.strip() == "deleted sandbox ann"
    status, out, _ = cli("baseline", "delete", "ward-4")
    assert status == 0


def test_export_to_a_file_as_ndjson_or_bundle(cli, db, tmp_path: Path):
    cli("baseline", "create", "B", "--id", "b")
    fill(db, "b", 3)
    target = tmp_path / "b.ndjson"
    status, _, _ = cli("baseline", "export", "b", "--output", str(target))
    assert status == 0
    assert [parse_json(line)["id"] for line in target.read_bytes().splitlines()] == ["p0", "p1", "p2"]
    cli("sandbox", "create", "S", "--baseline", "b", "--id", "s")
    status, out, _ = cli("sandbox", "export", "s", "--format", "bundle", "--base", "http://h/fhir")
    bundle = json.loads(out)
    assert bundle["type"] == "transaction" and bundle["entry"][0]["fullUrl"] == "http://h/fhir/Patient/p0"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("sandbox", "create", "x", "--baseline", "nope"), "There is no baseline 'nope'"),
        (("sandbox", "create", "x", "--id", "bad id"), "not a valid id"),
        (("sandbox", "reset", "nope"), "There is no sandbox 'nope'"),
        (("sandbox", "delete", "default"), "cannot be deleted"),
        (("sandbox", "snapshot", "nope", "N"), "There is no sandbox 'nope'"),
        (("sandbox", "export", "nope"), "There is no sandbox 'nope'"),
        (("baseline", "delete", "nope"), "There is no baseline 'nope'"),
        (("user", "token", "nobody@example.org"), "no user with the email"),
        (("cohort", "reset", "nope"), "There is no cohort 'nope'"),
        (("cohort", "create", "C", "--trainer", "nobody@example.org"), "no user with the email"),
        (("cohort", "create", "C", "--trainer", "x", "--roster", "/no/such.csv"), "cannot read /no/such.csv"),
    ],
)
def test_errors_print_one_line_and_exit_non_zero(cli, argv, says):
    status, out, err = cli(*argv)
    assert status != 0
    assert err.count("\n") == 1 and err.startswith("ehr-sandbox: ") and says in err
    assert "Traceback" not in err


def test_an_unreachable_database_is_one_line_too(monkeypatch, capsys):
    monkeypatch.setenv("EHR_SANDBOX_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    assert main(["sandbox", "list"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "EHR_SANDBOX_DATABASE_URL" in err


def test_users_cohorts_and_resets(cli, db, tmp_path: Path):
    cli("baseline", "create", "B", "--id", "b")
    fill(db, "b")
    status, out, _ = cli(
        "user",
        "create",
        "Tess Trainer",
        "tess@example.org",
        "--role",
        "trainer",
        "--password-stdin",
        stdin="long password\n",
    )
    assert status == 0 and out.startswith("created trainer ")
    roster = tmp_path / "roster.csv"
    roster.write_text("name,email,role\nAnn,ann@example.org,trainee\nBob,bob@example.org,trainee\n")
    status, out, _ = cli(
        "cohort", "create", "Night", "--trainer", "tess@example.org", "--baseline", "b", "--roster", str(roster)
    )
    assert status == 0 and "with 2 members and 2 sandboxes" in out
    cohort_id = out.split()[2]
    status, out, _ = cli("cohort", "show", cohort_id)
    assert "ann@example.org" in out and "bob@example.org" in out
    status, out, _ = cli("cohort", "list")
    assert cohort_id in out and " 2" in out

    status, out, _ = cli("user", "token", "ann@example.org", "--label", "laptop")
    secret = out.strip().split()[-1]
    with db.read() as conn:
        assert tokens.user_for_token(conn, secret).email == "ann@example.org"

    status, out, _ = cli("cohort", "reset", cohort_id)
    assert status == 0 and out.strip() == f"reset 2 sandboxes of cohort {cohort_id}"
    status, out, _ = cli("cohort", "reset", cohort_id, "--trainee", "bob@example.org")
    assert status == 0 and "of bob@example.org" in out

    bad = tmp_path / "bad.csv"
    bad.write_text("Cid,cid-at-example,trainee\n")
    status, _, err = cli("cohort", "add", cohort_id, "--roster", str(bad))
    assert status != 0 and "line 1" in err
    status, _, err = cli("cohort", "add", cohort_id)
    assert status != 0 and "--user" in err
    status, out, _ = cli("cohort", "add", cohort_id, "--roster", "-", stdin="Cid,cid@example.org\n")
    assert status == 0 and "added 1 members" in out
    status, out, _ = cli("cohort", "remove", cohort_id, "cid@example.org")
    assert status == 0
    status, _, err = cli("user", "delete", "ann@example.org")
    assert status != 0 and "remove them from it first" in err
    status, out, _ = cli("cohort", "delete", cohort_id)
    assert status == 0
    status, out, _ = cli("user", "list", "--role", "trainee")
    assert {line.split()[-2] for line in out.splitlines()[1:]} == {
        "ann@example.org",
        "bob@example.org",
        "cid@example.org",
    }
    status, _, err = cli("user", "password", "ann@example.org", "--password-stdin", stdin="short\n")
    assert status != 0 and "at least 8" in err
