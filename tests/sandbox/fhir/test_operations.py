"""Operations: Patient $everything, $validate, $meta, $meta-add, $meta-delete, and unknown operations."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.parameters import Parameters
from sqlalchemy import insert

from sandbox.fhir.search_cursor import Cursor
from sandbox.store.layers import View
from sandbox.store.repository import Actor
from sandbox.store.schema import layers
from tests.sandbox.fhir.clock import install


def _path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def _link(bundle: dict, relation: str) -> str | None:
    return next((link["url"] for link in bundle["link"] if link["relation"] == relation), None)


def _keys(bundle: dict, mode: str = "match") -> list[str]:
    return [
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == mode
    ]


def _put(client, resource: dict, base: str = "/fhir", headers: dict | None = None) -> None:
    r = client.put(f"{base}/{resource['resourceType']}/{resource['id']}", json=resource, headers=headers or {})
    assert r.status_code in (200, 201), r.text


def _observation(oid: str, patient: str, **extra) -> dict:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"text": "pulse"},
        "subject": {"reference": f"Patient/{patient}"},
        **extra,
    }


@pytest.fixture
def chart(client) -> None:
    """Patient p1 with a varied record, and patient p2 whose records must never leak into p1's."""
    _put(client, {"resourceType": "Practitioner", "id": "dr-gp", "name": [{"family": "Gp"}]})
    _put(client, {"resourceType": "Practitioner", "id": "dr-unrelated", "name": [{"family": "Else"}]})
    _put(client, {"resourceType": "Organization", "id": "clinic", "name": "Clinic"})
    _put(client, {"resourceType": "Location", "id": "ward", "name": "Ward 3"})
    _put(client, {"resourceType": "Medication", "id": "med", "code": {"text": "aspirin"}})
    _put(
        client,
        {
            "resourceType": "Patient",
            "id": "p1",
            "generalPractitioner": [{"reference": "Practitioner/dr-gp"}],
            "managingOrganization": {"reference": "Organization/clinic"},
        },
    )
    _put(client, {"resourceType": "Patient", "id": "p2"})
    _put(client, _observation("o1", "p1"))
    _put(client, _observation("o2", "p1"))
    _put(client, _observation("o-p2", "p2"))
    _put(
        client,
        {
            "resourceType": "Encounter",
            "id": "e1",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": {"reference": "Patient/p1"},
            "location": [{"location": {"reference": "Location/ward"}}],
        },
    )
    _put(
        client,
        {
            "resourceType": "AllergyIntolerance",
            "id": "a1",
            "patient": {"reference": "Patient/p1"},
            "code": {"text": "peanut"},
        },
    )
    _put(
        client,
        {
            "resourceType": "MedicationRequest",
            "id": "mr1",
            "status": "active",
            "intent": "order",
            "subject": {"reference": "Patient/p1"},
            "medicationReference": {"reference": "Medication/med"},
        },
    )


# ---- $everything ------------------------------------------------------------------------------------


def test_everything_is_the_patient_then_its_compartment_with_what_they_refer_to(client, chart):
    r = client.get("/fhir/Patient/p1/$everything")
    assert r.status_code == 200
    bundle = r.json()
    Bundle.model_validate(bundle)
    assert bundle["type"] == "searchset"
    assert _keys(bundle) == [
        "Patient/p1",
        "AllergyIntolerance/a1",
        "Encounter/e1",
        "MedicationRequest/mr1",
        "Observation/o1",
        "Observation/o2",
    ]
    assert bundle["total"] == 6
    assert sorted(_keys(bundle, "include")) == [
        "Location/ward",
        "Medication/med",
        "Organization/clinic",
        "Practitioner/dr-gp",
    ]


def test_everything_type_filter_applies_to_the_patient_and_the_referenced_resources(client, chart):
    only_observations = client.get("/fhir/Patient/p1/$everything", params={"_type": "Observation"}).json()
    assert _keys(only_observations) == ["Observation/o1", "Observation/o2"]
    assert _keys(only_observations, "include") == []
    with_medication = client.get("/fhir/Patient/p1/$everything", params={"_type": "MedicationRequest,Medication"})
    assert _keys(with_medication.json()) == ["MedicationRequest/mr1"]
    assert _keys(with_medication.json(), "include") == ["Medication/med"]


