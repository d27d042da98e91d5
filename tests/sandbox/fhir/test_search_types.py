"""Each search parameter type matches the way FHIR R4 says it does."""

from __future__ import annotations

import pytest

from tests.sandbox.fhir.searching import Store, observation, patient

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


@pytest.fixture
def store(db) -> Store:
    return Store(db)


def test_string_matches_start_of_any_name_part_ignoring_case_and_accents(store):
    store.put_all(
        patient("mueller", name=[{"family": "Müller", "given": ["Eva", "Maria"]}]),
        patient("miller", name=[{"family": "Miller", "given": ["Evan"]}]),
        patient("smith", name=[{"family": "Smith", "given": ["John"]}], address=[{"city": "Eveleth"}]),
    )
    assert store.found("Patient", "name=muller") == {"mueller"}
    assert store.found("Patient", "name=MÜL") == {"mueller"}
    assert store.found("Patient", "name=eva") == {"mueller", "miller"}
    assert store.found("Patient", "given=mar") == {"mueller"}
    assert store.found("Patient", "address-city=eve") == {"smith"}
    assert store.found("Patient", "name=ller") == set()  # a string search is a prefix search


def test_string_values_of_one_parameter_are_ored_and_repeated_parameters_anded(store):
    store.put_all(
        patient("a", name=[{"family": "Alpha", "given": ["Zed"]}]),
        patient("b", name=[{"family": "Beta", "given": ["Zed"]}]),
        patient("c", name=[{"family": "Gamma", "given": ["Yan"]}]),
    )
    assert store.found("Patient", "family=alpha,beta") == {"a", "b"}
    assert store.found("Patient", "family=alpha,beta&given=zed") == {"a", "b"}
    assert store.found("Patient", "family=alpha,gamma&given=yan") == {"c"}
    assert store.found("Patient", "family=alpha&family=beta") == set()


