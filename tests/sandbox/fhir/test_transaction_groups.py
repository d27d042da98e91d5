"""Group commit of planned transaction Bundles on SQLite (``bundle_routes.TransactionWriter``): the ones that
arrive while a group is being written go together in the next group, one database transaction, each Bundle
in a savepoint of its own and answered as if it had run alone."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sandbox.fhir.bundle_routes import Planned, Written
from sandbox.store.database import Database
from tests.sandbox.auth.smart import ADMIN, Chart, bearer, ehr_launch_token, fhir_base, make_chart, register
from tests.sandbox.held_batches import HeldBatches

BASE = fhir_base("smart")


def held_groups(client: TestClient) -> HeldBatches[Planned, Written]:
    """The app's transaction groups held (``tests.sandbox.held_batches``)."""
    return HeldBatches(client.app.state.transactions.batches)  # type: ignore[attr-defined]


@pytest.fixture
def chart(client: TestClient, db: Database) -> Chart:
    if not db.is_sqlite:
        pytest.skip("PostgreSQL writes each transaction in its own database transaction, side by side")
    return make_chart(client)


@pytest.fixture
def senders() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        yield pool


def observation(patient: str, value: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "valueQuantity": {"value": value, "unit": "/min"},
    }


def visit(patient: str, *values: int) -> dict[str, Any]:
    """A planned transaction: an Encounter and Observations that refer to it by ``urn:uuid:``."""
    encounter = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient}"},
    }
    entries = [{"fullUrl": "urn:uuid:enc", "resource": encounter, "request": {"method": "POST", "url": "Encounter"}}]
    for value in values:
        resource = {**observation(patient, value), "encounter": {"reference": "urn:uuid:enc"}}
        entries.append({"resource": resource, "request": {"method": "POST", "url": "Observation"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def heart_rates(client: TestClient) -> list[int]:
    r = client.get(f"{BASE}/Observation", params={"code": "8867-4", "_count": 100}, headers=ADMIN)
    assert r.status_code == 200, r.text
    resources = [e["resource"] for e in r.json().get("entry", [])]
    return sorted(o["valueQuantity"]["value"] for o in resources if "valueQuantity" in o)  # the chart's have none


def post(client: TestClient, bundle: dict[str, Any], headers: dict[str, str]) -> Any:
    return client.post(BASE, json=bundle, headers=headers)


def test_transactions_arriving_together_are_written_in_one_group_each_answered_with_its_own(
    client: TestClient, chart: Chart, senders: ThreadPoolExecutor
) -> None:
    before = heart_rates(client)
    held = held_groups(client)
    first = senders.submit(post, client, visit(chart.ann, 1), ADMIN)
    held.wait_for(lambda: held.sizes == [1])
    later = [senders.submit(post, client, visit(chart.ann, 10 * n, 10 * n + 1), ADMIN) for n in range(1, 4)]
    held.wait_for(lambda: held.batches.waiting == 3)
    assert not first.done()  # no response before its group has committed

    held.released.set()
    responses = [first.result(20)] + [f.result(20) for f in later]

    assert held.sizes == [1, 3]
    assert [r.status_code for r in responses] == [200] * 4
    for response, values in zip(responses, [[1], [10, 11], [20, 21], [30, 31]], strict=True):
        entries = response.json()["entry"]
        assert [e["response"]["status"] for e in entries] == ["201 Created"] * (1 + len(values))
        encounter = entries[0]["resource"]["id"]
        observations = [e["resource"] for e in entries[1:]]
        # Each response holds its own Bundle's resources, its references rewritten to its own Encounter.
        assert [o["valueQuantity"]["value"] for o in observations] == values
        assert {o["encounter"]["reference"] for o in observations} == {f"Encounter/{encounter}"}
        assert client.get(f"{BASE}/Encounter/{encounter}", headers=ADMIN).status_code == 200
    assert heart_rates(client) == sorted([*before, 1, 10, 11, 20, 21, 30, 31])


def test_a_transaction_failing_in_a_group_rolls_back_alone_and_gets_its_own_outcome(
    client: TestClient, chart: Chart, senders: ThreadPoolExecutor
) -> None:
    # A token that may write Ann's Observations only: a Bundle that also writes one of Bob's is planned
    # like any other (planning needs no database, nor the token's scopes), and fails when it is written.
    register(client, "writer", "launch patient/*.cruds", auto_approve=True)
    token = ehr_launch_token(client, chart, "writer", "launch patient/Patient.r patient/Observation.cruds")
    ann_only = bearer(token["access_token"])
    ann_and_bob = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": observation(chart.ann, 50), "request": {"method": "POST", "url": "Observation"}},
            {"resource": observation(chart.bob, 51), "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    ann_obs = {**ann_and_bob, "entry": ann_and_bob["entry"][:1]}
    before = heart_rates(client)

    held = held_groups(client)
    first = senders.submit(post, client, visit(chart.ann, 1), ADMIN)
    held.wait_for(lambda: held.sizes == [1])
    group: list[Future[Any]] = [
        senders.submit(post, client, visit(chart.ann, 40), ADMIN),
        senders.submit(post, client, ann_and_bob, ann_only),
        senders.submit(post, client, ann_obs, ann_only),
    ]
    held.wait_for(lambda: held.batches.waiting == 3)
    held.released.set()
    responses = [first.result(20)] + [f.result(20) for f in group]

    assert held.sizes == [1, 3]
    assert [r.status_code for r in responses] == [200, 200, 403, 200]
    failed = responses[2].json()
    assert failed["resourceType"] == "OperationOutcome" and failed["issue"][0]["code"] == "forbidden"
    # Neither of the failed Bundle's Observations was written (Ann's went before Bob's); the Bundles before
    # and after it in the group were, and the token's Observation is attributed to its own Bundle.
    assert heart_rates(client) == sorted([*before, 1, 40, 50])
    assert responses[3].json()["entry"][0]["resource"]["valueQuantity"]["value"] == 50


def test_a_lone_transaction_goes_at_once_in_a_group_of_one(client: TestClient, chart: Chart) -> None:
    held = held_groups(client)
    held.released.set()
    r = post(client, visit(chart.ann, 7), ADMIN)
    assert r.status_code == 200 and held.sizes == [1]


def test_bundles_the_planner_does_not_take_are_not_grouped(client: TestClient, chart: Chart) -> None:
    held = held_groups(client)
    held.released.set()
    conditional = visit(chart.ann, 8)
    conditional["entry"][1]["request"]["ifNoneExist"] = "code=8867-4&value-quantity=8"
    batch = {**visit(chart.ann, 9), "type": "batch"}
    del batch["entry"][1]["resource"]["encounter"]

    assert post(client, conditional, ADMIN).status_code == 200
    assert post(client, batch, ADMIN).status_code == 200
    assert held.sizes == []
    assert heart_rates(client).count(8) == 1 and heart_rates(client).count(9) == 1


def test_stopping_the_app_waits_for_the_group_being_written_before_closing_the_database(
    client: TestClient, chart: Chart, db: Database, senders: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    held = held_groups(client)
    apply, dispose = held.apply, db.dispose

    def write_and_note(group: Sequence[Planned]) -> list[Written]:
        written = apply(group)
        events.append("written")
        return written

    def note_and_dispose() -> None:
        events.append("disposed")
        dispose()

    held.apply = write_and_note
    monkeypatch.setattr(db, "dispose", note_and_dispose)
    first = senders.submit(post, client, visit(chart.ann, 3), ADMIN)
    held.wait_for(lambda: held.sizes == [1])

    stopping = senders.submit(client.__exit__, None, None, None)  # the app's shutdown, as the server stopping
    time.sleep(0.2)
    held.released.set()
    stopping.result(20)

    assert first.result(20).status_code == 200
    assert events == ["written", "disposed"]