def test_everything_since_keeps_what_changed_after_it(client, chart, monkeypatch):
    install(monkeypatch).set("2030-01-01T00:00:00Z")
    client.put("/fhir/Observation/o1", json=_observation("o1", "p1", status="amended"))
    since = "2030-01-01T00:00:00Z"
    changed = client.get("/fhir/Patient/p1/$everything", params={"_since": since}).json()
    assert _keys(changed) == ["Observation/o1"]
    assert _keys(changed, "include") == []  # the patient's practitioner and clinic did not change


def test_everything_pages_follow_next_and_previous_links(client, chart):
    seen: list[str] = []
    page = client.get("/fhir/Patient/p1/$everything", params={"_count": "2"}).json()
    pages = [page]
    assert _link(page, "previous") is None
    while True:
        seen.extend(_keys(page))
        assert len(_keys(page)) <= 2
        following = _link(page, "next")
        if following is None:
            break
        page = client.get(_path(following)).json()
        pages.append(page)
    assert seen == _keys(client.get("/fhir/Patient/p1/$everything").json())
    assert len(pages) == 3
    back = client.get(_path(_link(pages[-1], "previous"))).json()
    assert _keys(back) == _keys(pages[1])


def test_everything_by_post_takes_a_parameters_body(client, chart):
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "_type", "valueString": "Observation"}, {"name": "_count", "valueInteger": 1}],
    }
    r = client.post("/fhir/Patient/p1/$everything", json=body)
    assert r.status_code == 200
    assert _keys(r.json()) == ["Observation/o1"]
    assert "_type=Observation" in _link(r.json(), "next")
    assert client.post("/fhir/Patient/p1/$everything").status_code == 200  # no body: no parameters


def test_everything_errors(client, chart):
    assert client.get("/fhir/Patient/nobody/$everything").status_code == 404
    client.delete("/fhir/Patient/p2")
    assert client.get("/fhir/Patient/p2/$everything").status_code == 410
    forged = Cursor(True, False, "$everything", ("x",), "Patient", "p1").encode()  # well-formed, but not ours
    for params in (
        {"_type": "Nonsense"},
        {"_count": "ten"},
        {"_since": "last week"},
        {"_cursor": "garbage"},
        {"_cursor": forged},
    ):
        r = client.get("/fhir/Patient/p1/$everything", params=params)
        assert r.status_code == 400, params
        assert r.json()["resourceType"] == "OperationOutcome"
    bad_body = client.post("/fhir/Patient/p1/$everything", json={"resourceType": "Patient"})
    assert bad_body.status_code == 400


def test_everything_reports_unsupported_parameters_or_rejects_them_when_strict(client, chart):
    lenient = client.get("/fhir/Patient/p1/$everything", params={"start": "2020-01-01"}).json()
    outcome = [e["resource"] for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome and "start" in outcome[0]["issue"][0]["diagnostics"]
    strict = client.get(
        "/fhir/Patient/p1/$everything", params={"start": "2020-01-01"}, headers={"Prefer": "handling=strict"}
    )
    assert strict.status_code == 400


def test_everything_in_a_sandbox_sees_the_baseline_through_its_own_changes(client, app, admin_headers):
    db, repo = app.state.db, app.state.repo
    base = View("base", ("base",))
    loader = Actor("loader", "loader")
    with db.write() as conn:
        conn.execute(insert(layers).values(id="base", kind="baseline", name="Base", created_at="2026-01-01"))
        conn.execute(
            insert(layers).values(id="s1", kind="sandbox", name="S1", baseline_id="base", created_at="2026-01-01")
        )
        repo.write(conn, base, {"resourceType": "Patient"}, loader, rtype="Patient", rid="p1", method="PUT")
        for oid in ("kept", "deleted", "moved"):
            repo.write(conn, base, _observation(oid, "p1"), loader, rtype="Observation", rid=oid, method="PUT")
    sandbox = "/sandboxes/s1/fhir"
    client.delete(f"{sandbox}/Observation/deleted", headers=admin_headers)
    _put(client, _observation("moved", "someone-else"), sandbox, admin_headers)
    _put(client, _observation("new", "p1"), sandbox, admin_headers)

    bundle = client.get(f"{sandbox}/Patient/p1/$everything", headers=admin_headers).json()
    assert _keys(bundle) == ["Patient/p1", "Observation/kept", "Observation/new"]
    assert bundle["entry"][0]["fullUrl"] == "http://testserver/sandboxes/s1/fhir/Patient/p1"
    assert client.get("/fhir/Patient/p1/$everything").status_code == 404  # the default sandbox has no baseline


# ---- $validate -------------------------------------------------------------------------------------


def _issues(response) -> list[tuple[str, str]]:
    assert response.json()["resourceType"] == "OperationOutcome"
    return [(i["severity"], i["code"]) for i in response.json()["issue"]]


def test_validate_answers_information_for_a_valid_resource_and_stores_nothing(client):
    r = client.post("/fhir/Patient/$validate", json={"resourceType": "Patient", "gender": "female"})
    assert r.status_code == 200
    assert _issues(r) == [("information", "informational")]
    assert client.get("/fhir/Patient").json()["total"] == 0


def test_validate_lists_every_problem_with_its_location(client):
    r = client.post(
        "/fhir/Patient/$validate",
        json={"resourceType": "Patient", "gender": "robot", "birthDate": "yesterday", "name": []},
    )
    assert r.status_code == 200
    issues = r.json()["issue"]
    assert {i["severity"] for i in issues} == {"error"}
    assert {tuple(i["expression"]) for i in issues} >= {("Patient.gender",), ("Patient.name",)}
    assert len(issues) >= 3


def test_validate_takes_a_parameters_body_with_resource_and_mode(client):
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": {"resourceType": "Observation", "status": "final"}},
            {"name": "mode", "valueCode": "create"},
        ],
    }
    r = client.post("/fhir/Observation/$validate", json=body)
    assert r.status_code == 200
    assert ("error", "required") in _issues(r)  # Observation.code is missing
    wrong_type = client.post("/fhir/Patient/$validate?mode=create", json={"resourceType": "Observation"})
    assert _issues(wrong_type)[0][0] == "error"


