"""Code status end to end: the generator's record shows in the banner, and a chart form documents or changes it
(a new Observation through the one write path; a DNR needs whom it was discussed with)."""

from __future__ import annotations

import re

import orjson
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from sandbox.demo import Demo
from sandbox.store.schema import resource_versions
from synthetic_data import generate_population
from synthetic_data.codes import CODE_STATUS_TYPE, LOINC, SNOMED
from tests.web.chart.browser_form import fill
from tests.web.chart.conftest import sign_in

CASE = "chest-pain-cardiology"
BANNER = re.compile(r'<div( class="code-status-flag")?><dt>Code status</dt><dd id="banner-code-status">(.*?)<a ', re.S)


def banner_status(html: str) -> tuple[bool, str]:
    """(flagged, the words) of the banner's code status."""
    found = BANNER.search(html)
    assert found is not None, html[:2000]
    return bool(found.group(1)), " ".join(re.sub(r"<[^>]+>", "", found.group(2)).split())


def written(client: TestClient) -> int:
    with client.app.state.db.read() as conn:  # type: ignore[attr-defined]
        return conn.execute(select(func.count()).select_from(resource_versions)).scalar_one()


def code_statuses(client: TestClient, sandbox: str) -> list[dict]:  # type: ignore[type-arg]
    state = client.app.state  # type: ignore[attr-defined]
    with state.db.read() as conn:
        view = state.views.get(sandbox)
        query = [("patient", f"Patient/{CASE}"), ("code", f"{SNOMED}|{CODE_STATUS_TYPE[0]}"), ("_count", "20")]
        return [orjson.loads(s.content) for s in state.fhir.search(conn, view, "Observation", query).matches]


def test_the_generators_code_status_shows_in_the_banner_flagged_when_dnr(client: TestClient, demo: Demo) -> None:
    bundles = generate_population(60, seed=3)
    directory = next(bundles)
    patient = next(
        b
        for b in bundles
        if any(
            e["resource"]["resourceType"] == "Observation"
            and e["resource"]["code"].get("text") == "Code status"
            and e["resource"]["valueCodeableConcept"]["text"].startswith("DNR")
            for e in b["entry"]
        )
    )
    for bundle in (directory, patient):
        assert client.post("/fhir", json=bundle).status_code == 200
    patient_id = patient["entry"][0]["resource"]["id"]
    sign_in(client, demo, "trainer@demo.invalid")  # a trainer may open the default sandbox's charts
    flagged, words = banner_status(client.get(f"/chart/default/patients/{patient_id}").text)
    assert flagged
    assert re.fullmatch(r"DNR \(do not resuscitate\) \(since \d{4}-\d\d-\d\d \d\d:\d\d\)", words)


def test_a_trainee_documents_then_changes_code_status_through_the_form(
    client: TestClient, demo: Demo, ada: str, ada_sandbox: str
) -> None:
    chart = f"/chart/{ada_sandbox}/patients/{CASE}"
    assert banner_status(client.get(chart).text) == (False, "Not documented")
    summary = client.get(chart + "/summary").text
    assert f'href="{chart}/forms/code-status"' in summary  # the Summary section offers the form too

    saved = fill(client, f"{chart}/forms/code-status", status="full", discussed_with="the patient")
    assert saved.status_code == 303
    assert saved.headers["location"].startswith(f"{chart}/summary?saved=")
    flagged, words = banner_status(client.get(chart).text)
    assert not flagged and words.startswith("Full code (since ")

    # Changed within the same second: the newer entry is the code status all the same.
    saved = fill(client, f"{chart}/forms/code-status", status="dnr", discussed_with="the patient's family")
    assert saved.status_code == 303
    flagged, words = banner_status(client.get(chart).text)
    assert flagged and words.startswith("DNR (do not resuscitate) (since ")

    history = code_statuses(client, ada_sandbox)
    assert len(history) == 2  # a change is a new Observation; the earlier one stays in the record
    dnr = next(o for o in history if o["valueCodeableConcept"]["text"].startswith("DNR"))
    assert {(c["system"], c["code"]) for c in dnr["code"]["coding"]} == {(SNOMED, "304251008"), (LOINC, "75320-2")}
    assert dnr["valueCodeableConcept"]["coding"] == [
        {"system": SNOMED, "code": "304253006", "display": "Not for resuscitation"}
    ]
    assert dnr["note"] == [{"text": "Discussed with the patient's family."}]
    assert dnr["status"] == "final" and dnr["subject"] == {"reference": f"Patient/{CASE}"}
    assert dnr["encounter"]["reference"].startswith("Encounter/")  # the visit in progress, preselected


def test_bad_code_status_entries_show_the_error_beside_the_field_and_write_nothing(
    client: TestClient, demo: Demo, ada: str, ada_sandbox: str
) -> None:
    url = f"/chart/{ada_sandbox}/patients/{CASE}/forms/code-status"
    before = written(client)
    for fields, field, message in (
        ({"status": "dnr"}, "discussed_with", "A DNR is documented with whom it was discussed."),
        ({"status": "dnar"}, "status", "Choose one of the listed code status options."),
        ({"status": ""}, "status", "Code status is required."),
        ({"status": "full", "discussed_with": "the neighbour"}, "discussed_with", "Choose one of the listed"),
        ({"status": "full", "note": "x" * 501}, "note", "Note is too long"),
    ):
        response = fill(client, url, **fields)
        assert response.status_code == 422, (fields, response.text[:300])
        error = re.search(rf'<p class="error" id="f-{field}-error">([^<]*)</p>', response.text)
        assert error is not None and message in error.group(1), (fields, error and error.group(1))
        assert re.search(rf'id="f-{field}"[^>]*aria-invalid="true"', response.text)
    assert written(client) == before
    assert banner_status(client.get(f"/chart/{ada_sandbox}/patients/{CASE}").text) == (False, "Not documented")
