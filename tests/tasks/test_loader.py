"""Packs are validated on load; each error names the file, the line and the field at fault."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from tasks.library import Library
from tasks.loader import PackError, builtin_packs, load_pack, load_pack_file

GOOD = """\
pack: mini
title: A small pack
threshold: 0.8
tasks:
  - id: bp
    title: Chart a blood pressure
    role: nurse
    competencies: [skill:vital-signs]
    case: chest-pain-cardiology
    instructions: Chart it.
    checks:
      - id: charted
        title: Blood pressure charted
        points: 1
        search: Observation?patient={patient}&code=http://loinc.org|85354-9
        where: "status = 'final'"
        feedback: Chart the blood pressure.
"""


def _error(text: str) -> PackError:
    with pytest.raises(PackError) as caught:
        load_pack(text, "mini.yaml")
    return caught.value


def test_a_good_pack_loads_with_compiled_checks() -> None:
    pack = load_pack(GOOD, "mini.yaml")
    check = pack.tasks[0].checks[0]
    assert (pack.id, pack.threshold, check.search.rtype, check.points) == ("mini", 0.8, "Observation", 1.0)
    assert check.where[0].true_for({"resourceType": "Observation", "status": "final"}, {})
    assert not check.where[0].true_for({"resourceType": "Observation", "status": "preliminary"}, {})


def test_the_built_in_packs_load() -> None:
    assert sum(len(p.tasks) for p in builtin_packs()) >= 5


@pytest.mark.parametrize(
    ("change", "line", "field", "message"),
    [
        (("    role: nurse", "    role: surgeon"), 7, "tasks[bp].role", "'surgeon' is not a role"),
        (("        points: 1", "        points: -1"), 14, "tasks[bp].checks[charted].points", "must be above 0"),
        (("        points: 1", "        points: lots"), 14, "tasks[bp].checks[charted].points", "expected a number"),
        (("threshold: 0.8", "threshold: 80"), 3, "pack.threshold", "above 0 and at most 1"),
        (("    case: chest", "    kase: chest"), 9, "tasks[0].kase", "unknown field"),
        (("Observation?patient", "Observation?subjekt"), 15, "tasks[bp].checks[charted].search", "subjekt"),
        (("Observation?", "Observbation?"), 15, "tasks[bp].checks[charted].search", "Observbation"),
        (("{patient}", "{patiant}"), 15, "tasks[bp].checks[charted].search", "unknown placeholder {patiant}"),
        (("status = 'final'", "status.where("), 16, "tasks[bp].checks[charted].where", "does not work"),
        (
            ("        feedback: Chart the blood pressure.\n", ""),
            12,
            "tasks[bp].checks[charted].feedback",
            "is required",
        ),
        (("tasks:", "tasks: []\nold:"), 5, "pack.old", "unknown field"),
        (("  - id: bp", "  - id: Blood Pressure"), 5, "tasks[0].id", "is not an id"),
        (("title: A small pack", "title: [unclosed"), 3, "yaml", ""),
    ],
)
def test_a_bad_pack_is_rejected_naming_file_line_and_field(
    change: tuple[str, str], line: int, field: str, message: str
) -> None:
    old, new = change
    assert old in GOOD
    error = _error(GOOD.replace(old, new, 1))
    assert (error.source, error.line, error.field) == ("mini.yaml", line, field), str(error)
    assert message in error.message
    assert str(error).startswith(f"mini.yaml:{line}: {field}: ")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "whole minutes, above 0 and at most 1440 (a day)"),
        ("-5", "whole minutes, above 0 and at most 1440 (a day)"),
        ("1441", "whole minutes, above 0 and at most 1440 (a day)"),
        ("7.5", "expected a whole number, got 7.5"),
        ("ten", "expected a whole number, got 'ten'"),
        ("true", "expected a number, not true/false"),
        ("[10]", "expected a whole number"),
    ],
)
def test_a_bad_time_limit_is_rejected(value: str, message: str) -> None:
    timed = GOOD.replace("    instructions: Chart it.\n", f"    instructions: Chart it.\n    time_limit: {value}\n")
    error = _error(timed)
    assert (error.line, error.field) == (11, "tasks[bp].time_limit"), str(error)
    assert message in error.message


def test_a_time_limit_in_whole_minutes_loads() -> None:
    timed = GOOD.replace("    instructions: Chart it.\n", "    instructions: Chart it.\n    time_limit: 1440\n")
    assert load_pack(timed, "mini.yaml").tasks[0].time_limit_minutes == 1440
    assert load_pack(GOOD, "mini.yaml").tasks[0].time_limit_minutes is None


def test_duplicate_ids_and_unknown_dependencies_are_named() -> None:
    twice = GOOD + GOOD.split("tasks:\n", 1)[1]
    error = _error(twice)
    assert (error.line, error.field) == (18, "tasks[1].id") and "used twice" in error.message
    after = GOOD.replace("        feedback: Chart", "        after: [nothing]\n        feedback: Chart")
    error = _error(after)
    assert (error.field, error.message) == (
        "tasks[bp].checks[charted].after",
        "'nothing' is not an earlier check of this task",
    )


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(PackError) as caught:
        load_pack_file(tmp_path / "absent.yaml")
    assert str(caught.value).startswith(f"{tmp_path / 'absent.yaml'}:0: file: ")


def test_an_expression_that_cannot_be_evaluated_on_a_resource_does_not_hold() -> None:
    pack = load_pack(GOOD.replace("status = 'final'", "value >= 0"), "mini.yaml")
    where = pack.tasks[0].checks[0].where[0]
    assert where.true_for({"resourceType": "Observation", "valueInteger": 3}, {})
    # fhirpathpy raises on a string compared with a number: that is "no", not a crashed check run
    assert not where.true_for({"resourceType": "Observation", "valueString": "three"}, {})


def test_the_docs_count_the_built_in_library_as_it_is() -> None:
    """docs/tasks.md says how many built-in tasks there are, in how many packs, and for whom: held to the library
    here, so that the count cannot go stale when a task is added."""
    text = (Path(__file__).parents[2] / "docs" / "tasks.md").read_text()
    said = re.search(
        r"^(\d+) tasks in (\w+) packs \(`tasks/packs/`\).*?: (\d+) for physicians, (\d+) for nurses,\s+"
        r"(\d+) for registrars, (\d+) for pharmacists\.",
        text,
        re.M | re.S,
    )
    assert said is not None, "docs/tasks.md no longer counts the built-in library where this test looks"
    words = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9}
    library = Library.builtin()
    roles = Counter(task.role for _pack, task in library.tasks())
    assert (int(said.group(1)), words.get(said.group(2), said.group(2))) == (len(library.tasks()), len(library.packs))
    assert [int(n) for n in said.groups()[2:]] == [
        roles["physician"],
        roles["nurse"],
        roles["registrar"],
        roles["pharmacist"],
    ]
    assert sum(roles.values()) == len(library.tasks())  # no role the sentence leaves out
