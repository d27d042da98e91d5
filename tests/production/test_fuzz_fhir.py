"""Fuzzing the FHIR API from its own OpenAPI document (schemathesis): whatever a client sends, no 5xx, and a
request the server rejects writes nothing.

A quick profile here (a few examples per operation, ``EHR_SANDBOX_FUZZ_EXAMPLES`` raises it); the
``/sandboxes/{sandbox_id}/fhir`` routes run the same handlers as ``/fhir``, so the default sandbox's
operations cover both.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from sqlalchemy import func, select

from sandbox.store.database import Database
from sandbox.store.schema import resource_versions

EXAMPLES = int(os.environ.get("EHR_SANDBOX_FUZZ_EXAMPLES", "3"))


@pytest.fixture
def fhir_schema(app):  # type: ignore[no-untyped-def]
    return schemathesis.openapi.from_asgi("/openapi.json", app).include(path_regex="^/fhir")


schema = schemathesis.pytest.from_fixture("fhir_schema")


def _writes(db: Database) -> int:
    with db.read() as conn:
        return conn.execute(select(func.count()).select_from(resource_versions)).scalar_one()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_request_makes_a_5xx_or_a_write_it_was_refused(case, db: Database) -> None:  # type: ignore[no-untyped-def]
    before = _writes(db)
    response = case.call()
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
    if response.status_code >= 400:
        assert _writes(db) == before, f"{case.method} {case.formatted_path} was refused but wrote"
