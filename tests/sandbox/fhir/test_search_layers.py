"""Search inside a sandbox layered over a baseline.

A sandbox sees its own writes and the baseline's resources it has not
replaced or deleted.  The baseline's index rows stay as they were, so every
kind of match (plain parameters, chains, _has, _include, _revinclude, sort,
paging) must ignore the rows of baseline versions the sandbox has shadowed.
"""

from __future__ import annotations

import pytest
from sqlalchemy import event, insert

from sandbox.store.layers import View
from sandbox.store.sandboxes import reset_sandbox
from sandbox.store.schema import layers
from tests.sandbox.fhir.searching import Store, observation, patient

BASELINE = View("base", ("base",))
SANDBOX = View("trainee", ("trainee", "base"))
OTHER = View("other", ("other", "base"))
HR = {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}
WT = {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]}


@pytest.fixture
def store(db) -> Store:
    with db.write() as conn:
        conn.execute(
            insert(layers),
            [
                {"id": "base", "kind": "baseline", "name": "Baseline", "baseline_id": None, "created_at": "2026"},
                {"id": "trainee", "kind": "sandbox", "name": "Trainee", "baseline_id": "base", "created_at": "2026"},
                {"id": "other", "kind": "sandbox", "name": "Other", "baseline_id": "base", "created_at": "2026"},
            ],
        )
    s = Store(db, SANDBOX)
    for resource in (
        {"resourceType": "Organization", "id": "acme", "name": "Acme"},
        patient("eva", name=[{"family": "Eva"}], managingOrganization={"reference": "Organization/acme"}),
        patient("bob", name=[{"family": "Bob"}]),
        observation("o1", subject={"reference": "Patient/eva"}, code=HR),
        observation("o2", subject={"reference": "Patient/bob"}, code=WT),
    ):
        s.put(resource, BASELINE)
    # The trainee's changes: rename and move Eva, delete Bob, recode o1, point o2 at Eva, add o3.
    s.put({"resourceType": "Organization", "id": "zen", "name": "Zenith"})
    s.put(patient("eva", name=[{"family": "Renamed"}], managingOrganization={"reference": "Organization/zen"}))
    s.delete("Patient", "bob")
    s.put(observation("o1", subject={"reference": "Patient/eva"}, code={"text": "changed"}))
    s.put(observation("o2", subject={"reference": "Patient/eva"}, code=WT))
    s.put(observation("o3", subject={"reference": "Patient/eva"}, code=HR))
    return s


def test_plain_parameters_see_the_sandbox_version_only(store):
    assert store.found("Patient", "name=eva") == set()
    assert store.found("Patient", "name=renamed") == {"eva"}
    assert store.found("Patient", "name=bob") == set()
    assert store.found("Patient", "") == {"eva"}
    assert store.found("Observation", "code=8867-4") == {"o3"}
    assert store.found("Patient", "name=eva", BASELINE) == {"eva"}
    assert store.found("Patient", "", OTHER) == {"eva", "bob"}
    assert store.found("Observation", "code=8867-4", OTHER) == {"o1"}


def test_missing_and_not_see_the_sandbox_version(store):
    assert store.found("Observation", "code:not=8867-4") == {"o1", "o2"}
    assert store.found("Patient", "organization:missing=true") == set()
    assert store.found("Observation", "code:text=changed") == {"o1"}


def test_chains_follow_the_sandbox_versions(store):
    assert store.found("Observation", "patient.name=eva") == set()
    assert store.found("Observation", "patient.name=renamed") == {"o1", "o2", "o3"}
    assert store.found("Observation", "subject:Patient.organization.name=acme") == set()
    assert store.found("Observation", "subject:Patient.organization.name=zenith") == {"o1", "o2", "o3"}
    assert store.found("Observation", "subject:Patient.organization.name=acme", OTHER) == {"o1"}


def test_has_follows_the_sandbox_versions(store):
    assert store.found("Patient", "_has:Observation:patient:code=8867-4") == {"eva"}  # via o3, not o1
    assert store.found("Patient", "_has:Observation:patient:code=29463-7") == {"eva"}  # o2 now points at Eva
    store.delete("Observation", "o3")
    assert store.found("Patient", "_has:Observation:patient:code=8867-4") == set()
    assert store.found("Organization", "_has:Patient:organization:name=eva") == set()
    assert store.found("Organization", "_has:Patient:organization:name=eva", OTHER) == {"acme"}


