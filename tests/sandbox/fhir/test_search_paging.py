"""_sort and paging: several keys, descending, and cursors that stay right while others write.

Pages are read after a position in the sort order (an opaque ``_cursor``), not
at an offset, so a resource created or deleted between two page requests
neither pushes a result onto the next page twice nor makes one fall between pages.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest

from sandbox.fhir.outcome import FhirError
from sandbox.fhir.search import SearchResult
from tests.sandbox.fhir.searching import Store, observation, patient


@pytest.fixture
def store(db) -> Store:
    return Store(db)


def test_sort_by_several_keys_ascending_and_descending(store):
    store.put_all(
        patient("a", name=[{"family": "Ng"}], birthDate="1990-01-01"),
        patient("b", name=[{"family": "Ng"}], birthDate="1980-01-01"),
        patient("c", name=[{"family": "Adams"}], birthDate="1985-01-01"),
        patient("d", birthDate="1970-01-01"),  # no family: sorts last either way
    )
    assert store.ids("Patient", "_sort=family,birthdate") == ["c", "b", "a", "d"]
    assert store.ids("Patient", "_sort=family,-birthdate") == ["c", "a", "b", "d"]
    assert store.ids("Patient", "_sort=-family,birthdate") == ["b", "a", "c", "d"]
    assert store.ids("Patient", "_sort=-birthdate") == ["a", "c", "b", "d"]
    assert store.ids("Patient", "_sort=_id") == ["a", "b", "c", "d"]
    assert store.ids("Patient", "_sort=-_id") == ["d", "c", "b", "a"]


def test_sort_by_date_uses_the_latest_value_descending_and_earliest_ascending(store):
    store.put_all(
        observation("long", effectivePeriod={"start": "2020-01-01T00:00:00Z", "end": "2020-12-31T00:00:00Z"}),
        observation("mid", effectiveDateTime="2020-06-01T00:00:00Z"),
    )
    assert store.ids("Observation", "_sort=date") == ["long", "mid"]
    assert store.ids("Observation", "_sort=-date") == ["long", "mid"]


def test_sort_by_last_updated(store):
    for rid in ("z", "y", "x"):
        store.put(patient(rid))
    assert store.ids("Patient", "_sort=_lastUpdated") == ["z", "y", "x"]
    assert store.ids("Patient", "_sort=-_lastUpdated") == ["x", "y", "z"]


def _page(store: Store, query: str, cursor: str | None = None) -> SearchResult:
    return store.search("Observation", query + (f"&_cursor={cursor}" if cursor else ""))


def _walk_forward(store: Store, query: str, between_pages=None) -> list[str]:
    seen: list[str] = []
    result = _page(store, query)
    pages = 0
    while True:
        seen.extend(m.id for m in result.matches)
        if result.next_cursor is None:
            return seen
        pages += 1
        if between_pages:
            between_pages(pages)
        result = _page(store, query, result.next_cursor.encode())


def _fill(store: Store, n: int) -> None:
    for i in range(n):
        # Pairs share a date, so the id must break ties for the order to be total.
        store.put(observation(f"o{i:02d}", effectiveDateTime=f"2020-01-{i // 2 + 1:02d}T00:00:00Z"))


@pytest.mark.parametrize("sort", ["", "&_sort=date", "&_sort=-date", "&_sort=-date,-_id", "&_sort=status,-date"])
def test_paging_visits_every_match_once_in_order(store, sort):
    _fill(store, 23)
    everything = store.ids("Observation", f"_count=100{sort}")
    assert len(everything) == 23
    assert _walk_forward(store, f"_count=5{sort}") == everything


def test_creations_and_deletions_between_pages_neither_skip_nor_duplicate(store):
    _fill(store, 20)  # o00..o19, dates ascending in pairs
    query = "_count=5&_sort=-date"
    before = store.ids("Observation", "_count=100&_sort=-date")

    def meanwhile(page: int) -> None:
        if page == 1:
            # Someone deletes a result already shown and one not yet shown, and adds one ahead and one behind.
            store.delete("Observation", before[0])
            store.delete("Observation", before[12])
            store.put(observation("new-early", effectiveDateTime="2019-01-01T00:00:00Z"))  # sorts after all
            store.put(observation("new-late", effectiveDateTime="2021-01-01T00:00:00Z"))  # sorts before page 1

    seen = _walk_forward(store, query, meanwhile)
    assert len(seen) == len(set(seen)), "a result appeared twice"
    expected = before[:5] + [rid for rid in before[5:] if rid != before[12]] + ["new-early"]
    assert seen == expected


def test_offset_paging_would_have_skipped_what_cursors_keep(store):
    # The failure cursors prevent: after page 1, deleting a shown result shifts the rest up by one.
    _fill(store, 10)
    first = _page(store, "_count=5&_sort=_id")
    store.delete("Observation", first.matches[0].id)
    second = _page(store, "_count=5&_sort=_id", first.next_cursor.encode())
    assert [m.id for m in second.matches] == ["o05", "o06", "o07", "o08", "o09"]


def test_previous_links_walk_back_to_the_first_page(store):
    _fill(store, 12)
    query = "_count=5&_sort=-date"
    pages = [_page(store, query)]
    while pages[-1].next_cursor:
        pages.append(_page(store, query, pages[-1].next_cursor.encode()))
    assert [len(p.matches) for p in pages] == [5, 5, 2]
    assert pages[0].previous_cursor is None
    back = _page(store, query, pages[2].previous_cursor.encode())
    assert [m.id for m in back.matches] == [m.id for m in pages[1].matches]
    first = _page(store, query, back.previous_cursor.encode())
    assert [m.id for m in first.matches] == [m.id for m in pages[0].matches]
    assert first.previous_cursor is None
    assert first.next_cursor is not None


def test_previous_page_after_writes_shows_what_now_precedes(store):
    _fill(store, 10)
    query = "_count=3&_sort=_id"
    first = _page(store, query)
    second = _page(store, query, first.next_cursor.encode())
    store.delete("Observation", "o01")
    store.put(observation("o00a"))
    back = _page(store, query, second.previous_cursor.encode())
    assert [m.id for m in back.matches] == ["o00", "o00a", "o02"]


def test_a_page_emptied_by_deletions_still_links_back(store):
    _fill(store, 6)
    query = "_count=3&_sort=_id"
    first = _page(store, query)
    for rid in ("o03", "o04", "o05"):
        store.delete("Observation", rid)
    empty = _page(store, query, first.next_cursor.encode())
    assert empty.matches == [] and empty.next_cursor is None
    back = _page(store, query, empty.previous_cursor.encode())
    assert [m.id for m in back.matches] == ["o00", "o01", "o02"]


def test_total_counts_all_matches_on_every_page(store):
    _fill(store, 7)
    first = _page(store, "_count=3")
    assert first.total == 7
    assert _page(store, "_count=3", first.next_cursor.encode()).total == 7


@pytest.mark.parametrize("cursor", ["garbage", "e30", "W1swXQ", "!!!"])
def test_a_cursor_that_is_not_ours_is_400(store, cursor):
    with pytest.raises(FhirError) as caught:
        _page(store, "_count=3", cursor)
    assert caught.value.status == 400


def test_a_cursor_made_for_another_sort_is_400(store):
    _fill(store, 6)
    first = _page(store, "_count=3&_sort=date")
    with pytest.raises(FhirError) as caught:
        _page(store, "_count=3&_sort=-date", first.next_cursor.encode())
    assert caught.value.status == 400


def test_links_carry_the_query_and_the_cursor(client):
    for i in range(5):
        client.put(f"/fhir/Patient/p{i}", json=patient(f"p{i}", gender="female"))
    bundle = client.get("/fhir/Patient?gender=female&_count=2&_sort=_id").json()
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    assert set(links) == {"self", "next"}
    assert links["self"] == "http://testserver/fhir/Patient?gender=female&_count=2&_sort=_id"
    following = parse_qs(urlparse(links["next"]).query)
    assert following["gender"] == ["female"] and following["_count"] == ["2"] and "_cursor" in following
    page2 = client.get(links["next"]).json()
    assert [e["resource"]["id"] for e in page2["entry"]] == ["p2", "p3"]
    relations = {link["relation"]: link["url"] for link in page2["link"]}
    assert set(relations) == {"self", "next", "previous"}
    page1 = client.get(relations["previous"]).json()
    assert [e["resource"]["id"] for e in page1["entry"]] == ["p0", "p1"]