def test_validate_update_mode_checks_the_id_and_the_version_without_writing(client):
    client.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    good = client.post("/fhir/Patient/p1/$validate?mode=update", json={"resourceType": "Patient", "id": "p1"})
    assert _issues(good) == [("information", "informational")]
    wrong_id = client.post("/fhir/Patient/p1/$validate?mode=update", json={"resourceType": "Patient", "id": "p9"})
    assert _issues(wrong_id)[0][0] == "error"
    assert client.get("/fhir/Patient/p1").json()["meta"]["versionId"] == "1"
    assert client.get("/fhir/Patient/p1/_history").json()["total"] == 1


def test_validate_delete_mode_needs_an_instance_and_deletes_nothing(client):
    client.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    r = client.post("/fhir/Patient/p1/$validate?mode=delete")
    assert _issues(r) == [("information", "informational")]
    assert client.get("/fhir/Patient/p1").status_code == 200
    assert client.post("/fhir/Patient/$validate?mode=delete").status_code == 400


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/fhir/Patient/$validate", None),  # nothing to validate
        ("/fhir/Patient/$validate?mode=sideways", {"resourceType": "Patient"}),
        ("/fhir/Patient/$validate?profile=http://example.org/p", {"resourceType": "Patient"}),
        ("/fhir/Patient/$validate?mode=update", {"resourceType": "Patient"}),  # update needs an instance
        ("/fhir/Nonsense/$validate", {"resourceType": "Patient"}),
    ],
)
def test_validate_bad_requests(client, url, body):
    r = client.post(url, json=body) if body is not None else client.post(url)
    assert r.status_code in (400, 404)
    assert r.json()["resourceType"] == "OperationOutcome"


def test_validate_malformed_json_is_400_and_get_is_not_supported(client):
    r = client.post("/fhir/Patient/$validate", content=b"{not json", headers={"content-type": "application/fhir+json"})
    assert r.status_code == 400
    got = client.get("/fhir/Patient/$validate")
    assert got.status_code == 400 and got.json()["issue"][0]["code"] == "not-supported"


# ---- $meta, $meta-add, $meta-delete -----------------------------------------------------------------------

TAG = {"system": "http://example.org/tags", "code": "reviewed"}
LABEL = {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}
PROFILE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"


def _meta_body(**meta) -> dict:
    return {"resourceType": "Parameters", "parameter": [{"name": "meta", "valueMeta": meta}]}


def _returned_meta(response) -> dict:
    assert response.status_code == 200, response.text
    Parameters.model_validate(response.json())
    (part,) = response.json()["parameter"]
    assert part["name"] == "return"
    return part["valueMeta"]


