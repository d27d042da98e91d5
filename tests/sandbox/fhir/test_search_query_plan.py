"""The patient-scoped search keeps the shape that makes it fast on 100k resources.

``Observation?patient=X&code=Y&_sort=-date&_count=10`` must seek the patient's
rows for that code in ``sp_combo``; where those cannot answer (``code=a,b``, a
system alone), start from the patient's references and check the code per
candidate with one seek on a covering index; never list every Observation with
that (common) code nor scan the resources table.  Asserted on SQLite's EXPLAIN QUERY PLAN, which
is deterministic without statistics; PostgreSQL's plan depends on its statistics
(a tiny test table is always read whole), so it is checked on a loaded store.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import event

from sandbox.store.database import Database
from tests.sandbox.fhir.searching import Store, observation


@pytest.fixture
def store(tmp_path) -> Store:
    db = Database(f"sqlite:///{tmp_path / 'plan.db'}")
    db.create_schema()
    return Store(db)


def _plans(store: Store, rtype: str, query: str) -> list[str]:
    statements: list[tuple[str, object]] = []

    def grab(_conn, _cursor, statement, parameters, _context, _many) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    event.listen(store.db.engine, "before_cursor_execute", grab)
    try:
        store.search(rtype, query)
    finally:
        event.remove(store.db.engine, "before_cursor_execute", grab)
    with store.db.read() as conn:
        return [
            "\n".join(row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params).all())
            for sql, params in statements
        ]


def test_patient_scoped_search_seeks_the_patient_and_code_together(store):
    """One seek on the (patient, code) rows finds the matches: the chart's other Observations are never read,
    so the search costs the same on a chart of 80 Observations as on one of 8."""
    code = {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}
    store.put(observation("o1", subject={"reference": "Patient/p1"}, code=code, effectiveDateTime="2024-01-01"))
    [plan] = _plans(store, "Observation", "patient=p1&code=http://loinc.org|8867-4&_sort=-date&_count=10")
    assert re.search(
        r"SEARCH sp_combo(_\d+)? USING COVERING INDEX ix_sp_combo_value \(layer_id=\? AND "
        r"resource_type=\? AND target_id=\? AND code=\?\)",
        plan,
    )
    assert "sp_reference" not in plan and "sp_token" not in plan
    assert "SCAN resources" not in plan
    assert "SCAN sp_" not in plan


def test_a_patient_scoped_search_the_combined_rows_cannot_answer_drives_by_the_patient_and_probes(store):
    """``code:text`` (or several codes, or a system alone) has no combined rows to seek: the patient's references
    drive, and the code is probed on each of them with one seek on a covering index, before any resource row is
    read (the probe's subquery comes right after the references' search)."""
    code = {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]}
    store.put(observation("o1", subject={"reference": "Patient/p1"}, code=code, effectiveDateTime="2024-01-01"))
    [plan] = _plans(store, "Observation", "patient=p1&code=http://loinc.org|&_sort=-date&_count=10")
    assert re.search(r"SEARCH sp_reference_\d+ USING COVERING INDEX ix_sp_reference_value", plan)
    assert re.search(r"ix_sp_reference_value .*\nCORRELATED LIST SUBQUERY \d+\nSEARCH sp_token ", plan)
    assert "SEARCH sp_token USING COVERING INDEX ix_sp_token_value" in plan
    assert "sp_combo" not in plan
    assert "SCAN resources" not in plan
    assert "SCAN sp_" not in plan


def test_probes_on_the_driving_table_itself_read_their_own_rows(store):
    """``code=a&category=b``: the code drives, and the category is probed in the same index table (sp_token),
    whose rows of the probe must not be confused with the driving ones."""
    vital = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]
    }
    lab = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}
    hr = {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}
    store.put(observation("vital", subject={"reference": "Patient/p1"}, code=hr, category=[vital]))
    store.put(observation("lab", subject={"reference": "Patient/p1"}, code=hr, category=[lab]))
    assert store.ids("Observation", "code=8867-4&category=vital-signs") == ["vital"]
    assert store.ids("Observation", "patient=p1&code=8867-4&category=laboratory") == ["lab"]
    assert sorted(store.ids("Observation", "patient=p1&code=8867-4&category=laboratory,vital-signs")) == [
        "lab",
        "vital",
    ]
    assert store.ids("Observation", "patient=p2&code=8867-4&category=laboratory") == []


def test_each_value_of_a_probed_clause_gets_its_own_seek(store):
    """``code=a,b`` under a patient: each code is one seek on the whole index, never a read of every code."""
    loinc = "http://loinc.org"
    for rid, code in (("spo2", "59408-5"), ("sat", "2708-6"), ("hr", "8867-4")):
        coded = {"coding": [{"system": loinc, "code": code}]}
        store.put(observation(rid, subject={"reference": "Patient/p1"}, code=coded, effectiveDateTime="2024-01-01"))
    query = f"patient=p1&code={loinc}|59408-5,{loinc}|2708-6"
    assert sorted(store.ids("Observation", query)) == ["sat", "spo2"]
    [plan] = _plans(store, "Observation", query)
    seeks = [line for line in plan.split("\n") if "ix_sp_token_value" in line]
    assert len(seeks) == 2
    assert all("code=? AND resource_id=?" in line for line in seeks)


def test_a_code_without_a_system_is_probed_by_code_and_resource_too(store):
    """``category=vital-signs`` under a patient: the index holds the code, then the resource, so a probe without a
    system is one seek as well, never a read of every row with that (very common) code."""
    vital = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]
    }
    store.put(observation("o1", subject={"reference": "Patient/p1"}, category=[vital]))
    store.put(observation("o2", subject={"reference": "Patient/p2"}, category=[vital]))
    assert store.ids("Observation", "patient=p1&category=vital-signs") == ["o1"]
    [plan] = _plans(store, "Observation", "patient=p1&category=vital-signs")
    [seek] = [line for line in plan.split("\n") if "SEARCH sp_token " in line]
    assert "USING COVERING INDEX ix_sp_token_value" in seek
    assert "code=? AND resource_id=?" in seek


def test_a_quantity_is_found_by_its_code_and_value_through_the_value_index(store):
    """The quantity index leads with the unit's code and the value: ``value-quantity=gt100|system|code`` seeks to
    the code and reads a range of values, rather than every value of the parameter."""
    for rid, value in (("low", 60), ("high", 120)):
        quantity = {"value": value, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}
        store.put(observation(rid, subject={"reference": "Patient/p1"}, valueQuantity=quantity))
    query = "value-quantity=gt100|http://unitsofmeasure.org|/min"
    assert store.ids("Observation", query) == ["high"]
    assert store.ids("Observation", "value-quantity=lt100|http://unitsofmeasure.org|/min") == ["low"]
    [plan] = _plans(store, "Observation", query)
    assert re.search(
        r"SEARCH sp_quantity USING (COVERING )?INDEX ix_sp_quantity_value \(layer_id=\? AND "
        r"resource_type=\? AND code=\?",
        plan,
    )


def test_next_page_keeps_the_shape(store):
    code = {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}
    for i in range(3):
        store.put(observation(f"o{i}", subject={"reference": "Patient/p1"}, code=code, effectiveDateTime="2024-01-01"))
    first = store.search("Observation", "patient=p1&code=8867-4&_sort=-date&_count=1")
    assert first.next_cursor is not None
    plans = _plans(
        store, "Observation", f"patient=p1&code=8867-4&_sort=-date&_count=1&_cursor={first.next_cursor.encode()}"
    )
    for plan in plans:
        assert "SCAN resources" not in plan and "SCAN sp_" not in plan


def test_searches_of_one_shape_share_a_statement_and_bind_their_own_values(store):
    """The second search of a shape reuses the first one's SQL text; only the bound values differ."""
    code = {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}
    other = {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]}
    store.put(observation("a", subject={"reference": "Patient/p1"}, code=code, effectiveDateTime="2024-01-01"))
    store.put(observation("b", subject={"reference": "Patient/p2"}, code=other, effectiveDateTime="2024-01-02"))
    statements: list[tuple[str, object]] = []

    def grab(_conn, _cursor, statement, parameters, _context, _many) -> None:  # type: ignore[no-untyped-def]
        statements.append((statement, parameters))

    event.listen(store.db.engine, "before_cursor_execute", grab)
    try:
        first = store.ids("Observation", "patient=p1&code=http://loinc.org|8867-4&_sort=-date")
        second = store.ids("Observation", "patient=p2&code=http://loinc.org|8310-5&_sort=-date")
        neither = store.ids("Observation", "patient=p1&code=http://loinc.org|8310-5&_sort=-date")
    finally:
        event.remove(store.db.engine, "before_cursor_execute", grab)
    assert (first, second, neither) == (["a"], ["b"], [])
    selects = [(sql, params) for sql, params in statements if sql.lstrip().upper().startswith("SELECT")]
    assert len({sql for sql, _ in selects}) == 1
    assert "8867-4" not in selects[0][0] and "p1" not in selects[0][0]  # values are bound, never in the SQL text
    assert len({repr(params) for _, params in selects}) == 3
