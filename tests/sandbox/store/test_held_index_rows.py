"""Index rows a bulk load holds back: kept or dropped with their unit, in before anything reads the index."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from sandbox.app import ensure_default_sandbox
from sandbox.fhir.interactions import Interactions
from sandbox.fhir.search_params import registry
from sandbox.fhir.values import instant_now
from sandbox.store.database import Database
from sandbox.store.layers import View
from sandbox.store.repository import (
    HELD_INDEX_ROWS,
    Actor,
    HeldIndexRows,
    IndexRowsHeld,
    Repository,
    prepare_creates,
)
from sandbox.store.schema import INDEX_TABLES

DEFAULT = View("default", ("default",))
LOADER = Actor("system:loader", "loader")


def patient(family: str) -> dict:
    return {"resourceType": "Patient", "name": [{"family": family}], "gender": "female"}


def index_rows(db: Database) -> list[tuple]:
    with db.read() as conn:
        return sorted(
            (kind, *row)
            for kind, table in INDEX_TABLES.items()
            for row in conn.execute(select(table).where(table.c.param != "_lastUpdated"))
        )


def test_held_rows_of_a_kept_unit_go_in_sorted_and_a_dropped_units_never(db: Database) -> None:
    ensure_default_sandbox(db)
    repo = Repository(registry())
    held = HeldIndexRows()
    with db.write() as conn:
        conn.info[HELD_INDEX_ROWS] = held
        try:
            held.begin()
            repo.create_many(conn, DEFAULT, [("Patient", "b", patient("Banda"))], LOADER)
            held.end(keep=True)
            held.begin()
            repo.create_many(conn, DEFAULT, [("Patient", "gone", patient("Gone"))], LOADER)
            held.end(keep=False)  # as when its savepoint is rolled back
            held.begin()
            repo.create_many(conn, DEFAULT, [("Patient", "a", patient("Abara"))], LOADER)
            held.end(keep=True)
            assert all(conn.execute(select(t)).first() is None for t in INDEX_TABLES.values())
            with pytest.raises(IndexRowsHeld):
                held.check()
            held.insert(conn)
            held.check()  # nothing is held any more
        finally:
            conn.info.pop(HELD_INDEX_ROWS)
    rows = index_rows(db)
    assert {row[3] for row in rows} == {"a", "b"}  # resource_id; "gone" left nothing

    # The same rows as storing each at once.
    with db.write() as conn:
        for table in INDEX_TABLES.values():
            conn.execute(table.delete())
        for rid, family in (("b", "Banda"), ("a", "Abara")):
            prepared = prepare_creates(repo.registry, "default", [("Patient", rid, patient(family))], instant_now())
            for kind, (columns, found) in prepared.index_rows.items():
                conn.execute(INDEX_TABLES[kind].insert(), [dict(zip(columns, row, strict=True)) for row in found])
    assert index_rows(db) == rows


def test_nothing_reads_or_rewrites_the_index_while_rows_are_held(db: Database) -> None:
    ensure_default_sandbox(db)
    reg = registry()
    repo = Repository(reg)
    fhir = Interactions(repo, reg)
    held = HeldIndexRows()
    with db.write() as conn:
        conn.info[HELD_INDEX_ROWS] = held
        try:
            held.begin()
            repo.create_many(conn, DEFAULT, [("Patient", "p", patient("Ng"))], LOADER)
            held.end(keep=True)
            with pytest.raises(IndexRowsHeld):
                fhir.search(conn, DEFAULT, "Patient", [("family", "Ng")])
            with pytest.raises(IndexRowsHeld):
                fhir.update(conn, DEFAULT, "Patient", "p", {**patient("Ng"), "id": "p"}, LOADER)
            held.insert(conn)
            assert [s.id for s in fhir.search(conn, DEFAULT, "Patient", [("family", "Ng")]).matches] == ["p"]
        finally:
            conn.info.pop(HELD_INDEX_ROWS)


def test_rows_of_one_kind_in_another_column_order_are_merged_by_name(db: Database) -> None:
    ensure_default_sandbox(db)
    held = HeldIndexRows()
    names = ("layer_id", "resource_type", "resource_id", "param", "grp")
    held.begin()
    held.hold({"string": ((*names, "value", "exact"), [("default", "Patient", "1", "family", 0, "ng", "Ng")])})
    held.hold({"string": ((*names, "exact", "value"), [("default", "Patient", "2", "family", 0, "Abe", "abe")])})
    held.end(keep=True)
    with db.write() as conn:
        held.insert(conn)
    with db.read() as conn:
        table = INDEX_TABLES["string"]
        found = conn.execute(select(table.c.resource_id, table.c.value, table.c.exact)).all()
    assert sorted(tuple(row) for row in found) == [("1", "ng", "Ng"), ("2", "abe", "Abe")]