def test_meta_returns_the_current_and_a_historical_versions_meta(client):
    client.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1", "meta": {"tag": [TAG]}})
    client.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    assert _returned_meta(client.get("/fhir/Patient/p1/$meta"))["versionId"] == "2"
    assert "tag" not in _returned_meta(client.post("/fhir/Patient/p1/$meta"))
    old = _returned_meta(client.get("/fhir/Patient/p1/_history/1/$meta"))
    assert old["versionId"] == "1" and old["tag"] == [TAG]
    assert client.get("/fhir/Patient/nobody/$meta").status_code == 404
    client.delete("/fhir/Patient/p1")
    assert client.get("/fhir/Patient/p1/$meta").status_code == 410


def test_meta_add_adds_as_sets_in_a_new_attributed_indexed_version(client):
    client.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1", "meta": {"tag": [TAG]}})
    added = _returned_meta(
        client.post(
            "/fhir/Patient/p1/$meta-add",
            json=_meta_body(tag=[{**TAG, "display": "Reviewed"}], security=[LABEL], profile=[PROFILE]),
        )
    )
    assert added["versionId"] == "2"
    assert added["tag"] == [TAG]  # same system and code: not added twice
    assert added["security"] == [LABEL] and added["profile"] == [PROFILE]
    assert client.get("/fhir/Patient", params={"_security": f"{LABEL['system']}|R"}).json()["total"] == 1
    assert client.get("/fhir/Patient", params={"_profile": PROFILE}).json()["total"] == 1
    history = client.get("/fhir/Patient/p1/_history").json()
    assert history["entry"][0]["request"]["method"] == "PUT"
    # Adding what is already there writes nothing.
    again = _returned_meta(client.post("/fhir/Patient/p1/$meta-add", json=_meta_body(security=[LABEL])))
    assert again["versionId"] == "2"


def test_meta_delete_removes_and_leaves_no_empty_arrays(client):
    client.put(
        "/fhir/Patient/p1",
        json={"resourceType": "Patient", "id": "p1", "meta": {"tag": [TAG], "security": [LABEL]}},
    )
    pruned = _returned_meta(client.post("/fhir/Patient/p1/$meta-delete", json=_meta_body(tag=[{**TAG}])))
    assert "tag" not in pruned and pruned["security"] == [LABEL] and pruned["versionId"] == "2"
    assert client.get("/fhir/Patient", params={"_tag": f"{TAG['system']}|reviewed"}).json()["total"] == 0
    unchanged = _returned_meta(client.post("/fhir/Patient/p1/$meta-delete", json=_meta_body(tag=[TAG])))
    assert unchanged["versionId"] == "2"


@pytest.mark.parametrize(
    "body",
    [
        None,
        {"resourceType": "Patient"},
        {"resourceType": "Parameters"},
        {"resourceType": "Parameters", "parameter": [{"name": "meta", "valueString": "x"}]},
        {"resourceType": "Parameters", "parameter": [{"name": "meta", "valueMeta": {"tag": "not-a-list"}}]},
        {
            "resourceType": "Parameters",
            "parameter": [{"name": "meta", "valueMeta": {"tag": [TAG]}}, {"name": "meta", "valueMeta": {}}],
        },
    ],
)
def test_meta_add_rejects_bad_bodies_and_changes_nothing(client, body):
    client.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    r = client.post("/fhir/Patient/p1/$meta-add", json=body) if body else client.post("/fhir/Patient/p1/$meta-add")
    assert r.status_code in (400, 422)
    assert r.json()["resourceType"] == "OperationOutcome"
    assert client.get("/fhir/Patient/p1").json()["meta"]["versionId"] == "1"


def test_meta_add_on_missing_or_deleted_resources(client):
    assert client.post("/fhir/Patient/nobody/$meta-add", json=_meta_body(tag=[TAG])).status_code == 404
    client.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    client.delete("/fhir/Patient/p1")
    assert client.post("/fhir/Patient/p1/$meta-add", json=_meta_body(tag=[TAG])).status_code == 410


# ---- unknown operations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "status"),
    [
        ("GET", "/fhir/$convert", 404),
        ("GET", "/fhir/Observation/$export", 400),  # known, but at system level and on Patient and Group only
        ("POST", "/fhir/Patient/$match", 404),
        ("GET", "/fhir/Patient/p1/$lastn", 404),
        ("GET", "/fhir/Observation/o1/$everything", 400),  # known, but only on Patient
        ("GET", "/fhir/Patient/$everything", 400),  # known, but only on an instance
        ("GET", "/fhir/Patient/p1/$meta-add", 400),  # known, but POST only
    ],
)
def test_unknown_operations_answer_not_supported(client, method, url, status):
    r = client.request(method, url)
    assert r.status_code == status
    assert r.json()["issue"][0]["code"] == "not-supported"
