"""Transaction plans: a Bundle's creates worked out without a database, used only where they are exactly right."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import orjson
import pytest
from sqlalchemy import select

import sandbox.fhir.transaction as transaction
from sandbox.app import ensure_default_sandbox
from sandbox.fhir.context import FhirContext
from sandbox.fhir.interactions import Interactions
from sandbox.fhir.outcome import FhirError
from sandbox.fhir.search_params import registry
from sandbox.fhir.transaction import BundleProcessor, TransactionPlan
from sandbox.fhir.transaction_plan import plan_transaction
from sandbox.fhir.values import instant_now
from sandbox.store.database import Database
from sandbox.store.layers import View
from sandbox.store.repository import Actor, Repository
from sandbox.store.schema import INDEX_TABLES, resource_versions, resources

DEFAULT = View("default", ("default",))
ACTOR = Actor("system:test", "loader")
BASE = "http://localhost/fhir"
CODE = {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}


def observation(subject: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": CODE, "subject": {"reference": subject}, **extra}


def chart() -> dict[str, Any]:
    """A Bundle like our generator's: PUTs with client ids, urn:uuid references, and a POST."""
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1970-02-03"}
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:p", "resource": patient, "request": {"method": "PUT", "url": "Patient/p1"}},
            {
                "fullUrl": "urn:uuid:o",
                "resource": {
                    **observation("urn:uuid:p"),
                    "id": "o1",
                    "valueQuantity": {"value": Decimal("72.50"), "unit": "/min"},
                },
                "request": {"method": "PUT", "url": "Observation/o1"},
            },
            {"resource": observation("urn:uuid:p"), "request": {"method": "POST", "url": "Observation"}},
        ],
    }


@pytest.fixture
def ready(db: Database) -> Database:
    ensure_default_sandbox(db)
    return db


def context(db: Database) -> FhirContext:
    reg = registry()
    return FhirContext(db, Interactions(Repository(reg), reg), DEFAULT, ACTOR, BASE)


def plan(bundle: dict[str, Any]) -> TransactionPlan | None:
    return plan_transaction(copy.deepcopy(bundle), registry(), DEFAULT, ACTOR, BASE, instant_now())


def run(db: Database, bundle: dict[str, Any], plan: TransactionPlan | None) -> dict[str, Any]:
    return BundleProcessor(context(db), "minimal", plan=plan).run(copy.deepcopy(bundle))


def contents(db: Database) -> dict[str, dict[str, Any]]:
    with db.read() as conn:
        rows = conn.execute(select(resources.c.resource_type, resources.c.id, resources.c.content)).all()
    found = {}
    for row in rows:
        body = orjson.loads(row.content)
        del body["meta"]["lastUpdated"]
        found[f"{row.resource_type}/{row.id}"] = body
    return found


def index_rows(db: Database) -> list[str]:
    with db.read() as conn:
        return sorted(
            repr((kind, dict(row)))
            for kind, table in INDEX_TABLES.items()
            for row in conn.execute(select(table).where(table.c.param != "_lastUpdated")).mappings()
        )


