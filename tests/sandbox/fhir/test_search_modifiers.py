"""Search modifiers: :exact :contains :missing :not :text :identifier :above :below and reference :[Type]."""

from __future__ import annotations

import pytest

from sandbox.fhir.outcome import FhirError
from tests.sandbox.fhir.searching import Store, observation, patient

LOINC = "http://loinc.org"


@pytest.fixture
def store(db) -> Store:
    return Store(db)


def test_exact_is_whole_string_with_case_and_accents(store):
    store.put_all(
        patient("a", name=[{"family": "Müller"}]),
        patient("b", name=[{"family": "Muller"}]),
        patient("c", name=[{"family": "Müllerson"}]),
    )
    assert store.found("Patient", "family:exact=Müller") == {"a"}
    assert store.found("Patient", "family:exact=müller") == set()
    assert store.found("Patient", "family=müller") == {"a", "b", "c"}


def test_contains_matches_anywhere_in_the_string(store):
    store.put_all(patient("a", name=[{"family": "Severine"}]), patient("b", name=[{"family": "Evelyn"}]))
    assert store.found("Patient", "family:contains=eve") == {"a", "b"}
    assert store.found("Patient", "family:contains=VER") == {"a"}
    assert store.found("Patient", "family:contains=100%") == set()  # LIKE wildcards are literal


def test_missing_on_each_kind_of_parameter(store):
    store.put_all(
        patient("full", birthDate="1990-01-01", gender="male", name=[{"family": "X"}], generalPractitioner=[
            {"reference": "Practitioner/d"}
        ]),
        patient("bare"),
    )  # fmt: skip
    for param in ("birthdate", "gender", "family", "general-practitioner"):
        assert store.found("Patient", f"{param}:missing=true") == {"bare"}, param
        assert store.found("Patient", f"{param}:missing=false") == {"full"}, param


def test_not_excludes_matching_codes_and_keeps_resources_without_the_element(store):
    store.put_all(
        patient("m", gender="male"),
        patient("f", gender="female"),
        patient("none"),
    )
    assert store.found("Patient", "gender:not=male") == {"f", "none"}
    assert store.found("Patient", "gender:not=male,female") == {"none"}


def test_text_searches_display_and_text_of_codes(store):
    store.put_all(
        observation("hr", code={"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}]}),
        observation("bp", code={"text": "Blood pressure panel"}),
    )
    assert store.found("Observation", "code:text=heart") == {"hr"}
    assert store.found("Observation", "code:text=blood pressure") == {"bp"}
    assert store.found("Observation", "code:text=rate") == set()


def test_text_finds_the_concepts_text_whether_or_not_a_display_repeats_it(store):
    # The concept's text gets an index row of its own only when no coding's display already says it.
    store.put_all(
        observation("same", code={"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}],
                                  "text": "Heart rate"}),
        observation("other", code={"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}],
                                   "text": "Pulse"}),
        observation("undisplayed", code={"coding": [{"system": LOINC, "code": "8867-4"}], "text": "Pulse rate"}),
    )  # fmt: skip
    assert store.found("Observation", "code:text=heart") == {"same", "other"}
    assert store.found("Observation", "code:text=pulse") == {"other", "undisplayed"}
    assert store.found("Observation", "code:text=pulse rate") == {"undisplayed"}
    assert store.found("Observation", "code=8867-4") == {"same", "other", "undisplayed"}
    assert store.found("Observation", "code:not=8867-4") == set()


def test_identifier_modifier_on_references(store):
    store.put_all(observation("o", subject={"identifier": {"system": "urn:mrn", "value": "7"}}))
    assert store.found("Observation", "subject:identifier=urn:mrn|7") == {"o"}
    assert store.found("Observation", "subject:identifier=urn:mrn|8") == set()


def test_type_modifier_on_references(store):
    store.put_all(
        observation("pat", subject={"reference": "Patient/1"}),
        observation("grp", subject={"reference": "Group/1"}),
    )
    assert store.found("Observation", "subject:Patient=1") == {"pat"}
    assert store.found("Observation", "subject:Group=1") == {"grp"}


def test_uri_above_and_below(store):
    store.put_all(
        {"resourceType": "ValueSet", "id": "root", "status": "active", "url": "http://acme.org/fhir"},
        {"resourceType": "ValueSet", "id": "mid", "status": "active", "url": "http://acme.org/fhir/ValueSet"},
        {"resourceType": "ValueSet", "id": "leaf", "status": "active", "url": "http://acme.org/fhir/ValueSet/a"},
        {"resourceType": "ValueSet", "id": "other", "status": "active", "url": "http://other.org/fhir"},
    )
    assert store.found("ValueSet", "url:below=http://acme.org/fhir/ValueSet") == {"mid", "leaf"}
    assert store.found("ValueSet", "url:above=http://acme.org/fhir/ValueSet/a") == {"root", "mid", "leaf"}


@pytest.mark.parametrize(
    "query",
    [
        "gender:missing=maybe",
        "gender:exact=male",  # :exact is for strings
        "family:not=x",  # :not is for tokens
        "birthdate:contains=1990",
        "general-practitioner:Observation=1",  # not a type this reference can point at
    ],
)
def test_invalid_modifiers_are_400(store, query):
    with pytest.raises(FhirError) as caught:
        store.search("Patient", query)
    assert caught.value.status == 400


def test_terminology_modifiers_are_reported_as_unsupported_and_ignored(store):
    store.put_all(patient("a", gender="male"))
    result = store.search("Patient", "gender:in=http://hl7.org/fhir/ValueSet/administrative-gender")
    assert [m.id for m in result.matches] == ["a"]
    assert result.issues[0].code == "not-supported"
    with pytest.raises(FhirError) as caught:
        store.search("Patient", "gender:in=http://hl7.org/fhir/ValueSet/administrative-gender", strict=True)
    assert caught.value.status == 400
