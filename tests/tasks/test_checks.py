"""Check semantics a pack author relies on: ``when`` (not applicable, out of the total), ``after`` (not applicable
until the other passes, still in the total), ``critical`` (fails the task whatever the score)."""

from __future__ import annotations

from collections.abc import Callable

from sandbox.fhir.interactions import Interactions
from sandbox.store.database import Database
from tasks.engine import TaskEngine
from tasks.library import Library
from tasks.loader import load_pack
from tests.tasks.reference_writes import write_as_trainee

PACK = """\
pack: semantics
title: Check semantics
threshold: 0.5
tasks:
  - id: allergy
    title: Record an allergy
    role: nurse
    competencies: [skill:allergy-documentation]
    case: chest-pain-cardiology
    instructions: Record the lisinopril allergy.
    checks:
      - id: recorded
        title: Recorded
        points: 4
        search: AllergyIntolerance?patient={patient}&code=http://www.nlm.nih.gov/research/umls/rxnorm|29046
        as: allergy
        feedback: Record it.
      - id: severe
        title: Severity
        points: 2
        after: [recorded]
        search: AllergyIntolerance?patient={patient}&code=http://www.nlm.nih.gov/research/umls/rxnorm|29046
        where: "reaction.severity = 'severe'"
        feedback: Say how severe.
      - id: peanut-plan
        title: Only for patients allergic to peanuts
        points: 3
        when: AllergyIntolerance?patient={patient}&code=http://snomed.info/sct|256349002
        search: CarePlan?patient={patient}
        feedback: Write the anaphylaxis plan.
      - id: no-penicillin
        title: No penicillin
        points: 1
        critical: true
        forbid: true
        search: MedicationRequest?patient={patient}&code=http://www.nlm.nih.gov/research/umls/rxnorm|308182
        feedback: Not for this patient.
"""

ALLERGY = {
    "resourceType": "AllergyIntolerance",
    "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "29046"}]},
    "patient": {"reference": "{patient}"},
}
AMOXICILLIN = {
    "resourceType": "MedicationRequest",
    "status": "active",
    "intent": "order",
    "medicationCodeableConcept": {
        "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "308182"}]
    },
    "subject": {"reference": "{patient}"},
}


def _engine(db: Database, fhir: Interactions) -> TaskEngine:
    return TaskEngine(db, fhir, Library([load_pack(PACK, "semantics.yaml")]))


def test_after_when_and_critical(db: Database, fhir: Interactions, new_sandbox: Callable[[str], str]) -> None:
    engine = _engine(db, fhir)
    sandbox = new_sandbox("semantics")
    attempt = engine.start(sandbox, "ana", "semantics/allergy")

    nothing = {r.check_id: (r.status, r.max_points) for r in engine.check(sandbox, "ana", "allergy").results}
    # severe waits for recorded and keeps its 2 points in the total; the peanut check does not apply (Walter
    # Okafor is allergic to penicillin, not peanuts) and leaves the total.
    assert nothing == {
        "recorded": ("fail", 4),
        "severe": ("not-applicable", 2),
        "peanut-plan": ("not-applicable", 0),
        "no-penicillin": ("pass", 1),
    }

    write_as_trainee(db, fhir, sandbox, "ana", attempt.context, [{"as": "a", "resource": ALLERGY}])
    graded = engine.check(sandbox, "ana", "allergy")
    assert [(r.check_id, r.status) for r in graded.results if r.status != "pass"] == [
        ("severe", "fail"),
        ("peanut-plan", "not-applicable"),
    ]
    assert (graded.score, graded.max_score, graded.passed) == (5.0, 7.0, True)

    write_as_trainee(db, fhir, sandbox, "ana", attempt.context, [{"as": "m", "resource": AMOXICILLIN}])
    graded = engine.check(sandbox, "ana", "allergy")
    penicillin = next(r for r in graded.results if r.check_id == "no-penicillin")
    assert penicillin.status == "fail" and penicillin.message.startswith("Found 1 that should not exist: ")
    assert (graded.score, graded.passed) == (4.0, False)  # 4 of 7 is over the threshold, but a critical check failed