def test_token_matches_code_system_and_both(store):
    store.put_all(
        observation("loinc", code={"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}]}),
        observation("local", code={"coding": [{"system": "http://local", "code": "8867-4"}]}),
        observation("nosys", code={"coding": [{"code": "8867-4"}]}),
    )
    assert store.found("Observation", "code=8867-4") == {"loinc", "local", "nosys"}
    assert store.found("Observation", f"code={LOINC}|8867-4") == {"loinc"}
    assert store.found("Observation", "code=|8867-4") == {"nosys"}
    assert store.found("Observation", f"code={LOINC}|") == {"loinc"}
    assert store.found("Observation", f"code={LOINC}|0000-0") == set()


def test_token_on_identifier_boolean_and_code(store):
    store.put_all(
        patient("a", identifier=[{"system": "urn:mrn", "value": "123"}], active=True, gender="female"),
        patient("b", identifier=[{"system": "urn:other", "value": "123"}], active=False, gender="male"),
    )
    assert store.found("Patient", "identifier=urn:mrn|123") == {"a"}
    assert store.found("Patient", "identifier=123") == {"a", "b"}
    assert store.found("Patient", "active=true") == {"a"}
    assert store.found("Patient", "active=false") == {"b"}
    assert store.found("Patient", "gender=male") == {"b"}


def test_token_on_contact_point(store):
    store.put_all(
        patient("a", telecom=[{"system": "email", "value": "a@example.org"}, {"system": "phone", "value": "555"}]),
        patient("b", telecom=[{"system": "phone", "value": "a@example.org"}]),
    )
    assert store.found("Patient", "email=a@example.org") == {"a"}
    assert store.found("Patient", "phone=555") == {"a"}
    assert store.found("Patient", "telecom=phone|a@example.org") == {"b"}


def test_reference_by_type_and_id_by_id_and_by_absolute_url(store):
    store.put_all(
        patient("p1"),
        observation("o1", subject={"reference": "Patient/p1"}),
        observation("o2", subject={"reference": "Group/p1"}),
        observation("o3", subject={"reference": "http://other.example/fhir/Patient/p9"}),
    )
    assert store.found("Observation", "subject=Patient/p1") == {"o1"}
    assert store.found("Observation", "subject=p1") == {"o1", "o2"}  # subject may refer to several types
    assert store.found("Observation", "patient=p1") == {"o1"}  # patient refers to Patient only
    assert store.found("Observation", "subject:Group=p1") == {"o2"}
    assert store.found("Observation", "subject=http://other.example/fhir/Patient/p9") == {"o3"}


def test_canonical_reference_matches_with_or_without_its_version(store):
    store.put_all(
        {"resourceType": "QuestionnaireResponse", "id": "r1", "status": "completed",
         "questionnaire": "http://example.org/Questionnaire/phq2|1.0"},
        {"resourceType": "QuestionnaireResponse", "id": "r2", "status": "completed",
         "questionnaire": "http://example.org/Questionnaire/gad7"},
    )  # fmt: skip
    assert store.found("QuestionnaireResponse", "questionnaire=http://example.org/Questionnaire/phq2") == {"r1"}
    assert store.found("QuestionnaireResponse", "questionnaire=http://example.org/Questionnaire/phq2|1.0") == {"r1"}


def test_reference_identifier_modifier(store):
    store.put_all(
        observation("o1", subject={"identifier": {"system": "urn:mrn", "value": "42"}}),
        observation("o2", subject={"identifier": {"system": "urn:other", "value": "42"}}),
    )
    assert store.found("Observation", "subject:identifier=urn:mrn|42") == {"o1"}
    assert store.found("Observation", "subject:identifier=42") == {"o1", "o2"}


def test_date_precision_is_a_range(store):
    store.put_all(
        patient("day", birthDate="1980-05-02"),
        patient("month", birthDate="1980-05"),
        patient("year", birthDate="1980"),
        patient("other", birthDate="1981-01-01"),
    )
    assert store.found("Patient", "birthdate=1980") == {"day", "month", "year"}
    assert store.found("Patient", "birthdate=1980-05") == {"day", "month"}
    assert store.found("Patient", "birthdate=1980-05-02") == {"day"}


def test_datetime_with_time_zone_is_compared_in_utc(store):
    store.put_all(
        observation("late", effectiveDateTime="2020-01-01T23:30:00-05:00"),  # 2020-01-02T04:30Z
        observation("period", effectivePeriod={"start": "2020-01-01T08:00:00Z", "end": "2020-01-01T09:00:00Z"}),
    )
    assert store.found("Observation", "date=2020-01-02") == {"late"}
    assert store.found("Observation", "date=2020-01-01") == {"period"}
    assert store.found("Observation", "date=2020-01-01T08:30:00Z") == set()  # eq: the period is not inside a second


def test_number_uses_the_precision_of_the_value(store):
    store.put_all(
        {"resourceType": "RiskAssessment", "id": "r1", "status": "final", "subject": {"reference": "Patient/x"},
         "prediction": [{"probabilityDecimal": 0.25}]},
        {"resourceType": "RiskAssessment", "id": "r2", "status": "final", "subject": {"reference": "Patient/x"},
         "prediction": [{"probabilityDecimal": 0.3}]},
    )  # fmt: skip
    assert store.found("RiskAssessment", "probability=0.25") == {"r1"}
    assert store.found("RiskAssessment", "probability=0.30") == {"r2"}  # [0.295, 0.305)
    assert store.found("RiskAssessment", "probability=0.3") == {"r1", "r2"}  # [0.25, 0.35)
    assert store.found("RiskAssessment", "probability=0.2") == set()


def test_quantity_with_and_without_units(store):
    store.put_all(
        observation("kg", valueQuantity={"value": 72.5, "unit": "kg", "system": UCUM, "code": "kg"}),
        observation("lb", valueQuantity={"value": 72.5, "unit": "lb", "system": UCUM, "code": "[lb_av]"}),
        observation("hr", valueQuantity={"value": 60, "unit": "beats/min", "system": UCUM, "code": "/min"}),
    )
    assert store.found("Observation", "value-quantity=72.5") == {"kg", "lb"}
    assert store.found("Observation", f"value-quantity=72.5|{UCUM}|kg") == {"kg"}
    assert store.found("Observation", "value-quantity=72.5||kg") == {"kg"}
    assert store.found("Observation", "value-quantity=60||beats/min") == {"hr"}  # the human unit too
    assert store.found("Observation", f"value-quantity=gt70|{UCUM}|kg") == {"kg"}
    assert store.found("Observation", "value-quantity=lt61") == {"hr"}


def test_uri_matches_whole_value(store):
    store.put_all(
        {"resourceType": "ValueSet", "id": "v1", "status": "active", "url": "http://acme.org/fhir/ValueSet/a"},
        {"resourceType": "ValueSet", "id": "v2", "status": "active", "url": "http://acme.org/fhir/ValueSet/a/b"},
    )
    assert store.found("ValueSet", "url=http://acme.org/fhir/ValueSet/a") == {"v1"}
    assert store.found("ValueSet", "url=http://acme.org/fhir") == set()


def test_composite_ties_its_components_to_one_element(store):
    bp = {"coding": [{"system": LOINC, "code": "85354-9"}]}
    systolic = {"coding": [{"system": LOINC, "code": "8480-6"}]}
    diastolic = {"coding": [{"system": LOINC, "code": "8462-4"}]}

    def component(code: dict, value: float) -> dict:
        return {"code": code, "valueQuantity": {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}}

    store.put_all(
        observation("high", code=bp, component=[component(systolic, 150), component(diastolic, 95)]),
        observation("normal", code=bp, component=[component(systolic, 118), component(diastolic, 150)]),
        observation("hr", code={"coding": [{"system": LOINC, "code": "8867-4"}]}, valueQuantity={"value": 150}),
    )
    # "normal" has a 150 and a systolic component, but not in the same component.
    assert store.found("Observation", f"component-code-value-quantity={LOINC}|8480-6$gt140") == {"high"}
    assert store.found("Observation", f"component-code-value-quantity={LOINC}|8462-4$gt140") == {"normal"}
    assert store.found("Observation", f"code-value-quantity={LOINC}|8867-4$150") == {"hr"}
    assert store.found("Observation", f"combo-code-value-quantity={LOINC}|8480-6$ge150,{LOINC}|8867-4$ge150") == {
        "high",
        "hr",
    }
    assert store.found("Observation", "code-value-quantity:missing=false") == {"hr"}
    assert store.found("Observation", "code-value-quantity:missing=true") == {"high", "normal"}


def test_common_meta_parameters_tag_profile_security_source(store):
    meta = {
        "tag": [{"system": "http://example.org/tags", "code": "training"}],
        "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
        "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"],
        "source": "http://ehr.example/source#abc",
    }
    store.put_all(patient("tagged", meta=meta), patient("plain"))
    assert store.found("Patient", "_tag=http://example.org/tags|training") == {"tagged"}
    assert store.found("Patient", "_tag=training") == {"tagged"}
    assert store.found("Patient", "_security=R") == {"tagged"}
    assert store.found("Patient", "_profile=http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient") == {
        "tagged"
    }
    assert store.found("Patient", "_source=http://ehr.example/source#abc") == {"tagged"}
    assert store.found("Patient", "_tag:missing=true") == {"plain"}


def test_id_and_last_updated(store):
    store.put_all(patient("a"), patient("b"), patient("c"))
    assert store.found("Patient", "_id=a,c") == {"a", "c"}
    assert store.found("Patient", "_id=a,c&_id=c") == {"c"}
    assert store.found("Patient", "_lastUpdated=gt2000-01-01") == {"a", "b", "c"}
    assert store.found("Patient", "_lastUpdated=lt2000-01-01") == set()
    # An instant is precise to the millisecond, and two writes may share one: equality finds exactly those.
    instants = {rid: store.search("Patient", f"_id={rid}").matches[0].instant for rid in "abc"}
    stamp = instants["b"]
    assert store.found("Patient", f"_lastUpdated={stamp}") == {rid for rid, at in instants.items() if at == stamp}


def test_insurance_plan_name_whose_r4_expression_omits_the_type_is_indexed(client):
    """R4 writes InsurancePlan-name as ``name | alias``; both branches must still be searchable."""
    plan = {"resourceType": "InsurancePlan", "name": "Gold Plus", "alias": ["GP Family"]}
    assert client.post("/fhir/InsurancePlan", json=plan).status_code == 201
    assert client.get("/fhir/InsurancePlan?name=gold").json()["total"] == 1
    assert client.get("/fhir/InsurancePlan?name=gp").json()["total"] == 1
