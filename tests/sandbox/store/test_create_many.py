"""Repository.create_many stores exactly what Repository.write stores for the same creates, in fewer statements."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from sandbox.app import ensure_default_sandbox
from sandbox.fhir.outcome import FhirError
from sandbox.fhir.search_params import registry
from sandbox.store import sandboxes
from sandbox.store.layers import View
from sandbox.store.repository import Actor, Repository
from sandbox.store.schema import INDEX_TABLES, outbox, resource_versions, resources

DEFAULT = View("default", ("default",))
LOADER = Actor("client:loader", "fhir-api")
OBSERVATION = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
    "subject": {"reference": "Patient/p1"},
    "effectiveDateTime": "2024-01-02T10:00:00Z",
    "valueQuantity": {"value": 72, "unit": "/min"},
}
PATIENT = {"resourceType": "Patient", "name": [{"family": "Ng"}], "gender": "female"}


@pytest.fixture
def repo(db) -> Repository:
    ensure_default_sandbox(db)
    return Repository(registry())


def _stored_rows(conn, rid: str) -> dict:
    """Every row the store holds about one resource, without the columns that differ by nature (time, seq)."""
    index = {}
    for kind, table in INDEX_TABLES.items():
        rows = conn.execute(select(table).where(table.c.resource_id == rid)).mappings().all()
        index[kind] = sorted(repr({k: v for k, v in row.items() if k != "resource_id"}) for row in rows)
    current = conn.execute(select(resources.c.version_id, resources.c.deleted).where(resources.c.id == rid)).one()
    version = conn.execute(
        select(resource_versions.c.method, resource_versions.c.actor, resource_versions.c.route).where(
            resource_versions.c.id == rid
        )
    ).one()
    event = conn.execute(
        select(outbox.c.action, outbox.c.version_id, outbox.c.actor).where(outbox.c.resource_id == rid)
    ).one()
    return {"current": tuple(current), "version": tuple(version), "event": tuple(event), "index": index}


def test_create_many_stores_the_same_rows_as_write(db, repo):
    with db.write() as conn:
        repo.write(conn, DEFAULT, OBSERVATION, LOADER, rtype="Observation", rid="by-write", method="POST")
        many = repo.create_many(
            conn, DEFAULT, [("Observation", "by-many", OBSERVATION), ("Patient", "p-many", PATIENT)], LOADER
        )
    assert [(s.resource_type, s.id, s.version_id, s.method, s.actor) for s in many] == [
        ("Observation", "by-many", 1, "POST", "client:loader"),
        ("Patient", "p-many", 1, "POST", "client:loader"),
    ]
    with db.read() as conn:
        assert _stored_rows(conn, "by-many") == _stored_rows(conn, "by-write")
        assert _stored_rows(conn, "by-many")["index"]["token"], "the index rows were written"
        stored = repo.current(conn, DEFAULT, "Observation", "by-many")
        activity = sandboxes.get_layer(conn, "default", "sandbox").last_activity
    assert stored is not None and stored.content == many[0].content
    assert b'"id":"by-many","meta":{"versionId":"1"' in stored.content
    assert activity == many[0].last_updated


def test_create_many_refuses_an_id_that_exists(db, repo):
    with db.write() as conn:
        repo.write(conn, DEFAULT, PATIENT, LOADER, rtype="Patient", rid="taken", method="POST")
    with pytest.raises(FhirError) as raised, db.write() as conn:
        repo.create_many(conn, DEFAULT, [("Patient", "fresh", PATIENT), ("Patient", "taken", PATIENT)], LOADER)
    assert raised.value.status == 409
    with db.read() as conn:
        assert repo.current(conn, DEFAULT, "Patient", "fresh") is None
