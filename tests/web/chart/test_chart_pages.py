"""The chart shows a training case's record: banner, sections, flowsheet and plots, flagged results."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from fastapi.testclient import TestClient

from sandbox.demo import Demo
from web.chart.display import age_on

CASE = "chest-pain-cardiology"


def test_banner_and_sections_show_the_case(client: TestClient, demo: Demo, ada: str, ada_sandbox: str) -> None:
    base = f"/chart/{ada_sandbox}/patients/{CASE}"
    summary = client.get(base).text
    age = age_on("1967-04-02", datetime.now(UTC).date())
    assert re.search(rf"<dt>Age</dt><dd>{age}</dd>", summary)
    assert '<dd id="mrn">CASE-0001</dd>' in summary
    assert re.search(r'id="banner-allergies">[^<]*Penicillin', summary, re.I)
    assert re.search(
        r'<dt>Code status</dt><dd id="banner-code-status">Not documented\s*<a href="[^"]+/forms/code-status"', summary
    )
    assert 'aria-current="page">Summary</a>' in summary

    problems = client.get(f"{base}/problems").text
    assert "Chest pain (finding)" in problems
    medications = client.get(f"{base}/medications").text
    assert "lisinopril 10 MG Oral Tablet" in medications
    assert 'aria-label="Discontinue lisinopril 10 MG Oral Tablet"' in medications

    vitals = client.get(f"{base}/vitals").text
    assert re.search(r'<tr data-vital="bp"><th scope="row">Blood pressure</th><td>152/94</td>', vitals)
    assert vitals.count('<svg class="trend"') >= 5
    assert 'aria-label="Blood pressure trend' in vitals

    results = client.get(f"{base}/results").text
    rows = re.findall(
        r"<tr( class=\"abnormal\")?><td>([^<]+)</td><td>([^<]*)</td><td>([^<]*)</td><td>(.*?)</td>", results
    )
    assert rows, "the case has lab results"
    ldl = [r for r in rows if r[1].startswith("Cholesterol in LDL")]
    assert ldl and all(r[3] == "60–99" for r in ldl)  # the generator's normal range, where the result has none
    flagged = [r for r in rows if r[0]]
    assert flagged and all("<strong>H</strong>" in r[4] or "<strong>L</strong>" in r[4] for r in flagged)

    encounters = client.get(f"{base}/encounters").text
    assert "in-progress" in encounters
    immunizations = client.get(f"{base}/immunizations").text
    assert "None recorded." in immunizations or "<td>" in immunizations


def test_patient_search_finds_by_name_and_mrn(client: TestClient, demo: Demo, ada: str, ada_sandbox: str) -> None:
    everyone = client.get(f"/chart/{ada_sandbox}/patients").text
    assert {"Walter James Okafor", "Rosa Maria Lindqvist", "Maya Brennan"} <= set(
        re.findall(r'/patients/[^"]+">([^<]+)</a>', everyone)
    )
    by_name = client.get(f"/chart/{ada_sandbox}/patients", params={"q": "lindq"}).text
    assert re.findall(r'/patients/[^"]+">([^<]+)</a>', by_name) == ["Rosa Maria Lindqvist"]
    by_mrn = client.get(f"/chart/{ada_sandbox}/patients", params={"q": "CASE-0003"}).text
    assert re.findall(r'/patients/[^"]+">([^<]+)</a>', by_mrn) == ["Maya Brennan"]
    nobody = client.get(f"/chart/{ada_sandbox}/patients", params={"q": "zzzz"}).text
    assert "No patients found." in nobody


def test_age_counts_whole_years() -> None:
    assert age_on("2000-03-01", date(2026, 2, 28)) == 25
    assert age_on("2000-03-01", date(2026, 3, 1)) == 26
    assert age_on("2000", date(2026, 3, 1)) is None
