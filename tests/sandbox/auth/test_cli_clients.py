"""``ehr-sandbox clients``: registering, listing, faulting and removing SMART apps from the command line."""

from __future__ import annotations

import json
from pathlib import Path

from joserfc.jwk import RSAKey

from tests.sandbox.test_cli_admin import cli  # noqa: F401  (the fixture: run a command on the test database)


def test_clients_add_list_faults_remove(cli, tmp_path: Path) -> None:  # noqa: F811
    status, out, _ = cli(
        "clients",
        "add",
        "cli-app",
        "--scopes",
        "launch patient/*.rs",
        "--redirect-uri",
        "https://a.example.org/cb",
        "--auto-approve",
    )
    assert status == 0 and "registered cli-app (public)" in out
    status, out, _ = cli(
        "clients",
        "add",
        "conf-app",
        "--scopes",
        "user/*.rs",
        "--redirect-uri",
        "https://a.example.org/cb",
        "--confidential",
    )
    assert status == 0 and "client_secret: " in out
    jwks = tmp_path / "jwks.json"
    key = RSAKey.generate_key(2048, parameters={"kid": "k"}, private=True)
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    status, out, _ = cli("clients", "add", "svc", "--scopes", "system/*.rs", "--confidential", "--jwks", str(jwks))
    assert status == 0 and "confidential-asymmetric" in out
    assert cli("clients", "faults", "cli-app", "--fault", "expired_token")[0] == 0
    status, out, _ = cli("clients", "list", "--json")
    listed = {c["client_id"]: c for c in map(json.loads, out.splitlines())}
    assert set(listed) == {"cli-app", "conf-app", "svc"}
    assert listed["cli-app"]["faults"] == ["expired_token"] and listed["cli-app"]["auto_approve"] is True
    status, out, _ = cli("clients", "list")
    assert out.splitlines()[0].split() == ["CLIENT", "TYPE", "AUTO", "SCOPES", "FAULTS"]
    assert cli("clients", "remove", "cli-app")[0] == 0
    assert "cli-app" not in cli("clients", "list")[1]


def test_client_errors_are_one_line(cli) -> None:  # noqa: F811
    status, _, err = cli("clients", "add", "x", "--scopes", "patient/Nope.rs", "--redirect-uri", "https://a.b/c")
    assert status != 0 and len(err.strip().splitlines()) == 1 and "Nope" in err
    status, _, err = cli("clients", "remove", "missing")
    assert status != 0 and "no client 'missing'" in err
    status, _, err = cli(
        "clients",
        "add",
        "y",
        "--scopes",
        "launch",
        "--jwks",
        "/nonexistent.json",
        "--confidential",
        "--redirect-uri",
        "https://a.b/c",
    )
    assert status != 0 and "cannot read a JWKS" in err
