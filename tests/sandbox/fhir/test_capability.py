"""The CapabilityStatement: well-formed, complete, and advertising only what works."""

from __future__ import annotations

import pytest
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from sqlalchemy import insert

from sandbox.fhir.capability import r4_types
from sandbox.fhir.resource_types import resource_types
from sandbox.fhir.validation import validate
from sandbox.store.schema import layers

STRICT = {"Prefer": "handling=strict"}
# The types the project's users rely on most; every parameter advertised for them is exercised.
CORE_TYPES = (
    "Patient",
    "Practitioner",
    "Organization",
    "Encounter",
    "Condition",
    "Observation",
    "AllergyIntolerance",
    "MedicationRequest",
    "Immunization",
    "Procedure",
    "DiagnosticReport",
    "DocumentReference",
    "ServiceRequest",
    "Appointment",
)
SAMPLE = {
    "string": "a",
    "token": "http://example.org|a",
    "reference": "Patient/a",
    "date": "ge2020-01-01",
    "number": "gt1",
    "quantity": "le5.4|http://unitsofmeasure.org|mg",
    "uri": "http://example.org/a",
}


@pytest.fixture
def statement(client) -> dict:
    r = client.get("/fhir/metadata")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/fhir+json")
    return r.json()


def _resource(statement: dict, rtype: str) -> dict:
    return next(r for r in statement["rest"][0]["resource"] if r["type"] == rtype)


def test_it_parses_as_an_r4b_capability_statement_and_says_r4(statement):
    CapabilityStatement.model_validate(statement)
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["kind"] == "instance"
    assert set(statement["format"]) == {"json", "application/fhir+json"}  # no XML, no Turtle
    assert statement["patchFormat"] == ["application/json-patch+json"]
    assert statement["implementation"]["url"] == "http://testserver/fhir"


def test_it_passes_the_servers_own_validation_including_r4_required_bindings(statement):
    validate(statement, "CapabilityStatement")


def test_every_accepted_r4_resource_type_is_listed_with_its_interactions(statement):
    listed = {r["type"] for r in statement["rest"][0]["resource"]}
    assert listed == set(resource_types()) & r4_types()
    assert {"Patient", "Observation", "Subscription", "Parameters"} <= listed
    patient = _resource(statement, "Patient")
    assert {i["code"] for i in patient["interaction"]} == {
        "read",
        "vread",
        "update",
        "patch",
        "delete",
        "history-instance",
        "history-type",
        "create",
        "search-type",
    }
    assert patient["versioning"] == "versioned-update" and patient["readHistory"] is True
    assert patient["conditionalCreate"] is True and patient["conditionalUpdate"] is True
    assert patient["conditionalDelete"] == "single" and patient["updateCreate"] is True
    system = {i["code"] for i in statement["rest"][0]["interaction"]}
    assert system == {"transaction", "batch", "history-system", "search-system"}


def test_r4b_only_types_are_named_in_the_documentation_instead(client, statement):
    documentation = statement["rest"][0]["documentation"]
    for rtype in ("Ingredient", "SubscriptionStatus", "MedicinalProductDefinition"):
        assert rtype in documentation
        assert rtype not in {r["type"] for r in statement["rest"][0]["resource"]}
    assert client.get("/fhir/Ingredient").status_code == 200  # accepted all the same


def test_every_advertised_interaction_answers(client, statement):
    """Each interaction code, exercised on Patient: none answers 404 or 405."""
    created = client.post("/fhir/Patient", json={"resourceType": "Patient"})
    pid = created.json()["id"]
    calls = {
        "create": lambda: created,
        "read": lambda: client.get(f"/fhir/Patient/{pid}"),
        "vread": lambda: client.get(f"/fhir/Patient/{pid}/_history/1"),
        "update": lambda: client.put(f"/fhir/Patient/{pid}", json={"resourceType": "Patient", "id": pid}),
        "patch": lambda: client.patch(
            f"/fhir/Patient/{pid}",
            content=b'[{"op": "add", "path": "/active", "value": true}]',
            headers={"content-type": "application/json-patch+json"},
        ),
        "history-instance": lambda: client.get(f"/fhir/Patient/{pid}/_history"),
        "history-type": lambda: client.get("/fhir/Patient/_history"),
        "search-type": lambda: client.get("/fhir/Patient"),
        "delete": lambda: client.delete(f"/fhir/Patient/{pid}"),
    }
    for code in [i["code"] for i in _resource(statement, "Patient")["interaction"]]:
        r = calls[code]()
        assert r.status_code < 300, (code, r.text)
    for code, r in {
        "history-system": client.get("/fhir/_history"),
        "search-system": client.get("/fhir", params={"_type": "Patient"}),
        "batch": client.post("/fhir", json={"resourceType": "Bundle", "type": "batch"}),
        "transaction": client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction"}),
    }.items():
        assert r.status_code == 200, (code, r.text)


