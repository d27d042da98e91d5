"""``ehr-sandbox db reindex``: every current resource's index rows worked out again, and nothing else changed."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import delete, func, select

from sandbox.cli import main
from sandbox.fhir.interactions import Interactions
from sandbox.fhir.search_params import registry
from sandbox.store import reindex as reindexing
from sandbox.store import sandboxes
from sandbox.store.database import Database
from sandbox.store.layers import View, resolve_view
from sandbox.store.reindex import reindex
from sandbox.store.repository import Actor, Repository
from sandbox.store.schema import INDEX_TABLES, outbox, resource_versions, sp_combo, sp_token

LOADER = Actor("loader", "loader")
P1 = {"id": "p1"}


def _obs(rid: str, patient: str, code: str) -> dict[str, Any]:
    coding = [{"system": "http://loinc.org", "code": code}]
    return {"resourceType": "Observation", "id": rid, "status": "final", "code": {"coding": coding}} | {
        "subject": {"reference": f"Patient/{patient}"}
    }


@pytest.fixture
def stored(db: Database) -> tuple[Repository, View]:
    """A baseline of two Observations and a Patient, and a sandbox over it that changes one and deletes another."""
    reg = registry()
    fhir = Interactions(Repository(reg), reg)
    with db.write() as conn:
        base = sandboxes.create_baseline(conn, "B", baseline_id="b").id
        view = sandboxes.baseline_view_for_loading(conn, base)
        for resource in (_obs("o1", "p1", "8867-4"), _obs("o2", "p1", "8310-5"), {"resourceType": "Patient"} | P1):
            fhir.update(conn, view, resource["resourceType"], resource["id"], resource, LOADER)
        sandbox = resolve_view(conn, sandboxes.create_sandbox(conn, "S", base, sandbox_id="s").id)
        fhir.update(conn, sandbox, "Observation", "o1", _obs("o1", "p2", "8867-4"), LOADER)
        fhir.delete(conn, sandbox, "Observation", "o2", LOADER)
    return fhir.repo, sandbox


def _index_rows(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    with db.read() as conn:
        return {kind: sorted(tuple(row) for row in conn.execute(select(table))) for kind, table in INDEX_TABLES.items()}


def _counts(db: Database) -> tuple[int, int]:
    with db.read() as conn:
        versions = conn.execute(select(func.count()).select_from(resource_versions)).scalar_one()
        events = conn.execute(select(func.count()).select_from(outbox)).scalar_one()
    return versions, events


def test_reindex_brings_back_rows_an_earlier_release_did_not_write_and_changes_nothing_else(db, stored):
    repo, sandbox = stored
    written, before = _index_rows(db), _counts(db)
    with db.write() as conn:
        conn.execute(delete(sp_combo))  # as a process of the release before 0006 left them
        conn.execute(delete(sp_token).where(sp_token.c.resource_id == "o1", sp_token.c.layer_id == "s"))
    done = reindex(db, repo, batch=1)  # one resource a transaction: the paging is exercised too
    assert (done.resources, done.layers) == (4, 2)  # o1, o2 and p1 in the baseline; o1 in the sandbox
    assert _index_rows(db) == written
    assert _counts(db) == before  # no version, no outbox event
    with db.read() as conn:
        found = repo.current(conn, sandbox, "Observation", "o1")
        assert found is not None and found.version_id == 2


def test_reindex_of_some_types_leaves_the_others_alone(db, stored):
    repo, _ = stored
    with db.write() as conn:
        conn.execute(delete(sp_combo))
        conn.execute(delete(sp_token).where(sp_token.c.resource_type == "Patient"))
    done = reindex(db, repo, types=["Patient"])
    assert (done.resources, done.layers) == (1, 1)
    rows = _index_rows(db)
    assert rows["combo"] == [] and any(row[1] == "Patient" for row in rows["token"])


def test_a_sandbox_deleted_while_the_reindex_runs_is_passed_over(db, stored, monkeypatch):
    """The layers are listed first: one deleted before its turn has nothing left to index, and the others go on."""
    repo, _ = stored
    written = _index_rows(db)
    with db.write() as conn:
        conn.execute(delete(sp_combo))
    real = reindexing._reindex_layer

    def deleted_first(db_: Database, repo_: Repository, layer_id: str, types: Any, batch: int) -> int:
        if layer_id == "s":
            with db.write() as conn:
                sandboxes.delete_sandbox(conn, "s")
        return real(db_, repo_, layer_id, types, batch)

    monkeypatch.setattr(reindexing, "_reindex_layer", deleted_first)
    done = reindex(db, repo, batch=1)
    assert (done.resources, done.layers) == (3, 1)  # the baseline's o1, o2 and p1
    assert _index_rows(db) == {kind: [row for row in rows if row[0] != "s"] for kind, rows in written.items()}


def test_the_command_says_what_it_did_and_refuses_an_unknown_type(db, stored, monkeypatch, capsys):
    monkeypatch.setenv("EHR_SANDBOX_DATABASE_URL", db.url)
    written = _index_rows(db)
    with db.write() as conn:
        conn.execute(delete(sp_combo))
    assert main(["db", "reindex", "--type", "Observation", "--type", "Nonsense"]) == 2
    assert capsys.readouterr().err == "ehr-sandbox: unknown resource type 'Nonsense'\n"
    assert _index_rows(db)["combo"] == []  # refused before anything was done
    assert main(["db", "reindex", "--type", "Observation"]) == 0
    assert capsys.readouterr().out == "reindexed 3 resources in 2 layers\n"
    assert _index_rows(db) == written
