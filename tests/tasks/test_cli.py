"""``ehr-sandbox tasks lint`` and ``tasks check``: what a trainer types, what comes back."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from sandbox.cli import main
from sandbox.fhir.interactions import Interactions
from sandbox.store.database import Database
from tests.tasks.reference_writes import load_solutions, write_as_trainee
from tests.tasks.test_loader import GOOD

VITALS = "vitals-current-encounter"


def test_lint_says_ok_or_names_the_line_at_fault(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    assert main(["tasks", "lint", str(tmp_path / "good.yaml")]) == 0
    assert "ok: " in capsys.readouterr().out
    (tmp_path / "bad.yaml").write_text(GOOD.replace("points: 1", "points: 0"))
    assert main(["tasks", "lint", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'bad.yaml'}:14: tasks[bp].checks[charted].points: must be above 0" in err
    assert err.strip().endswith("1 of 2 pack files have errors")
    assert main(["tasks", "lint", str(tmp_path / "missing.yaml")]) == 2


def test_check_prints_the_checklist(
    db: Database,
    fhir: Interactions,
    new_sandbox: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("EHR_SANDBOX_DATABASE_URL", db.url)
    sandbox = new_sandbox("cli")
    assert main(["tasks", "check", "--sandbox", sandbox, "--task", VITALS]) == 2
    assert "nobody has started task 'vitals-current-encounter'" in capsys.readouterr().err
    assert main(["tasks", "start", "--sandbox", sandbox, "--task", VITALS, "--trainee", "ana", "--json"]) == 0
    context = json.loads(capsys.readouterr().out)
    assert context["attempt"] == 1 and context["status"] == "active"
    solution = next(s for s in load_solutions() if s.task.endswith(VITALS))
    mistake = solution.mistakes[0]  # temperature in a free-text unit
    from tasks.engine import TaskEngine
    from tasks.library import Library

    attempt = TaskEngine(db, fhir, Library.builtin()).latest(sandbox, "ana", VITALS)
    assert attempt is not None
    write_as_trainee(db, fhir, sandbox, "ana", attempt.context, mistake.writes)
    assert main(["tasks", "check", "--sandbox", sandbox, "--task", VITALS]) == 0
    out = capsys.readouterr().out
    assert "score 7/8  passed" in out
    assert "FAIL  temperature" in out and "Chart body temperature with LOINC 8310-5" in out
    assert main(["tasks", "check", "--sandbox", "nowhere", "--task", VITALS, "--trainee", "ana"]) == 2
    assert "has not started task 'vitals-current-encounter' in sandbox 'nowhere'" in capsys.readouterr().err
