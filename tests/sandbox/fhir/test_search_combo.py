"""``patient`` and ``code`` searched together through their combined index rows (``sp_combo``).

The combined rows must find exactly what the two parameters find one by one: every pair of a resource's patient
and code, in the layer the resource's version lives in, gone when the resource is changed or deleted.  The
oracle is ``subject=Patient/X``, which no combined row answers, beside the same code.
"""

from __future__ import annotations

import pytest
from sqlalchemy import event

from sandbox.store import sandboxes
from sandbox.store.layers import View
from tests.sandbox.fhir.searching import Store, observation

BASELINE = View("base", ("base",))
SANDBOX = View("trainee", ("trainee", "base"))
LOINC, SNOMED = "http://loinc.org", "http://snomed.info/sct"
HR = {"system": LOINC, "code": "8867-4"}
PULSE = {"system": SNOMED, "code": "364075005"}
BARE = {"code": "hr"}  # a coding without a system

PATIENTS = ["p1", "p2", "p3"]
CODES = [f"{LOINC}|8867-4", "8867-4", f"{SNOMED}|364075005", "364075005", "|hr", "hr", f"{LOINC}|hr", "|8867-4"]


def _obs(rid: str, subject: str, *codings: dict[str, str]) -> dict:
    return observation(rid, subject={"reference": subject}, code={"coding": list(codings)})


@pytest.fixture
def store(db) -> Store:
    with db.write() as conn:
        sandboxes.create_baseline(conn, "Baseline", baseline_id="base")
        sandboxes.create_sandbox(conn, "Trainee", "base", sandbox_id="trainee")
    s = Store(db, SANDBOX)
    for resource in (
        _obs("one-code", "Patient/p1", HR),
        _obs("two-codes", "Patient/p1", HR, PULSE),
        _obs("other-patient", "Patient/p2", HR),
        _obs("no-system", "Patient/p1", BARE),
        _obs("moved", "Patient/p1", HR),
        _obs("recoded", "Patient/p2", PULSE),
        _obs("deleted", "Patient/p1", HR),
        _obs("a-group", "Group/g1", HR),  # not a patient: no row of `patient`, nor a combined one
        observation("text-only", subject={"reference": "Patient/p1"}, code={"text": "heart rate"}),
    ):
        s.put(resource, BASELINE)
    # The trainee's changes: move one to another patient, recode one, delete one, add one.
    s.put(_obs("moved", "Patient/p3", HR))
    s.put(_obs("recoded", "Patient/p2", HR, BARE))
    s.delete("Observation", "deleted")
    s.put(_obs("new", "Patient/p1", HR))
    return s


@pytest.mark.parametrize("view", [BASELINE, SANDBOX], ids=["baseline", "sandbox"])
def test_patient_and_code_together_find_what_they_find_apart(store, view):
    for pid in PATIENTS:
        for code in CODES:
            apart = store.found("Observation", f"subject=Patient/{pid}&code={code}", view)
            for patient in (pid, f"Patient/{pid}"):
                assert store.found("Observation", f"patient={patient}&code={code}", view) == apart, (patient, code)
            assert store.found("Observation", f"patient:Patient={pid}&code={code}", view) == apart, (pid, code)


def test_the_combined_rows_follow_each_version_of_the_resource(store):
    assert store.found("Observation", f"patient=p1&code={LOINC}|8867-4") == {"one-code", "two-codes", "new"}
    assert store.found("Observation", f"patient=p3&code={LOINC}|8867-4") == {"moved"}
    assert store.found("Observation", "patient=p2&code=8867-4") == {"other-patient", "recoded"}
    assert store.found("Observation", "patient=p2&code=|hr") == {"recoded"}
    assert store.found("Observation", f"patient=p2&code={SNOMED}|364075005") == set()
    # The baseline itself is as it was loaded.
    assert store.found("Observation", f"patient=p1&code={LOINC}|8867-4", BASELINE) == {
        "one-code",
        "two-codes",
        "moved",
        "deleted",
    }
    assert store.found("Observation", f"patient=p2&code={SNOMED}|364075005", BASELINE) == {"recoded"}


def test_other_clauses_sort_and_paging_apply_on_top(store):
    store.put(
        {**_obs("dated", "Patient/p1", HR), "status": "amended", "effectiveDateTime": "2030-01-01"},
    )
    query = f"patient=p1&code={LOINC}|8867-4"
    assert store.found("Observation", f"{query}&status=amended") == {"dated"}
    assert store.ids("Observation", f"{query}&_sort=-date&_count=1") == ["dated"]
    first = store.search("Observation", f"{query}&_count=2")
    assert len(first.matches) == 2 and first.next_cursor is not None
    rest = store.search("Observation", f"{query}&_count=2&_cursor={first.next_cursor.encode()}")
    assert {m.id for m in first.matches} | {m.id for m in rest.matches} == {"one-code", "two-codes", "new", "dated"}


def test_only_searches_the_combined_rows_can_answer_use_them(store):
    """One plain value of each: several codes, a system alone, ``:text``, ``:not`` and ``:missing`` match the two
    parameters apart (and still right)."""
    statements: list[str] = []

    def grab(_conn, _cursor, statement, *_rest) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    def uses_combo(query: str) -> bool:
        statements.clear()
        event.listen(store.db.engine, "before_cursor_execute", grab)
        try:
            store.search("Observation", query)
        finally:
            event.remove(store.db.engine, "before_cursor_execute", grab)
        return any("sp_combo" in sql for sql in statements)

    assert uses_combo(f"patient=p1&code={LOINC}|8867-4")
    assert uses_combo("patient=Patient/p1&code=8867-4&status=final")
    for query in (
        f"patient=p1&code={LOINC}|8867-4,{SNOMED}|364075005",
        f"patient=p1,p2&code={LOINC}|8867-4",
        f"patient=p1&code={LOINC}|",
        "patient=p1&code:text=heart",
        f"patient=p1&code:not={LOINC}|8867-4",
        "patient=p1&code:missing=false",
        "subject=Patient/p1&code=8867-4",
    ):
        assert not uses_combo(query), query
    assert store.found("Observation", f"patient=p1&code={LOINC}|8867-4,{SNOMED}|364075005") == {
        "one-code",
        "two-codes",
        "new",
    }
    assert store.found("Observation", "patient=p1&code:text=heart") == {"text-only"}
    assert store.found("Observation", f"patient=p1&code:not={LOINC}|8867-4") == {"no-system", "text-only"}
