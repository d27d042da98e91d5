"""Scopes are enforced on every FHIR interaction: the matrix of scope x interaction, on both backends.

Each scope gets a token from an EHR launch for Ann; every interaction then runs with it, reads first and
writes after, and what it answered (status, and for searches which resources came back) is compared with
the table.  Ann has a vital sign, a lab and a condition; Bob, another patient of the same sandbox, a vital.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from sandbox.auth.scopes import Access, InvalidScope, disallowed, parse_scope
from sandbox.store.database import Database
from sandbox.store.schema import resource_versions
from tests.sandbox.auth.smart import ADMIN, Chart, bearer, ehr_launch_token, fhir_base, make_chart, register

Observed = Any
Interaction = Callable[[TestClient, Chart, dict[str, str]], Observed]
BASE = fhir_base("smart")


def _names(chart: Chart) -> dict[str, str]:
    return {
        chart.ann: "ann",
        chart.bob: "bob",
        chart.ann_vital: "vital",
        chart.ann_lab: "lab",
        chart.ann_condition: "cond",
        chart.bob_vital: "bob_vital",
        chart.encounter: "enc",
        chart.practitioner: "prac",
    }


def _ids(chart: Chart, response: Any) -> Observed:
    if response.status_code != 200:
        return response.status_code
    names = _names(chart)
    return frozenset(names.get(e["resource"]["id"], "new") for e in response.json().get("entry", []))


def _obs(patient: str, code: str = "8867-4", category: str = "vital-signs") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
    }


def _bundle(kind: str, *resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [{"resource": r, "request": {"method": "POST", "url": r["resourceType"]}} for r in resources],
    }


def _transaction(c: TestClient, chart: Chart, h: dict[str, str]) -> Observed:
    r = c.post(BASE, json=_bundle("transaction", _obs(chart.ann, "1111-1"), _obs(chart.bob, "1111-1")), headers=h)
    written = c.get(f"{BASE}/Observation?code=1111-1", headers=ADMIN).json().get("total")
    return r.status_code, written


def _batch(c: TestClient, chart: Chart, h: dict[str, str]) -> Observed:
    r = c.post(BASE, json=_bundle("batch", _obs(chart.ann, "2222-2"), _obs(chart.bob, "2222-2")), headers=h)
    if r.status_code != 200:
        return r.status_code
    return tuple(e["response"]["status"].split()[0] for e in r.json()["entry"])


def _validate(c: TestClient, h: dict[str, str], resource: dict[str, Any]) -> Observed:
    """$validate runs the create for real and rolls it back: a refused write is reported, as an issue."""
    r = c.post(f"{BASE}/Observation/$validate?mode=create", json=resource, headers=h)
    return r.status_code, r.json()["issue"][0]["code"] if r.status_code == 200 else None


def _moved(chart: Chart) -> dict[str, Any]:
    return {**_obs(chart.bob), "id": chart.ann_vital}


INTERACTIONS: dict[str, Interaction] = {
    # reads
    "read ann": lambda c, ch, h: c.get(f"{BASE}/Patient/{ch.ann}", headers=h).status_code,
    "read bob": lambda c, ch, h: c.get(f"{BASE}/Patient/{ch.bob}", headers=h).status_code,
    "read vital": lambda c, ch, h: c.get(f"{BASE}/Observation/{ch.ann_vital}", headers=h).status_code,
    "read lab": lambda c, ch, h: c.get(f"{BASE}/Observation/{ch.ann_lab}", headers=h).status_code,
    "read bob vital": lambda c, ch, h: c.get(f"{BASE}/Observation/{ch.bob_vital}", headers=h).status_code,
    "vread lab": lambda c, ch, h: c.get(f"{BASE}/Observation/{ch.ann_lab}/_history/1", headers=h).status_code,
    "$meta lab": lambda c, ch, h: c.get(f"{BASE}/Observation/{ch.ann_lab}/$meta", headers=h).status_code,
    "search obs": lambda c, ch, h: _ids(ch, c.get(f"{BASE}/Observation", headers=h)),
    "search obs post": lambda c, ch, h: _ids(
        ch, c.post(f"{BASE}/Observation/_search", data={"_count": "50"}, headers=h)
    ),
    "search obs include": lambda c, ch, h: _ids(
        ch, c.get(f"{BASE}/Observation?_include=Observation:subject", headers=h)
    ),
    "search patient revinclude": lambda c, ch, h: _ids(
        ch, c.get(f"{BASE}/Patient?_revinclude=Observation:subject", headers=h)
    ),
    "search condition": lambda c, ch, h: _ids(ch, c.get(f"{BASE}/Condition", headers=h)),
    "search system": lambda c, ch, h: _ids(ch, c.get(f"{BASE}?_type=Observation,Condition", headers=h)),
    "history lab": lambda c, ch, h: c.get(f"{BASE}/Observation/{ch.ann_lab}/_history", headers=h).status_code,
    "history bob vital": lambda c, ch, h: c.get(f"{BASE}/Observation/{ch.bob_vital}/_history", headers=h).status_code,
    "history type": lambda c, ch, h: c.get(f"{BASE}/Observation/_history", headers=h).status_code,
    "everything ann": lambda c, ch, h: _ids(ch, c.get(f"{BASE}/Patient/{ch.ann}/$everything", headers=h)),
    "everything bob": lambda c, ch, h: c.get(f"{BASE}/Patient/{ch.bob}/$everything", headers=h).status_code,
    # writes
    "create ann obs": lambda c, ch, h: c.post(f"{BASE}/Observation", json=_obs(ch.ann), headers=h).status_code,
    "create bob obs": lambda c, ch, h: c.post(f"{BASE}/Observation", json=_obs(ch.bob), headers=h).status_code,
    "conditional create": lambda c, ch, h: (
        c.post(
            f"{BASE}/Observation", json=_obs(ch.ann, "3333-3"), headers={**h, "If-None-Exist": "code=3333-3"}
        ).status_code
    ),
    "validate create bob": lambda c, ch, h: _validate(c, h, _obs(ch.bob)),
    "update lab": lambda c, ch, h: (
        c.put(
            f"{BASE}/Observation/{ch.ann_lab}",
            json={**_obs(ch.ann, category="laboratory"), "id": ch.ann_lab},
            headers=h,
        ).status_code
    ),
    "patch lab": lambda c, ch, h: (
        c.patch(
            f"{BASE}/Observation/{ch.ann_lab}",
            content=b'[{"op": "replace", "path": "/status", "value": "amended"}]',
            headers={**h, "Content-Type": "application/json-patch+json"},
        ).status_code
    ),
    "transaction ann+bob": _transaction,
    "batch ann+bob": _batch,
    "delete bob vital": lambda c, ch, h: c.delete(f"{BASE}/Observation/{ch.bob_vital}", headers=h).status_code,
    "conditional delete lab": lambda c, ch, h: c.delete(f"{BASE}/Observation?_id={ch.ann_lab}", headers=h).status_code,
    "move vital to bob": lambda c, ch, h: (
        c.put(f"{BASE}/Observation/{ch.ann_vital}", json=_moved(ch), headers=h).status_code
    ),
}

F = frozenset
ALL_OBS = F({"vital", "lab", "bob_vital"})
# scope -> interaction -> what it answers.
EXPECTED: dict[str, dict[str, Observed]] = {
    "patient/*.rs": {
        "read ann": 200,
        "read bob": 403,
        "read vital": 200,
        "read lab": 200,
        "read bob vital": 403,
        "vread lab": 200,
        "$meta lab": 200,
        "search obs": F({"vital", "lab"}),
        "search obs post": F({"vital", "lab"}),
        "search obs include": F({"vital", "lab", "ann"}),
        "search patient revinclude": F({"ann", "vital", "lab"}),
        "search condition": F({"cond"}),
        "search system": F({"vital", "lab", "cond"}),
        "history lab": 200,
        "history bob vital": 403,
        "history type": 403,
        "everything ann": F({"ann", "vital", "lab", "cond", "enc"}),
        "everything bob": 403,
        "create ann obs": 403,
        "create bob obs": 403,
        "conditional create": 403,
        "validate create bob": (200, "forbidden"),
        "update lab": 403,
        "patch lab": 403,
        "transaction ann+bob": (403, 0),
        "batch ann+bob": ("403", "403"),
        "delete bob vital": 403,
        "conditional delete lab": 403,
        "move vital to bob": 403,
    },
    "patient/Observation.rs?category=vital-signs": {
        "read ann": 403,
        "read bob": 403,
        "read vital": 200,
        "read lab": 403,
        "read bob vital": 403,
        "vread lab": 403,
        "$meta lab": 403,
        "search obs": F({"vital"}),
        "search obs post": F({"vital"}),
        "search obs include": F({"vital"}),
        "search patient revinclude": 403,
        "search condition": 403,
        "search system": F({"vital"}),
        "history lab": 403,
        "history bob vital": 403,
        "history type": 403,
        "everything ann": 403,
        "everything bob": 403,
        "create ann obs": 403,
        "create bob obs": 403,
        "conditional create": 403,
        "validate create bob": (200, "forbidden"),
        "update lab": 403,
        "patch lab": 403,
        "transaction ann+bob": (403, 0),
        "batch ann+bob": ("403", "403"),
        "delete bob vital": 403,
        "conditional delete lab": 403,
        "move vital to bob": 403,
    },
    "patient/Patient.r patient/Observation.cruds": {
        "read ann": 200,
        "read bob": 403,
        "read vital": 200,
        "read lab": 200,
        "read bob vital": 403,
        "vread lab": 200,
        "$meta lab": 200,
        "search obs": F({"vital", "lab"}),
        "search obs post": F({"vital", "lab"}),
        "search obs include": F({"vital", "lab"}),
        "search patient revinclude": 403,
        "search condition": 403,
        "search system": F({"vital", "lab"}),
        "history lab": 200,
        "history bob vital": 403,
        "history type": 403,
        "everything ann": F({"ann", "vital", "lab"}),
        "everything bob": 403,
        "create ann obs": 201,
        "create bob obs": 403,
        "conditional create": 201,
        "validate create bob": (200, "forbidden"),
        "update lab": 200,
        "patch lab": 200,
        "transaction ann+bob": (403, 0),
        "batch ann+bob": ("201", "403"),
        "delete bob vital": 403,
        "conditional delete lab": 200,
        "move vital to bob": 403,
    },
    "patient/Observation.c": {
        "read ann": 403,
        "read bob": 403,
        "read vital": 403,
        "read lab": 403,
        "read bob vital": 403,
        "vread lab": 403,
        "$meta lab": 403,
        "search obs": 403,
        "search obs post": 403,
        "search obs include": 403,
        "search patient revinclude": 403,
        "search condition": 403,
        "search system": 403,
        "history lab": 403,
        "history bob vital": 403,
        "history type": 403,
        "everything ann": 403,
        "everything bob": 403,
        "create ann obs": 201,
        "create bob obs": 403,
        "conditional create": 403,
        "validate create bob": (200, "forbidden"),
        "update lab": 403,
        "patch lab": 403,
        "transaction ann+bob": (403, 0),
        "batch ann+bob": ("201", "403"),
        "delete bob vital": 403,
        "conditional delete lab": 403,
        "move vital to bob": 403,
    },
    "user/*.*": {
        "read ann": 200,
        "read bob": 200,
        "read vital": 200,
        "read lab": 200,
        "read bob vital": 200,
        "vread lab": 200,
        "$meta lab": 200,
        "search obs": ALL_OBS,
        "search obs post": ALL_OBS,
        "search obs include": ALL_OBS | {"ann", "bob"},
        "search patient revinclude": ALL_OBS | {"ann", "bob"},
        "search condition": F({"cond"}),
        "search system": ALL_OBS | {"cond"},
        "history lab": 200,
        "history bob vital": 200,
        "history type": 200,
        "everything ann": F({"ann", "vital", "lab", "cond", "enc"}),
        "everything bob": 200,
        "create ann obs": 201,
        "create bob obs": 201,
        "conditional create": 201,
        "validate create bob": (200, "informational"),
        "update lab": 200,
        "patch lab": 200,
        "transaction ann+bob": (200, 2),
        "batch ann+bob": ("201", "201"),
        "delete bob vital": 204,
        "conditional delete lab": 200,
        "move vital to bob": 200,
    },
}
# The v1 spelling of read access means the same as v2's rs.
EXPECTED["patient/*.read"] = EXPECTED["patient/*.rs"]


@pytest.mark.parametrize("scope", list(EXPECTED))
def test_scope_matrix(client: TestClient, scope: str) -> None:
    chart = make_chart(client)
    register(client, "matrix", "launch patient/*.cruds user/*.cruds", auto_approve=True)
    token = ehr_launch_token(client, chart, "matrix", "launch " + scope)
    headers = bearer(token["access_token"])
    observed = {name: run(client, chart, headers) for name, run in INTERACTIONS.items()}
    expected = EXPECTED[scope]
    assert set(expected) == set(INTERACTIONS)
    wrong = {name: (observed[name], expected[name]) for name in INTERACTIONS if observed[name] != expected[name]}
    assert wrong == {}, f"(observed, expected) for {scope}"


def test_refusals_are_operation_outcomes_that_say_why(client: TestClient) -> None:
    chart = make_chart(client)
    register(client, "matrix", "launch patient/*.cruds", auto_approve=True)
    headers = bearer(ehr_launch_token(client, chart, "matrix", "launch patient/Observation.rs")["access_token"])
    r = client.get(f"{BASE}/Condition", headers=headers)
    assert r.status_code == 403 and r.headers["content-type"].startswith("application/fhir+json")
    issue = r.json()["issue"][0]
    assert issue["code"] == "forbidden" and "search on Condition" in issue["diagnostics"]
    r = client.get(f"{BASE}/Observation/{chart.bob_vital}", headers=headers)
    assert "outside" in r.json()["issue"][0]["diagnostics"]


def test_smart_writes_are_attributed_to_the_client(client: TestClient, db: Database) -> None:
    chart = make_chart(client)
    register(client, "writer", "launch patient/*.cruds", auto_approve=True)
    headers = bearer(ehr_launch_token(client, chart, "writer", "launch patient/Observation.cruds")["access_token"])
    r = client.post(f"{BASE}/Observation", json=_obs(chart.ann), headers=headers)
    assert r.status_code == 201
    with db.read() as conn:
        row = conn.execute(
            select(resource_versions.c.actor, resource_versions.c.route).where(resource_versions.c.id == r.json()["id"])
        ).one()
    assert (row.actor, row.route) == ("client:writer", "smart")


def test_user_api_tokens_and_the_admin_token_are_not_scoped(client: TestClient) -> None:
    chart = make_chart(client)
    assert client.get(f"{BASE}/Observation/{chart.bob_vital}", headers=ADMIN).status_code == 200


# ---- scope parsing -------------------------------------------------------------------------------------------


def test_scope_grammar() -> None:
    v1 = parse_scope("patient/*.read")
    v2 = parse_scope("patient/Observation.rs?category=vital-signs")
    assert v1 is not None and v1.permissions == {"r", "s"} and v1.resource_type == "*"
    assert v2 is not None and v2.query == (("category", "vital-signs"),)
    assert parse_scope("openid") is None and parse_scope("launch/patient") is None
    for bad in (
        "patient/Observation.sr",
        "patient/Observation.rr",
        "patient/Foo.rs",
        "patients/*.rs",
        "banana",
        "patient/Observation.rs?",
        "patient/Observation.x",
    ):
        with pytest.raises(InvalidScope):
            parse_scope(bad)


def test_what_a_client_may_ask_for() -> None:
    assert disallowed(["patient/Observation.rs?category=laboratory", "launch"], ["patient/*.cruds", "launch"]) == []
    assert disallowed(["user/Observation.rs"], ["patient/*.cruds"]) == ["user/Observation.rs"]
    assert disallowed(["patient/Observation.rs"], ["patient/Observation.rs?category=laboratory"]) == [
        "patient/Observation.rs"
    ]
    assert disallowed(["openid"], ["launch"]) == ["openid"]


def test_access_adds_scopes_up() -> None:
    access = Access.of(["patient/Observation.rs?category=laboratory", "user/Observation.r"], "ann")
    assert access.ways("Observation", "r") is None  # the user/ scope reads every Observation
    ways = access.ways("Observation", "s")
    assert ways is not None and len(ways) == 1 and ways[0].patient == "ann"
    assert access.ways("Condition", "r") == ()
    assert Access.of(["patient/*.rs"], None).ways("Observation", "r") == ()  # no patient in context: nothing
