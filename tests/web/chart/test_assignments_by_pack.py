"""My assignments offers the task packs assigned to the trainee's cohort; every built-in pack only when the
cohort has none assigned; and a task already attempted stays listed with its attempt."""

from __future__ import annotations

import re

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import delete

from sandbox.accounts.cohorts import assign_pack, pack_ids
from sandbox.demo import Demo
from sandbox.store.schema import cohort_packs
from tasks.library import Library


def listed(client: TestClient) -> set[str]:
    page = client.get("/assignments")
    assert page.status_code == 200
    return set(re.findall(r'data-task="([^"]+)"', page.text))


def packs_of(refs: set[str]) -> set[str]:
    return {ref.split("/")[0] for ref in refs}


def assign_only(app: FastAPI, cohort_id: str, packs: list[str]) -> None:
    with app.state.db.write() as conn:
        conn.execute(delete(cohort_packs).where(cohort_packs.c.cohort_id == cohort_id))
        for pack in packs:
            assign_pack(conn, cohort_id, pack)
        assert pack_ids(conn, cohort_id) == packs


def test_a_cohort_with_one_pack_offers_only_that_packs_tasks(
    client: TestClient, app: FastAPI, demo: Demo, ada: str, ada_sandbox: str
) -> None:
    everything = listed(client)  # the demo cohort has every built-in pack
    assert packs_of(everything) == set(Library.builtin().packs)
    assign_only(app, demo.cohort_id, ["core-clinical"])
    only_core = listed(client)
    assert only_core and packs_of(only_core) == {"core-clinical"}
    assert only_core == {ref for ref in everything if ref.startswith("core-clinical/")}


def test_a_task_already_attempted_stays_listed_when_its_pack_is_not_assigned(
    client: TestClient, app: FastAPI, demo: Demo, ada: str, ada_sandbox: str
) -> None:
    other = next(ref for ref in listed(client) if not ref.startswith("core-clinical/"))
    start = {"csrf_token": ada, "sandbox": ada_sandbox, "task": other}
    assert client.post("/assignments/start", data=start, follow_redirects=False).status_code == 303
    assign_only(app, demo.cohort_id, ["core-clinical"])
    now = listed(client)
    assert other in now and packs_of(now) == {"core-clinical", other.split("/")[0]}


def test_a_cohort_with_no_pack_assigned_offers_every_built_in_pack(
    client: TestClient, app: FastAPI, demo: Demo, ada: str
) -> None:
    everything = listed(client)
    assign_only(app, demo.cohort_id, [])
    assert listed(client) == everything
