"""The ``cds`` check: what a trainee did with CDS Hooks cards, validated in lint and judged from the log."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from sandbox.cdshooks.client import CdsClient
from sandbox.cdshooks.hooks import HookUser
from sandbox.fhir.context import Views
from sandbox.fhir.interactions import Interactions
from sandbox.store.database import Database
from tasks.engine import TaskEngine
from tasks.library import Library
from tasks.loader import PackError, load_pack

PACK = """\
pack: cds-mini
title: Cards
threshold: 0.8
tasks:
  - id: review
    title: Review the AI card
    role: physician
    competencies: [skill:ai-output-review]
    case: chest-pain-cardiology
    instructions: Review it.
    checks:
      - id: shown
        title: Card shown
        points: 1
        cds:
          service: builtin/ai-risk-model
          indicator: warning
        feedback: Open the chart.
      - id: overridden-already-treated
        title: Overridden as already treated
        points: 1
        cds:
          service: [ai-risk-model, some-vendor/other]
          outcome: overridden
          reason_code: already-treated
        feedback: Override it.
"""


def _error(old: str, new: str) -> PackError:
    with pytest.raises(PackError) as caught:
        load_pack(PACK.replace(old, new), "cds.yaml")
    return caught.value


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        ("outcome: overridden", "outcome: ignored", "checks[overridden-already-treated].cds.outcome", "not one of"),
        ("indicator: warning", "indicator: hard-stop", "checks[shown].cds.indicator", "'hard-stop' is not one of"),
        ("service: builtin/ai-risk-model", "service: a/b/c", "checks[shown].cds.service", "a CDS service id"),
        ("          indicator: warning", "          reason: true", "checks[shown].cds.reason", "only an overridden"),
        (
            "        feedback: Open the chart.",
            '        feedback: x\n        where: "true"',
            "checks[shown].where",
            "unknown field",
        ),
        ("          indicator: warning", "          colour: red", "checks[shown].cds.colour", "unknown field"),
    ],
)
def test_a_bad_cds_check_is_refused_with_its_field(old: str, new: str, field: str, message: str) -> None:
    error = _error(old, new)
    assert error.field.endswith(field) and message in error.message, str(error)


def test_cds_checks_count_only_this_trainees_decisions_for_the_patient_since_the_start(
    db: Database, fhir: Interactions, new_sandbox: Callable[[str], str]
) -> None:
    pack = load_pack(PACK, "cds.yaml")
    engine = TaskEngine(db, fhir, Library([pack]))
    sandbox = new_sandbox("cds")
    client = CdsClient(db, fhir, Views(db))
    root = "http://localhost"

    def patient_view(user: str, patient: str = "chest-pain-cardiology") -> dict:
        return asyncio.run(client.patient_view(sandbox, HookUser(user), patient, root=root)).cards[0]

    early = patient_view("ana")  # before the attempt started: does not count
    asyncio.run(client.override(sandbox, HookUser("ana"), early["call"], early["key"], "already-treated", root=root))
    engine.start(sandbox, "ana", "cds-mini/review")
    other = patient_view("ben")  # someone else's card
    asyncio.run(client.override(sandbox, HookUser("ben"), other["call"], other["key"], "already-treated", root=root))
    patient_view("ana", "pediatric-asthma")  # another patient's card
    graded = engine.check(sandbox, "ana", "cds-mini/review")
    assert [(r.check_id, r.status) for r in graded.results] == [
        ("shown", "fail"),
        ("overridden-already-treated", "fail"),
    ]
    assert graded.results[0].message == (
        "Expected at least 1 warning card from builtin/ai-risk-model shown to you since the task started, found 0"
    )

    mine = patient_view("ana")
    asyncio.run(client.override(sandbox, HookUser("ana"), mine["call"], mine["key"], "inputs-wrong", root=root))
    graded = engine.check(sandbox, "ana", "cds-mini/review")
    assert [(r.check_id, r.status) for r in graded.results] == [
        ("shown", "pass"),
        ("overridden-already-treated", "fail"),
    ]

    again = patient_view("ana")
    asyncio.run(client.override(sandbox, HookUser("ana"), again["call"], again["key"], "already-treated", root=root))
    graded = engine.check(sandbox, "ana", "cds-mini/review")
    assert [r.status for r in graded.results] == ["pass", "pass"] and graded.passed
    assert graded.results[1].message == (
        "Found 1 card from ai-risk-model or some-vendor/other overridden by you with the reason 'already-treated'"
        " since the task started"
    )
