"""Input the database cannot store (found by fuzzing: NUL characters were a 500 on PostgreSQL) is refused with
a clear 4xx on both backends, and changes nothing."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from sandbox.store.database import Database
from sandbox.store.schema import resource_versions, users


def _count(db: Database, table) -> int:  # type: ignore[no-untyped-def]
    with db.read() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


@pytest.mark.parametrize(
    "url",
    [
        "/fhir/Patient?name=%00",
        "/fhir/Patient?_id=a%00b",
        "/fhir/Patient?identifier=x%00|y",
        "/fhir/Patient/%00",
        "/fhir/Patient/a%00/_history",
    ],
)
def test_nul_in_a_fhir_url_is_a_400_outcome(client: TestClient, url: str) -> None:
    answer = client.get(url)
    assert answer.status_code == 400
    assert answer.json()["issue"][0]["code"] == "invalid" and "NUL" in answer.json()["issue"][0]["diagnostics"]


def test_nul_in_a_conditional_create_header_is_a_400(client: TestClient, db: Database) -> None:
    answer = client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers={"If-None-Exist": "name=%00"})
    assert answer.status_code == 400 and _count(db, resource_versions) == 0


def test_nul_in_a_resource_is_a_422_at_its_location(client: TestClient, db: Database) -> None:
    answer = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "a\u0000b"}]})
    assert answer.status_code == 422
    [issue] = answer.json()["issue"]
    assert issue["expression"] == ["Patient.name[0].family"]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
            {
                "resource": {"resourceType": "Patient", "name": [{"given": ["\u0000"]}]},
                "request": {"method": "POST", "url": "Patient"},
            },
        ],
    }
    assert client.post("/fhir", json=bundle).status_code == 422
    assert _count(db, resource_versions) == 0  # not even the good entry: a transaction is all or nothing


def test_nul_in_admin_json_and_web_forms_is_refused_not_a_crash(
    client: TestClient, db: Database, admin_headers: dict[str, str]
) -> None:
    before = _count(db, users)
    made = client.post(
        "/admin/users", json={"name": "a\u0000", "email": "nul@x.invalid", "role": "trainee"}, headers=admin_headers
    )
    assert made.status_code == 400 and "detail" in made.json()
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    signed = client.post("/login", data={"email": "a\u0000@x.invalid", "password": "p\u0000", "csrf_token": token})
    assert signed.status_code < 500 and "ehr_sandbox_session" not in signed.headers.get("set-cookie", "")
    assert _count(db, users) == before
    assert client.get("/admin/users/%00", headers=admin_headers).status_code == 400
