"""docker-compose.yml and the Dockerfile: Docker does not run here, so the file is checked against the Compose
specification's schema, and every command in it against the CLI it will run."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from sandbox.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


def _services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def _expanded(argv: list[str]) -> list[str]:
    """Compose's ``${NAME:-default}`` interpolation, with the defaults."""
    return [re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", arg) for arg in argv]


def test_the_compose_file_follows_the_compose_specification() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_topology_is_postgres_several_web_workers_an_outbox_worker_and_the_mllp_listener() -> None:
    services = _services()
    assert set(services) == {"postgres", "app", "worker", "mllp"}
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    for name, service in services.items():
        assert service["healthcheck"]["test"], f"{name} has no health check"
    for name in ("app", "worker", "mllp"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert services[name]["environment"]["EHR_SANDBOX_DATABASE_URL"].startswith("postgresql://")
    app = _expanded(services["app"]["command"])
    assert "--no-worker" in app and int(app[app.index("--workers") + 1]) > 1
    assert "/readyz" in " ".join(services["app"]["healthcheck"]["test"])


def test_every_command_in_the_compose_file_and_the_dockerfile_is_one_the_cli_accepts() -> None:
    parser = build_parser()
    commands = [_expanded(s["command"]) for s in _services().values() if "command" in s]
    [cmd] = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")]
    commands.append(yaml.safe_load(cmd.removeprefix("CMD ")))
    for argv in commands:
        assert argv[0] == "ehr-sandbox", argv
        args = parser.parse_args(argv[1:])  # an unknown flag would exit here
        assert callable(args.func), shlex.join(argv)
