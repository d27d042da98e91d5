"""Chained parameters (following references forward) and _has (following them backwards)."""

from __future__ import annotations

import pytest

from sandbox.fhir.outcome import FhirError
from tests.sandbox.fhir.searching import Store, observation, patient


@pytest.fixture
def store(db) -> Store:
    s = Store(db)
    s.put_all(
        {"resourceType": "Organization", "id": "acme", "name": "Acme Health"},
        {"resourceType": "Organization", "id": "zen", "name": "Zenith Clinic"},
        patient("eva", name=[{"family": "Eva"}], managingOrganization={"reference": "Organization/acme"}),
        patient("bob", name=[{"family": "Bob"}], managingOrganization={"reference": "Organization/zen"}),
        {"resourceType": "Encounter", "id": "enc-eva", "status": "finished", "class": {"code": "AMB"},
         "subject": {"reference": "Patient/eva"}},
        observation("hr-eva", subject={"reference": "Patient/eva"}, encounter={"reference": "Encounter/enc-eva"},
                    code={"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}),
        observation("hr-bob", subject={"reference": "Patient/bob"},
                    code={"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}),
        observation("wt-bob", subject={"reference": "Patient/bob"},
                    code={"coding": [{"system": "http://loinc.org", "code": "29463-7"}]}),
    )  # fmt: skip
    return s


def test_one_level_chain(store):
    assert store.found("Observation", "subject:Patient.name=eva") == {"hr-eva"}
    assert store.found("Observation", "patient.name=bob") == {"hr-bob", "wt-bob"}  # patient has one target type


def test_two_level_chain(store):
    assert store.found("Observation", "subject:Patient.organization.name=acme") == {"hr-eva"}
    assert store.found("Observation", "encounter.subject:Patient.organization.name=acme") == {"hr-eva"}
    assert store.found("Observation", "subject:Patient.organization.name=zenith&code=29463-7") == {"wt-bob"}


def test_chain_sees_the_current_version_of_the_target(store):
    store.put(patient("eva", name=[{"family": "Renamed"}], managingOrganization={"reference": "Organization/zen"}))
    assert store.found("Observation", "subject:Patient.name=eva") == set()
    assert store.found("Observation", "subject:Patient.organization.name=zenith") == {"hr-eva", "hr-bob", "wt-bob"}
    store.delete("Organization", "zen")
    assert store.found("Observation", "subject:Patient.organization.name=zenith") == set()


def test_chain_without_a_type_follows_every_type_that_has_the_parameter(store):
    store.put_all(
        {"resourceType": "Location", "id": "ward", "name": "Eva ward"},
        observation("at-ward", subject={"reference": "Location/ward"}),
        {"resourceType": "EpisodeOfCare", "id": "eoc", "status": "finished", "patient": {"reference": "Patient/bob"}},
        observation("in-episode", encounter={"reference": "EpisodeOfCare/eoc"}),
    )
    # subject may be a Patient, Group, Device or Location; Patient and Location have a name.
    assert store.found("Observation", "subject.name=eva") == {"hr-eva", "at-ward"}
    assert store.found("Observation", "subject:Location.name=eva") == {"at-ward"}
    # encounter may be an Encounter or an EpisodeOfCare; both have a status.
    assert store.found("Observation", "encounter.status=finished") == {"hr-eva", "in-episode"}
    assert store.found("Observation", "encounter:Encounter.status=finished") == {"hr-eva"}


def test_chain_to_a_type_the_reference_cannot_point_at_is_400(store):
    with pytest.raises(FhirError) as caught:
        store.search("Observation", "subject:Organization.name=acme")
    assert caught.value.status == 400


def test_chain_to_a_parameter_no_target_type_has_is_reported(store):
    result = store.search("Observation", "subject.nonsense=1")
    assert result.issues and "nonsense" in result.issues[0].diagnostics


def test_chain_through_a_non_reference_is_reported(store):
    result = store.search("Observation", "code.name=eva")
    assert result.issues and result.issues[0].code == "not-supported"
    with pytest.raises(FhirError):
        store.search("Observation", "code.name=eva", strict=True)


def test_has_finds_resources_referred_to_by_matching_ones(store):
    assert store.found("Patient", "_has:Observation:patient:code=29463-7") == {"bob"}
    assert store.found("Patient", "_has:Observation:patient:code=8867-4") == {"eva", "bob"}
    assert store.found("Patient", "_has:Observation:subject:code=0000-0") == set()


def test_nested_has(store):
    # Organizations managing a patient who has a heart-rate observation in an encounter.
    assert store.found("Organization", "_has:Patient:organization:_has:Encounter:patient:status=finished") == {"acme"}
    assert store.found("Organization", "_has:Patient:organization:_has:Observation:patient:code=29463-7") == {"zen"}


def test_has_ignores_deleted_sources(store):
    store.delete("Observation", "wt-bob")
    assert store.found("Patient", "_has:Observation:patient:code=29463-7") == set()


def test_has_with_a_chain_inside(store):
    assert store.found("Patient", "_has:Observation:patient:encounter.status=finished") == {"eva"}


@pytest.mark.parametrize(
    "query",
    ["_has:Observation:patient", "_has:Observation", "_has:Observation:patient:code:missing=perhaps"],
)
def test_malformed_has_is_400(store, query):
    with pytest.raises(FhirError) as caught:
        store.search("Patient", query + ("" if "=" in query else "=x"))
    assert caught.value.status == 400


def test_has_through_an_unknown_type_or_parameter_is_reported(store):
    assert store.search("Patient", "_has:Nonsense:patient:code=1").issues
    assert store.search("Patient", "_has:Observation:nonsense:code=1").issues
