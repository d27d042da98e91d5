"""What a search returns over HTTP: the searchset Bundle, result controls, and how bad parameters are answered."""

from __future__ import annotations

import pytest

from tests.sandbox.fhir.searching import observation, patient

SUBSETTED = "SUBSETTED"


@pytest.fixture
def filled(client):
    for i in range(5):
        client.put(
            f"/fhir/Patient/p{i}",
            json=patient(
                f"p{i}",
                gender="female" if i % 2 else "male",
                name=[{"family": f"Family{i}"}],
                text={"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">Patient {i}</div>'},
                photo=[{"contentType": "image/png", "data": "iVBORw0KGgo="}],
            ),
        )
    client.put("/fhir/Observation/o1", json=observation("o1", subject={"reference": "Patient/p1"}))
    return client


def _ids(bundle: dict, mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


def test_searchset_bundle_shape(filled):
    r = filled.get("/fhir/Patient?gender=male")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/fhir+json")
    bundle = r.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    assert bundle["total"] == 3
    assert sorted(_ids(bundle)) == ["p0", "p2", "p4"]
    entry = bundle["entry"][0]
    assert entry["fullUrl"] == f"http://testserver/fhir/Patient/{entry['resource']['id']}"


def test_count_limits_the_page_and_zero_gives_only_the_total(filled):
    assert len(filled.get("/fhir/Patient?_count=2").json()["entry"]) == 2
    bundle = filled.get("/fhir/Patient?_count=0").json()
    assert bundle["total"] == 5 and "entry" not in bundle
    assert filled.get("/fhir/Patient?_count=-1").status_code == 400
    assert filled.get("/fhir/Patient?_count=lots").status_code == 400


def test_total_modes(filled):
    assert "total" not in filled.get("/fhir/Patient?_total=none").json()
    assert filled.get("/fhir/Patient?_total=accurate&_count=2").json()["total"] == 5
    assert filled.get("/fhir/Patient?_total=estimate&_count=2").json()["total"] == 5
    assert filled.get("/fhir/Patient?_total=maybe").status_code == 400


def test_summary_count_true_data_text(filled):
    counted = filled.get("/fhir/Patient?_summary=count").json()
    assert counted["total"] == 5 and "entry" not in counted
    assert filled.get("/fhir/Patient?_summary=count&_total=none&gender=male").json()["total"] == 3

    summary = filled.get("/fhir/Patient?_id=p1&_summary=true").json()["entry"][0]["resource"]
    assert "photo" not in summary and "text" not in summary and summary["gender"] == "female"
    assert any(t["code"] == SUBSETTED for t in summary["meta"]["tag"])

    data = filled.get("/fhir/Patient?_id=p1&_summary=data").json()["entry"][0]["resource"]
    assert "text" not in data and "photo" in data

    text = filled.get("/fhir/Patient?_id=p1&_summary=text").json()["entry"][0]["resource"]
    assert "text" in text and "photo" not in text and "name" not in text

    assert filled.get("/fhir/Patient?_summary=some").status_code == 400


def test_elements_keeps_only_the_named_elements(filled):
    resource = filled.get("/fhir/Patient?_id=p1&_elements=gender,name").json()["entry"][0]["resource"]
    assert set(resource) == {"resourceType", "id", "meta", "gender", "name"}
    assert any(t["code"] == SUBSETTED for t in resource["meta"]["tag"])


def test_unknown_parameters_are_ignored_and_reported_in_an_outcome_entry(filled):
    bundle = filled.get("/fhir/Patient?gender=male&colour=blue").json()
    assert sorted(_ids(bundle)) == ["p0", "p2", "p4"]
    outcome = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert len(outcome) == 1
    issue = outcome[0]["resource"]["issue"][0]
    assert outcome[0]["resource"]["resourceType"] == "OperationOutcome"
    assert issue["severity"] == "warning" and issue["code"] == "not-supported" and "colour" in issue["diagnostics"]


def test_unknown_parameters_are_400_under_strict_handling(filled):
    r = filled.get("/fhir/Patient?gender=male&colour=blue", headers={"Prefer": "handling=strict"})
    assert r.status_code == 400
    body = r.json()
    assert body["resourceType"] == "OperationOutcome" and "colour" in body["issue"][0]["diagnostics"]
    lenient = filled.get("/fhir/Patient?colour=blue", headers={"Prefer": "handling=lenient"})
    assert lenient.status_code == 200


@pytest.mark.parametrize(
    "query",
    ["birthdate=1990-02-31", "birthdate=soon", "birthdate=xx1990", "gender:missing=maybe", "_lastUpdated=today"],
)
def test_malformed_values_are_400_operation_outcomes(filled, query):
    r = filled.get(f"/fhir/Patient?{query}")
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"
    assert r.json()["issue"][0]["code"] == "invalid"


def test_post_search_takes_a_form_body(filled):
    r = filled.post(
        "/fhir/Patient/_search?_count=10",
        content="gender=female&_sort=_id",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200
    assert _ids(r.json()) == ["p1", "p3"]
    wrong = filled.post("/fhir/Patient/_search", json={"gender": "female"})
    assert wrong.status_code == 415


def test_system_search_across_types(filled):
    bundle = filled.get("/fhir?_type=Patient,Observation&_count=100").json()
    kinds = sorted(e["resource"]["resourceType"] for e in bundle["entry"])
    assert kinds == ["Observation"] + ["Patient"] * 5
    assert bundle["total"] == 6
    only = filled.get("/fhir?_type=Observation").json()
    assert _ids(only) == ["o1"]
    filtered = filled.get("/fhir?_type=Patient,Observation&_id=p1,o1").json()
    assert sorted(_ids(filtered)) == ["o1", "p1"]


def test_system_search_by_post(filled):
    r = filled.post(
        "/fhir/_search",
        content="_type=Observation,Patient&_id=o1,p2",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200
    assert sorted(_ids(r.json())) == ["o1", "p2"]
    assert filled.post("/fhir/_search", json={"_type": "Patient"}).status_code == 415


def test_system_search_uses_common_parameters_and_pages(filled):
    filled.put(
        "/fhir/Observation/tagged",
        json=observation("tagged", meta={"tag": [{"system": "http://example.org/tags", "code": "demo"}]}),
    )
    bundle = filled.get("/fhir?_tag=http://example.org/tags|demo").json()
    assert _ids(bundle) == ["tagged"]
    page = filled.get("/fhir?_type=Patient,Observation&_count=4&_sort=_id").json()
    next_url = next(link["url"] for link in page["link"] if link["relation"] == "next")
    rest = filled.get(next_url).json()
    assert len(_ids(page)) + len(_ids(rest)) == 7
    assert not set(_ids(page)) & set(_ids(rest))


def test_system_search_reports_parameters_not_shared_by_the_types(filled):
    bundle = filled.get("/fhir?_type=Patient,Observation&gender=male").json()
    assert any(e["search"]["mode"] == "outcome" for e in bundle["entry"])
    assert (
        filled.get("/fhir?_type=Patient,Observation&gender=male", headers={"Prefer": "handling=strict"}).status_code
        == 400
    )
    assert filled.get("/fhir?_type=Patient,Nonsense").status_code == 400
    same = filled.get("/fhir?_type=Patient&gender=male").json()
    assert sorted(_ids(same)) == ["p0", "p2", "p4"]


def test_includes_are_marked_include(filled):
    bundle = filled.get("/fhir/Observation?_include=Observation:subject").json()
    assert _ids(bundle) == ["o1"]
    assert _ids(bundle, "include") == ["p1"]