def test_include_and_revinclude_follow_the_sandbox_versions(store):
    included = store.search("Observation", "_id=o2&_include=Observation:patient").included
    assert [(s.resource_type, s.id) for s in included] == [("Patient", "eva")]
    assert included[0].layer_id == "trainee"
    rev = store.search("Patient", "_id=eva&_revinclude=Observation:patient").included
    assert sorted(s.id for s in rev) == ["o1", "o2", "o3"]
    other = store.search("Patient", "_revinclude=Observation:patient", view=OTHER).included
    assert sorted(s.id for s in other) == ["o1", "o2"]
    assert store.search("Observation", "_id=o2&_include=Observation:patient", view=OTHER).included[0].id == "bob"


def test_sort_and_paging_across_layers(store):
    assert store.ids("Observation", "_sort=-_id") == ["o3", "o2", "o1"]
    store.put(patient("amy", name=[{"family": "Amy"}]))
    assert store.ids("Patient", "_sort=family") == ["amy", "eva"]  # Eva sorts as Renamed
    seen: list[str] = []
    result = store.search("Observation", "_count=1&_sort=code")
    while True:
        seen.extend(m.id for m in result.matches)
        assert result.total == 3
        if not result.next_cursor:
            break
        result = store.search("Observation", f"_count=1&_sort=code&_cursor={result.next_cursor.encode()}")
    assert sorted(seen) == ["o1", "o2", "o3"] and len(seen) == 3


def test_system_search_across_layers(store):
    assert sorted(store.ids(None, "_type=Patient,Organization")) == ["acme", "eva", "zen"]
    assert sorted(store.ids(None, "_type=Patient,Organization", OTHER)) == ["acme", "bob", "eva"]


def test_types_the_sandbox_never_touched_are_read_from_the_baseline_as_they_are(store, db):
    """A sandbox that changed only Patients: Observation searches take the baseline's rows unchecked,
    while chains and _has into Patient still follow the sandbox's versions."""
    with db.write() as conn:
        conn.execute(
            insert(layers).values(id="nurse", kind="sandbox", name="Nurse", baseline_id="base", created_at="2026")
        )
    nurse = View("nurse", ("nurse", "base"))
    store.put(patient("eva", name=[{"family": "Nursed"}]), nurse)
    store.delete("Patient", "bob", nurse)
    assert store.found("Observation", "code=8867-4", nurse) == {"o1"}
    assert store.found("Observation", "subject:Patient.name=nursed", nurse) == {"o1"}
    assert store.found("Observation", "subject:Patient.name=eva", nurse) == set()
    assert store.found("Observation", "subject:Patient.name=bob", nurse) == set()
    assert store.found("Patient", "_has:Observation:subject:code=29463-7", nurse) == set()  # bob is deleted
    assert store.found("Patient", "_has:Observation:subject:code=8867-4", nurse) == {"eva"}
    assert store.found("Observation", "", nurse) == {"o1", "o2"}


def test_a_type_seen_in_the_sandbox_is_not_probed_again_and_a_reset_still_reads_the_baseline(store, db):
    """Probing whether the overlay holds a type costs a round trip; a type found there stays until a reset, so
    the next searches skip the probe, and after a reset the layered search still reads the baseline right."""
    with db.write() as conn:
        conn.execute(
            insert(layers).values(id="probed", kind="sandbox", name="Probed", baseline_id="base", created_at="2026")
        )
    probed = View("probed", ("probed", "base"))
    probes: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().startswith("SELECT EXISTS"):
            probes.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        assert store.found("Observation", "code=8867-4", probed) == {"o1"}
        assert len(probes) == 1  # quiet: the baseline's rows are read as they are
        store.put(observation("o1", subject={"reference": "Patient/eva"}, code=WT), probed)
        assert store.found("Observation", "code=8867-4", probed) == set()
        assert len(probes) == 2  # found there now
        assert store.found("Observation", "code=29463-7", probed) == {"o1", "o2"}
        assert len(probes) == 2  # known to be there: no probe
        with db.write() as conn:
            reset_sandbox(conn, "probed")
        assert store.found("Observation", "code=8867-4", probed) == {"o1"}
        assert store.found("Observation", "code=29463-7", probed) == {"o2"}
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
