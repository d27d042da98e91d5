"""The patient list a page at a time (50 a page, by family name), with Previous and Next links that carry the FHIR
search's own cursor: every patient exactly once, the same rows going back, and no shift when someone registers a
patient meanwhile."""

from __future__ import annotations

import html
import re

from fastapi.testclient import TestClient

from sandbox.demo import Demo
from sandbox.store.repository import Actor
from tests.web.chart.browser_form import fill

EXTRA = 62  # with the demo's three cases: 65 patients, two pages


def add_patients(client: TestClient, sandbox: str) -> None:
    """Patients in the sandbox, written in one go; families repeat, so the id has to break ties."""
    state = client.app.state  # type: ignore[attr-defined]
    with state.db.write() as conn:
        view = state.views.get(sandbox)
        for n in range(EXTRA):
            patient = {"resourceType": "Patient", "name": [{"family": f"Pager{n // 3:02d}", "given": [f"P{n}"]}]}
            state.fhir.create(conn, view, patient, Actor("system:test", "test"))


def rows(page_html: str) -> list[str]:
    return re.findall(r'<tr><td><a href="[^"]*/patients/([^"?]+)[^"]*">', page_html)


def link(page_html: str, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" rel="{rel}"', page_html)
    return html.unescape(found.group(1)) if found else None


def test_the_list_pages_through_every_patient_once_and_back(
    client: TestClient, demo: Demo, ada: str, ada_sandbox: str
) -> None:
    add_patients(client, ada_sandbox)
    first = client.get(f"/chart/{ada_sandbox}/patients")
    assert first.status_code == 200
    page_one = rows(first.text)
    assert len(page_one) == 50
    assert link(first.text, "prev") is None
    next_url = link(first.text, "next")
    assert next_url is not None

    second = client.get(next_url)
    assert second.status_code == 200
    page_two = rows(second.text)
    assert len(page_two) == EXTRA + 3 - 50
    assert link(second.text, "next") is None
    assert not set(page_one) & set(page_two)

    # Someone registers a patient whose name sorts first: the next page is a position in the order, not an
    # offset, so page two shows the same rows.
    assert fill(client, f"/chart/{ada_sandbox}/register", given="Aaron", family="Aardvark", gender="male",
                birth_date="1990-01-01", mrn="PAGER-0001").status_code == 303  # fmt: skip
    assert rows(client.get(next_url).text) == page_two

    previous_url = link(second.text, "prev")
    assert previous_url is not None
    back = client.get(previous_url).text
    assert rows(back) == page_one  # the 50 before page two, in the same order
    # The newcomer sorts before them all: one more page back holds just them, and nothing is before it.
    before = client.get(link(back, "prev") or "").text
    assert re.findall(r'<tr><td><a href="[^"]*">([^<]+)</a>', before) == ["Aaron Aardvark"]
    assert link(before, "prev") is None and link(before, "next") is not None

    families = re.findall(r'<tr><td><a href="[^"]*">([^<]+)</a>', first.text)
    assert [f.split()[-1] for f in families] == sorted(f.split()[-1] for f in families)


def test_a_search_pages_too_and_keeps_its_words(client: TestClient, demo: Demo, ada: str, ada_sandbox: str) -> None:
    add_patients(client, ada_sandbox)
    first = client.get(f"/chart/{ada_sandbox}/patients", params={"q": "pager"})
    next_url = link(first.text, "next")
    assert len(rows(first.text)) == 50 and next_url is not None and "q=pager" in next_url
    assert len(rows(client.get(next_url).text)) == EXTRA - 50
    few = client.get(f"/chart/{ada_sandbox}/patients", params={"q": "lindq"}).text
    assert len(rows(few)) == 1 and link(few, "next") is None and link(few, "prev") is None


def test_a_page_link_that_is_not_the_searchs_own_is_refused(
    client: TestClient, demo: Demo, ada: str, ada_sandbox: str
) -> None:
    for cursor in ("not-a-cursor", "eyJ4IjoxfQ", "W10"):
        response = client.get(f"/chart/{ada_sandbox}/patients", params={"cursor": cursor})
        assert response.status_code == 400, cursor
        assert "cannot be shown" in response.text
        assert rows(response.text) == []
    # A cursor of another order (the list is by family name) is not taken either.
    add_patients(client, ada_sandbox)
    state = client.app.state  # type: ignore[attr-defined]
    with state.db.read() as conn:
        view = state.views.get(ada_sandbox)
        other = state.fhir.search(conn, view, "Patient", [("_sort", "birthdate"), ("_count", "5")]).next_cursor
    assert other is not None
    response = client.get(f"/chart/{ada_sandbox}/patients", params={"cursor": other.encode()})
    assert response.status_code == 400