def count_prepares(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    prepare = transaction.prepare_creates

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return prepare(*args, **kwargs)

    monkeypatch.setattr(transaction, "prepare_creates", counted)
    return calls


def test_a_planned_bundle_stores_what_an_unplanned_one_stores(
    ready: Database, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = chart()
    planned = plan(bundle)
    assert planned is not None
    prepares = count_prepares(monkeypatch)
    run(ready, bundle, planned)
    assert prepares == []  # every chunk came from the plan
    post_id = planned.post_ids[2]
    with_plan, with_plan_index = contents(ready), index_rows(ready)
    with ready.read() as conn:
        stored = conn.execute(select(resources.c.content).where(resources.c.id == "o1")).scalar_one()
    assert b'"value":72.50' in stored  # decimals as the client wrote them

    other = Database(f"sqlite:///{tmp_path_factory.mktemp('unplanned') / 'db.sqlite'}")
    other.create_schema()
    ensure_default_sandbox(other)
    run(other, bundle, None)
    without, without_index = contents(other), index_rows(other)
    other.dispose()
    assert prepares != []
    # The POST's id is the server's choice: the plan's in one, a new one in the other.
    assert set(with_plan) == {"Patient/p1", "Observation/o1", f"Observation/{post_id}"}
    [other_key] = [k for k in without if k not in ("Patient/p1", "Observation/o1")]
    other_id = other_key.split("/")[1]
    without[f"Observation/{post_id}"] = {**without.pop(other_key), "id": post_id}
    assert with_plan == without
    assert with_plan["Observation/o1"]["subject"] == {"reference": "Patient/p1"}
    assert sorted(r.replace(other_id, post_id) for r in without_index) == with_plan_index


def test_a_planned_put_whose_resource_exists_is_an_update_not_a_conflict(ready: Database) -> None:
    bundle = chart()
    run(ready, bundle, None)
    planned = plan(bundle)  # planned as creates, as if nothing were stored
    assert planned is not None
    changed = copy.deepcopy(bundle)
    changed["entry"][0]["resource"]["gender"] = "male"
    planned_changed = plan(changed)
    response = run(ready, changed, planned_changed)
    statuses = [e["response"]["status"] for e in response["entry"]]
    assert statuses == ["200 OK", "200 OK", "201 Created"]
    with ready.read() as conn:
        versions = conn.execute(select(resource_versions.c.version_id).where(resource_versions.c.id == "p1")).scalars()
        assert sorted(versions) == [1, 2]
    assert contents(ready)["Patient/p1"]["gender"] == "male"


@pytest.mark.parametrize(
    "entry",
    [
        {"request": {"method": "DELETE", "url": "Patient/gone"}},
        {"request": {"method": "GET", "url": "Patient/p1"}},
        {
            "resource": {"resourceType": "Patient"},
            "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:mrn|1"},
        },
        {"resource": {"resourceType": "Patient", "gender": "male"}, "request": {"method": "PUT", "url": "Patient?x=1"}},
        {"resource": observation("Patient?identifier=urn:mrn|1"), "request": {"method": "POST", "url": "Observation"}},
    ],
    ids=["delete", "read", "conditional-create", "conditional-update", "conditional-reference"],
)
def test_no_plan_for_what_depends_on_the_database(entry: dict[str, Any]) -> None:
    bundle = chart()
    bundle["entry"].append(entry)
    assert plan(bundle) is None


def test_no_plan_for_a_bundle_that_fails_and_the_processor_reports_the_same_error(ready: Database) -> None:
    bundle = chart()
    bundle["entry"][1]["resource"]["status"] = "done-ish"
    assert plan(bundle) is None
    with pytest.raises(FhirError) as raised:
        run(ready, bundle, None)
    assert raised.value.status == 422 and "Bundle.entry[1]" in raised.value.issues[0].diagnostics
    assert contents(ready) == {}


def test_no_plan_for_a_batch_or_for_something_that_is_no_bundle() -> None:
    assert plan({**chart(), "type": "batch"}) is None
    assert plan({"resourceType": "Patient"}) is None


def test_rows_prepared_for_another_layer_are_refused(ready: Database) -> None:
    planned = plan_transaction(chart(), registry(), View("elsewhere", ("elsewhere",)), ACTOR, BASE, instant_now())
    assert planned is not None
    with pytest.raises(ValueError, match="cannot go into 'default'"):
        run(ready, chart(), planned)
    assert contents(ready) == {}


@pytest.mark.parametrize(
    "entry",
    [
        {"request": {"method": "DELETE", "url": "Patient/gone"}},
        {"request": {"method": "GET", "url": "Patient/p1"}},
        {"resource": {"resourceType": "Patient"}, "request": {"method": "PUT", "url": "Patient?identifier=x|1"}},
        {
            "resource": {"resourceType": "Patient", "id": "p2"},
            "request": {"method": "PUT", "url": "Patient/p2", "ifMatch": 'W/"1"'},
        },
    ],
    ids=["delete", "read", "conditional-update", "if-match"],
)
def test_the_planner_gives_up_before_validating_anything_when_an_entry_needs_the_database(
    monkeypatch: pytest.MonkeyPatch, entry: dict[str, Any]
) -> None:
    validated: list[str] = []
    validate = transaction.validate

    def counted(resource: Any, expected: str | None = None) -> Any:
        validated.append(str(expected))
        return validate(resource, expected)

    monkeypatch.setattr(transaction, "validate", counted)
    bundle = chart()
    bundle["entry"].append(entry)
    assert plan(bundle) is None
    assert validated == ["Bundle"]  # the Bundle around the entries, none of their resources
