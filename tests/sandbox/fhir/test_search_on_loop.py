"""Searches awaited on the event loop (``run_search_on_loop``) are the thread pool's searches (``run_search``): the
same statements, from one engine, so every search answers alike whichever way it ran.  The routes run searches on
the loop where the database is awaited (PostgreSQL); a statement of a shape not yet compiled goes to the pool."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl

import pytest
from sqlalchemy import event, insert

from sandbox.fhir import search
from sandbox.fhir.search import SearchResult, run_search_on_loop
from sandbox.fhir.search_plan import SearchPlan, parse
from sandbox.store.layers import View
from sandbox.store.schema import layers
from tests.sandbox.fhir.searching import Store, observation, patient

HR = "http://loinc.org|8867-4"
SANDBOX = View("trainee", ("trainee", "default"))

# Searches of many shapes: reference, token, date and string parameters, sorts, totals, counts, chains, _has,
# lists of values (_id, _type: SQLAlchemy writes those out per call), and an empty result.
QUERIES = [
    ("Observation", f"patient=p1&code={HR}&_sort=-date&_count=2"),
    ("Observation", f"patient=p1&code={HR}&_sort=-date&_count=2&_total=none"),
    ("Observation", "patient=p1&_count=3"),
    ("Observation", "patient=p1&_summary=count"),
    ("Observation", "patient=p1&_count=0"),
    ("Observation", "date=ge2024-01-03&_sort=date"),
    ("Observation", "subject.name=Ng&_sort=_id"),
    ("Patient", "_has:Observation:patient:code=8867-4"),
    ("Patient", "name=ng&_sort=-_lastUpdated"),
    ("Observation", "_id=o1,o3,o5&_sort=_id"),
    (None, "_type=Patient,Observation&_count=4&_sort=_id"),
    ("Observation", "patient=nobody"),
]


@pytest.fixture
def store(db) -> Store:
    s = Store(db)
    s.put_all(patient("p1", name=[{"family": "Ng"}]), patient("p2", name=[{"family": "Ortiz"}]))
    for n in range(1, 8):
        code = HR if n % 2 else "http://loinc.org|29463-7"
        system, _, value = code.partition("|")
        s.put(
            observation(
                f"o{n}",
                subject={"reference": f"Patient/p{2 - n % 2}"},
                code={"coding": [{"system": system, "code": value}]},
                effectiveDateTime=f"2024-01-0{n}",
            )
        )
    return s


def _plan(store: Store, rtype: str | None, query: str) -> SearchPlan:
    return parse(store.fhir.registry, rtype, parse_qsl(query, keep_blank_values=True))


def _summary(result: SearchResult) -> tuple[object, ...]:
    return (
        [(m.resource_type, m.id, m.version_id, m.content) for m in result.matches],
        result.total,
        result.next_cursor,
        result.previous_cursor,
    )


def _pages(store: Store, rtype: str | None, query: str, view: View) -> list[tuple[object, ...]]:
    """Every page of a search, following next links and then previous links back, each run both ways."""

    async def on_loop(plan: SearchPlan) -> SearchResult:
        return await run_search_on_loop(store.db, view, plan)

    pages = []
    cursor, direction = None, "next"
    while True:
        text = query if cursor is None else f"{query}&_cursor={cursor.encode()}"
        in_pool = store.search(rtype, text, view=view)
        on_the_loop = asyncio.run(on_loop(_plan(store, rtype, text)))
        assert _summary(on_the_loop) == _summary(in_pool), text
        pages.append(_summary(in_pool))
        cursor = in_pool.next_cursor if direction == "next" else in_pool.previous_cursor
        if cursor is None and direction == "next" and in_pool.previous_cursor is not None:
            cursor, direction = in_pool.previous_cursor, "previous"
        if cursor is None:
            return pages


@pytest.mark.parametrize(("rtype", "query"), QUERIES)
def test_a_search_on_the_loop_answers_as_in_the_thread_pool(store, rtype, query):
    pages = _pages(store, rtype, query, store.view)
    assert pages[0][0] or query.endswith(("nobody", "_summary=count", "_count=0"))


def test_the_first_search_of_a_shape_is_compiled_in_the_pool_and_answers_alike(store):
    search._BUILT.clear()
    search._DRIVER.clear()
    plan = _plan(store, "Observation", f"patient=p1&code={HR}&_sort=-date")
    first = asyncio.run(run_search_on_loop(store.db, store.view, plan))
    assert [m.id for m in first.matches] == ["o7", "o5", "o3", "o1"]
    assert first.total == 4
    again = asyncio.run(run_search_on_loop(store.db, store.view, _plan(store, "Observation", f"patient=p2&code={HR}")))
    assert again.matches == [] and again.total == 0


def test_a_sandbox_searched_on_the_loop_sees_its_own_writes_over_its_baseline(store, db):
    with db.write() as conn:
        conn.execute(
            insert(layers),
            [{"id": "trainee", "kind": "sandbox", "name": "Trainee", "baseline_id": "default", "created_at": "2026"}],
        )
    # Untouched, the sandbox sees its baseline (its overlay is probed once per type: nothing there yet).
    assert _pages(store, "Observation", "patient=p1&_sort=_id", SANDBOX)[0][1] == 4
    store.put(observation("o3", subject={"reference": "Patient/p2"}), SANDBOX)
    store.delete("Observation", "o5", SANDBOX)
    store.put(observation("o9", subject={"reference": "Patient/p1"}), SANDBOX)
    pages = _pages(store, "Observation", "patient=p1&_sort=_id&_count=1", SANDBOX)
    assert [page[0][0][1] for page in pages[:3]] == ["o1", "o7", "o9"]
    assert pages[0][1] == 3


def test_routes_run_a_known_search_shape_without_the_thread_pool_on_postgresql(client, app):
    """The pool's statements go through the engine's connections (its events see them); the loop's do not.
    SQLite keeps every search in the pool: there a statement on the loop would run inline, blocking it."""
    for n in range(3):
        client.post("/fhir/Observation", json=observation(f"x{n}", subject={"reference": "Patient/p1"}))
    seen: list[str] = []
    event.listen(app.state.db.engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
    url = "/fhir/Observation?patient=Patient/{}&_sort=-date&_count=2"
    first = client.get(url.format("p1")).json()
    assert first["total"] == 3 and len(first["entry"]) == 2
    assert any("FROM resources" in sql for sql in seen)  # the first of its shape: compiled and run in the pool
    next_page = next(link["url"] for link in first["link"] if link["relation"] == "next")
    assert len(client.get(next_page).json()["entry"]) == 1  # a page after a cursor: another shape
    seen.clear()
    second = client.get(url.format("p2")).json()
    assert second["total"] == 0
    again = client.get(next_page).json()
    assert len(again["entry"]) == 1 and [link["relation"] for link in again["link"]] == ["self", "previous"]
    searched_in_pool = [sql for sql in seen if "FROM resources" in sql]
    assert bool(searched_in_pool) == app.state.db.is_sqlite


def test_a_bad_search_is_refused_alike_on_the_loop(client):
    strict = client.get("/fhir/Observation?nonsense=1", headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400 and strict.json()["resourceType"] == "OperationOutcome"
    lenient = client.get("/fhir/Observation?nonsense=1").json()
    assert lenient["entry"][-1]["search"]["mode"] == "outcome"
    assert client.get("/fhir/Observation?_cursor=garbage").status_code == 400
    assert client.get("/fhir/Observation?date=notadate").status_code == 400


def test_on_postgresql_a_search_on_the_loop_is_parsed_once_and_planned_for_its_values(store, db):
    """Its statements are prepared on the server (the parse of a search's SQL was a sixth of PostgreSQL's work
    for it), and each run still gets a plan made for its values: a generic plan was ten times slower."""
    if db.is_sqlite:
        pytest.skip("server-side prepared statements are PostgreSQL's")
    search._BUILT.clear()
    search._DRIVER.clear()

    async def searches_then_what_was_prepared() -> tuple[list[tuple[object, ...]], str]:
        # The first compiles the shape in the pool; the other three run here.
        for patient_id in ("p1", "p1", "p2", "p1"):
            await run_search_on_loop(db, store.view, _plan(store, "Observation", f"patient={patient_id}&code={HR}"))
        prepared = await db.loop_rows(
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements", (), search=True
        )
        mode = await db.loop_rows("SHOW plan_cache_mode", (), search=True)
        return prepared, str(mode[0][0])

    prepared, mode = asyncio.run(searches_then_what_was_prepared())
    searches = [row for row in prepared if "sp_combo" in str(row[0])]
    assert len(searches) == 1
    assert searches[0][1:] == (0, 3)  # no generic plan; a custom plan for each of the three runs here
    assert mode == "force_custom_plan"
