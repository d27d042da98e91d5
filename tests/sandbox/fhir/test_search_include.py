"""_include and _revinclude: by parameter, by target type, wildcard, and :iterate."""

from __future__ import annotations

import pytest

from tests.sandbox.fhir.searching import Store, observation, patient


@pytest.fixture
def store(db) -> Store:
    s = Store(db)
    s.put_all(
        {"resourceType": "Organization", "id": "parent-org", "name": "Parent"},
        {"resourceType": "Organization", "id": "org", "name": "Acme",
         "partOf": {"reference": "Organization/parent-org"}},
        {"resourceType": "Practitioner", "id": "doc", "name": [{"family": "House"}]},
        patient("eva", managingOrganization={"reference": "Organization/org"},
                generalPractitioner=[{"reference": "Practitioner/doc"}]),
        observation("o1", subject={"reference": "Patient/eva"}, performer=[{"reference": "Practitioner/doc"}]),
        observation("o2", subject={"reference": "Patient/eva"}),
        {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/eva"}},
    )  # fmt: skip
    return s


def _included(store: Store, rtype: str, query: str) -> set[str]:
    result = store.search(rtype, query)
    return {f"{s.resource_type}/{s.id}" for s in result.included}


def test_include_follows_the_named_reference(store):
    assert _included(store, "Observation", "_id=o1&_include=Observation:patient") == {"Patient/eva"}
    assert _included(store, "Observation", "_id=o1&_include=Observation:performer") == {"Practitioner/doc"}


def test_include_each_target_once(store):
    result = store.search("Observation", "_include=Observation:subject")
    assert [s.id for s in result.included] == ["eva"]
    assert {m.id for m in result.matches} == {"o1", "o2"}


def test_include_with_target_type(store):
    assert _included(store, "Patient", "_include=Patient:general-practitioner:Practitioner") == {"Practitioner/doc"}
    assert _included(store, "Patient", "_include=Patient:general-practitioner:Organization") == set()


def test_include_wildcard(store):
    assert _included(store, "Patient", "_include=*") == {"Organization/org", "Practitioner/doc"}
    assert _included(store, "Observation", "_id=o1&_include=Observation:*") == {"Patient/eva", "Practitioner/doc"}


def test_revinclude(store):
    assert _included(store, "Patient", "_revinclude=Observation:subject") == {"Observation/o1", "Observation/o2"}
    assert _included(store, "Patient", "_revinclude=Condition:patient") == {"Condition/c1"}
    assert _included(store, "Patient", "_revinclude=*") == {"Observation/o1", "Observation/o2", "Condition/c1"}


def test_iterate_follows_references_of_included_resources(store):
    query = "_id=o2&_include=Observation:patient&_include:iterate=Patient:organization"
    assert _included(store, "Observation", query) == {"Patient/eva", "Organization/org"}
    deeper = query + "&_include:iterate=Organization:partof"
    assert _included(store, "Observation", deeper) == {"Patient/eva", "Organization/org", "Organization/parent-org"}
    # Without :iterate, an include applies to the matches only.
    assert _included(store, "Observation", "_id=o2&_include=Observation:patient&_include=Patient:organization") == {
        "Patient/eva"
    }


def test_revinclude_iterate(store):
    query = "_id=org&_revinclude=Patient:organization&_revinclude:iterate=Observation:patient"
    assert _included(store, "Organization", query) == {"Patient/eva", "Observation/o1", "Observation/o2"}


def test_deleted_resources_are_not_included(store):
    store.delete("Practitioner", "doc")
    store.delete("Observation", "o2")
    assert _included(store, "Observation", "_id=o1&_include=Observation:performer") == set()
    assert _included(store, "Patient", "_revinclude=Observation:subject") == {"Observation/o1"}


def test_include_follows_the_current_version_of_the_source(store):
    store.put(observation("o1", subject={"reference": "Patient/eva"}))  # performer removed
    assert _included(store, "Observation", "_id=o1&_include=Observation:performer") == set()


def test_unknown_include_is_reported(store):
    result = store.search("Patient", "_include=Patient:nonsense")
    assert result.issues and "nonsense" in result.issues[0].diagnostics