def test_search_params_name_their_r4_definitions_and_omit_what_is_unsupported(statement):
    for resource in statement["rest"][0]["resource"]:
        names = {p["name"] for p in resource.get("searchParam", [])}
        assert not names & {"_text", "_content", "_query", "_filter", "_list", "_has"}, resource["type"]
        for param in resource.get("searchParam", []):
            assert param["definition"].startswith("http://hl7.org/fhir/SearchParameter/"), param
    patient = {p["name"]: p for p in _resource(statement, "Patient")["searchParam"]}
    assert patient["family"]["definition"].endswith("/individual-family")
    assert patient["_id"]["definition"].endswith("/Resource-id")
    assert patient["birthdate"]["type"] == "date"
    observation = {p["name"]: p for p in _resource(statement, "Observation")["searchParam"]}
    assert observation["patient"]["definition"].endswith("/clinical-patient")
    assert observation["code-value-quantity"]["type"] == "composite"


@pytest.mark.parametrize("rtype", CORE_TYPES)
def test_every_advertised_search_parameter_is_accepted_under_strict_handling(client, statement, rtype):
    for param in _resource(statement, rtype)["searchParam"]:
        if param["type"] == "composite":
            continue  # composite values need per-parameter component types; covered by the search tests
        r = client.get(f"/fhir/{rtype}", params={param["name"]: SAMPLE[param["type"]], "_count": "0"}, headers=STRICT)
        assert r.status_code == 200, (rtype, param, r.text)


@pytest.mark.parametrize("rtype", ["Observation", "Encounter", "MedicationRequest"])
def test_advertised_includes_and_revincludes_are_accepted(client, statement, rtype):
    resource = _resource(statement, rtype)
    for include in resource["searchInclude"]:
        r = client.get(f"/fhir/{rtype}", params={"_include": include}, headers=STRICT)
        assert r.status_code == 200, (include, r.text)
    for revinclude in resource.get("searchRevInclude", [])[:40]:
        r = client.get(f"/fhir/{rtype}", params={"_revinclude": revinclude}, headers=STRICT)
        assert r.status_code == 200, (revinclude, r.text)


def test_revincludes_list_the_references_that_can_point_at_a_type(statement):
    patient = _resource(statement, "Patient")
    assert {"Observation:subject", "Observation:patient", "Encounter:patient"} <= set(patient["searchRevInclude"])
    assert "Observation:performer" in patient["searchRevInclude"]
    assert "Observation:encounter" not in patient["searchRevInclude"]


def test_operations_are_listed_where_they_are_served(client, statement):
    patient_ops = {o["name"]: o["definition"] for o in _resource(statement, "Patient")["operation"]}
    assert patient_ops["everything"] == "http://hl7.org/fhir/OperationDefinition/Patient-everything"
    assert set(patient_ops) == {"everything", "validate", "meta", "meta-add", "meta-delete", "export"}
    assert patient_ops["export"] == "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"
    assert "everything" not in {o["name"] for o in _resource(statement, "Observation")["operation"]}
    client.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    for name in patient_ops.keys() - {"export"}:  # instance-level; Patient/$export is type-level (tests/sandbox/bulk)
        r = client.post(f"/fhir/Patient/p1/${name}", json={"resourceType": "Patient", "id": "p1"})
        assert r.json()["issue"][0]["code"] != "not-supported" if r.status_code >= 400 else True, (name, r.text)


def test_each_sandbox_names_its_own_base(client, app, admin_headers):
    with app.state.db.write() as conn:
        conn.execute(insert(layers).values(id="s1", kind="sandbox", name="S1", created_at="2026-01-01"))
    r = client.get("/sandboxes/s1/fhir/metadata", headers=admin_headers)
    assert r.status_code == 200
    assert r.json()["implementation"]["url"] == "http://testserver/sandboxes/s1/fhir"


def test_only_the_full_mode_is_supported(client):
    r = client.get("/fhir/metadata", params={"mode": "terminology"})
    assert r.status_code == 400
    assert r.json()["issue"][0]["code"] == "not-supported"
