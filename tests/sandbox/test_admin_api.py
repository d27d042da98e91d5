"""The admin API under /admin: the contract of issue 3, and its bad inputs."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.fhir.validation import parse_json
from sandbox.store import sandboxes

PATIENT = {"resourceType": "Patient", "name": [{"family": "Chalmers"}], "gender": "male"}


def load_baseline(app: Any, name: str = "Base", patients: int = 2) -> str:
    """A baseline filled the way loaders do it: through a writing View of the baseline layer."""
    fhir, db = app.state.fhir, app.state.db
    from sandbox.store.repository import Actor

    with db.write() as conn:
        info = sandboxes.create_baseline(conn, name)
        view = sandboxes.baseline_view_for_loading(conn, info.id)
        for i in range(patients):
            fhir.update(conn, view, "Patient", f"p{i}", {**PATIENT, "id": f"p{i}"}, Actor("loader", "loader"))
    return info.id


@pytest.fixture
def baseline(app) -> str:
    return load_baseline(app)


def create_sandbox(client, admin_headers, **body: Any) -> dict[str, Any]:
    r = client.post("/admin/sandboxes", json={"name": "practice", **body}, headers=admin_headers)
    assert r.status_code == 201, r.text
    return r.json()


# ---- credentials ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/sandboxes"),
        ("POST", "/admin/sandboxes"),
        ("GET", "/admin/baselines"),
        ("DELETE", "/admin/sandboxes/x"),
        ("POST", "/admin/sandboxes/x/reset"),
        ("GET", "/admin/users"),
        ("GET", "/admin/cohorts"),
    ],
)
def test_the_admin_api_answers_401_without_or_with_a_bad_token(client, method, path):
    r = client.request(method, path, json={"name": "x"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "detail" in r.json()
    bad = client.request(method, path, json={"name": "x"}, headers={"Authorization": "Bearer wrong"})
    assert bad.status_code == 401


# ---- sandboxes ---------------------------------------------------------------------------------------


def test_create_answers_201_with_id_and_fhir_base_which_needs_credentials(client, admin_headers, baseline):
    created = create_sandbox(client, admin_headers, baseline=baseline)
    assert created["fhir_base"] == f"http://testserver/sandboxes/{created['id']}/fhir"
    assert created["baseline"] == baseline
    shown = client.get(f"/admin/sandboxes/{created['id']}", headers=admin_headers).json()
    assert shown["baseline_resources"] == 2 and shown["changed_resources"] == 0
    read = client.get(f"/sandboxes/{created['id']}/fhir/Patient/p0", headers=admin_headers)
    assert read.status_code == 200 and read.json()["name"][0]["family"] == "Chalmers"
    assert client.get(f"/sandboxes/{created['id']}/fhir/Patient/p0").status_code == 401


def test_create_without_baseline_is_an_empty_sandbox(client, admin_headers):
    created = create_sandbox(client, admin_headers)
    assert created["baseline"] is None
    bundle = client.get(f"/sandboxes/{created['id']}/fhir/Patient", headers=admin_headers).json()
    assert bundle.get("entry", []) == []


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"name": "x", "baseline": "nope"}, 404, "no baseline 'nope'"),
        ({"name": ""}, 400, "name is required"),
        ({}, 400, "name is required"),
        ({"name": "x", "baseline": 7}, 400, "'baseline' must be a string"),
        ({"name": "x", "id": "bad id!"}, 400, "not a valid id"),
        ({"name": "x", "id": "default"}, 409, "already taken"),
    ],
)
def test_create_refuses_bad_bodies_and_changes_nothing(client, admin_headers, body, status, says):
    before = client.get("/admin/sandboxes", headers=admin_headers).json()["sandboxes"]
    r = client.post("/admin/sandboxes", json=body, headers=admin_headers)
    assert r.status_code == status and says in r.json()["detail"]
    assert client.get("/admin/sandboxes", headers=admin_headers).json()["sandboxes"] == before


def test_create_refuses_bodies_that_are_not_json_objects(client, admin_headers):
    for content in (b"not json", b"[1, 2]", b""):
        r = client.post("/admin/sandboxes", content=content, headers=admin_headers)
        assert r.status_code == 400, content


def test_list_shows_the_default_sandbox_and_created_ones_with_sizes(client, admin_headers, baseline):
    created = create_sandbox(client, admin_headers, baseline=baseline)
    client.post(f"/sandboxes/{created['id']}/fhir/Patient", json=PATIENT, headers=admin_headers)
    listed = {s["id"]: s for s in client.get("/admin/sandboxes", headers=admin_headers).json()["sandboxes"]}
    assert listed["default"]["fhir_base"] == "http://testserver/fhir"
    mine = listed[created["id"]]
    assert mine["changed_resources"] == 1 and mine["baseline_resources"] == 2
    assert mine["last_activity"].endswith("Z")
    one = client.get(f"/admin/sandboxes/{created['id']}", headers=admin_headers).json()
    assert one["changed_resources"] == 1
    assert client.get("/admin/sandboxes/nope", headers=admin_headers).status_code == 404


def test_sandboxes_default_fhir_is_the_same_as_fhir(client, admin_headers):
    pid = client.post("/fhir/Patient", json=PATIENT).json()["id"]
    assert client.get(f"/sandboxes/default/fhir/Patient/{pid}").status_code == 200


def test_delete_makes_the_fhir_base_answer_404(client, admin_headers, baseline):
    created = create_sandbox(client, admin_headers, baseline=baseline)
    base = f"/sandboxes/{created['id']}/fhir"
    assert client.get(f"{base}/Patient/p0", headers=admin_headers).status_code == 200  # caches the View
    assert client.delete(f"/admin/sandboxes/{created['id']}", headers=admin_headers).status_code == 204
    gone = client.get(f"{base}/Patient/p0", headers=admin_headers)
    assert gone.status_code == 404 and gone.json()["resourceType"] == "OperationOutcome"
    assert client.post(f"{base}/Patient", json=PATIENT, headers=admin_headers).status_code == 404
    assert client.delete(f"/admin/sandboxes/{created['id']}", headers=admin_headers).status_code == 404


def test_a_sandbox_deleted_elsewhere_answers_404_despite_the_cached_view(app, client, admin_headers):
    created = create_sandbox(client, admin_headers)
    base = f"/sandboxes/{created['id']}/fhir"
    assert client.get(f"{base}/Patient", headers=admin_headers).status_code == 200
    with app.state.db.write() as conn:  # as the CLI or another worker would
        sandboxes.delete_sandbox(conn, created["id"])
    assert client.get(f"{base}/Patient", headers=admin_headers).status_code == 404


def test_the_default_sandbox_cannot_be_deleted(client, admin_headers):
    r = client.delete("/admin/sandboxes/default", headers=admin_headers)
    assert r.status_code == 409 and "reset it instead" in r.json()["detail"]


def test_reset_brings_back_the_baseline(client, admin_headers, baseline):
    created = create_sandbox(client, admin_headers, baseline=baseline)
    base = f"/sandboxes/{created['id']}/fhir"
    update = client.put(f"{base}/Patient/p0", json={**PATIENT, "id": "p0", "gender": "female"}, headers=admin_headers)
    assert update.json()["meta"]["versionId"] == "2"
    client.post(f"{base}/Patient", json=PATIENT, headers=admin_headers)
    r = client.post(f"/admin/sandboxes/{created['id']}/reset", headers=admin_headers)
    assert r.status_code == 200 and r.json()["changed_resources"] == 0
    read = client.get(f"{base}/Patient/p0", headers=admin_headers).json()
    assert read["gender"] == "male" and read["meta"]["versionId"] == "1"
    assert client.get(f"{base}/Patient?_summary=count", headers=admin_headers).json()["total"] == 2
    assert client.post("/admin/sandboxes/nope/reset", headers=admin_headers).status_code == 404


def test_snapshot_answers_201_with_a_new_baseline_that_new_sandboxes_start_from(client, admin_headers, baseline):
    prepared = create_sandbox(client, admin_headers, baseline=baseline)
    base = f"/sandboxes/{prepared['id']}/fhir"
    client.put(f"{base}/Patient/case", json={**PATIENT, "id": "case", "gender": "other"}, headers=admin_headers)
    r = client.post(f"/admin/sandboxes/{prepared['id']}/snapshot", json={"name": "Case 1"}, headers=admin_headers)
    assert r.status_code == 201
    snap = r.json()
    assert snap["kind"] == "baseline" and snap["resources"] == 3 and snap["source_sandbox"] == prepared["id"]
    listed = [b["id"] for b in client.get("/admin/baselines", headers=admin_headers).json()["baselines"]]
    assert baseline in listed and snap["id"] in listed
    fresh = create_sandbox(client, admin_headers, baseline=snap["id"])
    read = client.get(f"/sandboxes/{fresh['id']}/fhir/Patient/case", headers=admin_headers)
    assert read.status_code == 200 and read.json()["gender"] == "other"


def test_snapshot_refuses_a_missing_name_or_sandbox(client, admin_headers):
    created = create_sandbox(client, admin_headers)
    assert client.post(f"/admin/sandboxes/{created['id']}/snapshot", json={}, headers=admin_headers).status_code == 400
    assert client.post("/admin/sandboxes/nope/snapshot", json={"name": "x"}, headers=admin_headers).status_code == 404
    assert client.get("/admin/baselines", headers=admin_headers).json()["baselines"] == []


def test_export_ndjson_and_bundle(client, admin_headers, baseline):
    created = create_sandbox(client, admin_headers, baseline=baseline)
    client.delete(f"/sandboxes/{created['id']}/fhir/Patient/p1", headers=admin_headers)
    ndjson = client.get(f"/admin/sandboxes/{created['id']}/export", headers=admin_headers)
    assert ndjson.status_code == 200 and ndjson.headers["content-type"].startswith("application/fhir+ndjson")
    assert [parse_json(line)["id"] for line in ndjson.content.splitlines()] == ["p0"]
    bundle = client.get(f"/admin/sandboxes/{created['id']}/export?format=bundle", headers=admin_headers).json()
    assert bundle["type"] == "transaction"
    assert bundle["entry"][0]["fullUrl"] == f"{created['fhir_base']}/Patient/p0"
    bad = client.get(f"/admin/sandboxes/{created['id']}/export?format=xml", headers=admin_headers)
    assert bad.status_code == 400
    whole = client.get(f"/admin/baselines/{baseline}/export", headers=admin_headers)
    assert len(whole.content.splitlines()) == 2


def test_an_exported_bundle_loads_into_another_sandbox(client, admin_headers, baseline):
    source = create_sandbox(client, admin_headers, baseline=baseline)
    bundle = client.get(f"/admin/sandboxes/{source['id']}/export?format=bundle", headers=admin_headers).json()
    target = create_sandbox(client, admin_headers)
    r = client.post(f"/sandboxes/{target['id']}/fhir", json=bundle, headers=admin_headers)
    assert r.status_code == 200, r.text
    assert client.get(f"/sandboxes/{target['id']}/fhir/Patient/p1", headers=admin_headers).status_code == 200


# ---- baselines ---------------------------------------------------------------------------------------------


def test_a_baseline_is_created_empty_filled_by_a_loader_then_frozen_by_use(app, client, admin_headers):
    r = client.post("/admin/baselines", json={"name": "Clinic"}, headers=admin_headers)
    assert r.status_code == 201 and r.json()["resources"] == 0
    baseline_id = r.json()["id"]
    fhir = app.state.fhir
    from sandbox.store.repository import Actor

    with app.state.db.write() as conn:
        view = sandboxes.baseline_view_for_loading(conn, baseline_id)
        fhir.create(conn, view, PATIENT, Actor("loader", "loader"))
    assert client.get(f"/admin/baselines/{baseline_id}", headers=admin_headers).json()["resources"] == 1
    created = create_sandbox(client, admin_headers, baseline=baseline_id)
    assert client.get(f"{created['fhir_base']}/Patient?_summary=count", headers=admin_headers).json()["total"] == 1
    in_use = client.delete(f"/admin/baselines/{baseline_id}", headers=admin_headers)
    assert in_use.status_code == 409 and created["id"] in in_use.json()["detail"]
    client.delete(f"/admin/sandboxes/{created['id']}", headers=admin_headers)
    assert client.delete(f"/admin/baselines/{baseline_id}", headers=admin_headers).status_code == 204
    assert client.get(f"/admin/baselines/{baseline_id}", headers=admin_headers).status_code == 404


def test_baselines_refuse_bad_bodies(client, admin_headers):
    assert client.post("/admin/baselines", json={"name": 3}, headers=admin_headers).status_code == 400
    assert client.post("/admin/baselines", json=["x"], headers=admin_headers).status_code == 400


# ---- users, tokens, cohorts over the API ----------------------------------------------------------------------


def test_users_tokens_and_a_cohort_through_the_api(client, admin_headers, baseline):
    trainer = client.post(
        "/admin/users",
        json={"name": "Tess Trainer", "email": "Tess@Example.org", "role": "trainer", "password": "long enough"},
        headers=admin_headers,
    )
    assert trainer.status_code == 201 and trainer.json()["email"] == "tess@example.org"
    assert "password" not in trainer.text
    dup = client.post(
        "/admin/users", json={"name": "T", "email": "tess@example.org", "role": "trainer"}, headers=admin_headers
    )
    assert dup.status_code == 409
    bad_role = client.post(
        "/admin/users", json={"name": "X", "email": "x@example.org", "role": "boss"}, headers=admin_headers
    )
    assert bad_role.status_code == 400 and "role must be one of" in bad_role.json()["detail"]

    cohort = client.post(
        "/admin/cohorts",
        json={
            "name": "Night shift",
            "trainer": "tess@example.org",
            "baseline": baseline,
            "members": [{"name": "Ann", "email": "ann@example.org"}, {"name": "Bob", "email": "bob@example.org"}],
        },
        headers=admin_headers,
    )
    assert cohort.status_code == 201, cohort.text
    body = cohort.json()
    assert body["sandbox_mode"] == "private" and len({m["sandbox"] for m in body["members"]}) == 2
    roster = client.post(
        f"/admin/cohorts/{body['id']}/members",
        content=b"name,email,role\nCid,cid@example.org,trainee\nAnn,ann@example.org,trainee\n",
        headers={**admin_headers, "Content-Type": "text/csv"},
    )
    assert roster.status_code == 201 and [m["email"] for m in roster.json()["added"]] == ["cid@example.org"]
    bad_csv = client.post(
        f"/admin/cohorts/{body['id']}/members",
        content=b"Dee,not-an-email,trainee\nEve,eve@example.org,admin\n",
        headers={**admin_headers, "Content-Type": "text/csv"},
    )
    assert bad_csv.status_code == 400
    assert "line 1" in bad_csv.json()["detail"] and "line 2" in bad_csv.json()["detail"]
    assert len(client.get(f"/admin/cohorts/{body['id']}", headers=admin_headers).json()["members"]) == 3

    token = client.post("/admin/users/ann@example.org/tokens", json={"label": "x"}, headers=admin_headers)
    assert token.status_code == 404  # users are named by id in the API path
    ann = next(m for m in body["members"] if m["email"] == "ann@example.org")
    token = client.post(f"/admin/users/{ann['id']}/tokens", json={"label": "laptop"}, headers=admin_headers)
    assert token.status_code == 201 and token.json()["token"].startswith("ehrs_")
    ann_headers = {"Authorization": f"Bearer {token.json()['token']}"}
    assert client.get(f"{ann['fhir_base']}/Patient/p0", headers=ann_headers).status_code == 200
    listed = client.get(f"/admin/users/{ann['id']}/tokens", headers=admin_headers).json()["tokens"]
    assert [t["label"] for t in listed] == ["laptop"] and "token" not in listed[0]
    revoke = client.delete(f"/admin/users/{ann['id']}/tokens/{listed[0]['id']}", headers=admin_headers)
    assert revoke.status_code == 204
    assert client.get(f"{ann['fhir_base']}/Patient/p0", headers=ann_headers).status_code == 401

    client.put(
        f"{ann['fhir_base']}/Patient/p0", json={**PATIENT, "id": "p0", "gender": "female"}, headers=admin_headers
    )
    reset_one = client.post(f"/admin/cohorts/{body['id']}/members/{ann['id']}/reset", headers=admin_headers)
    assert reset_one.status_code == 200 and reset_one.json()["reset"] == [ann["sandbox"]]
    assert client.get(f"{ann['fhir_base']}/Patient/p0", headers=admin_headers).json()["gender"] == "male"
    reset_all = client.post(f"/admin/cohorts/{body['id']}/reset", headers=admin_headers)
    assert len(reset_all.json()["reset"]) == 3

    member_sandbox_delete = client.delete(f"/admin/sandboxes/{ann['sandbox']}", headers=admin_headers)
    assert member_sandbox_delete.status_code == 409
    assert client.delete(f"/admin/cohorts/{body['id']}/members/{ann['id']}", headers=admin_headers).status_code == 204
    assert client.get(f"{ann['fhir_base']}/Patient/p0", headers=admin_headers).status_code == 404
    assert client.delete(f"/admin/cohorts/{body['id']}", headers=admin_headers).status_code == 204
    assert [s["id"] for s in client.get("/admin/sandboxes", headers=admin_headers).json()["sandboxes"]] == ["default"]


def test_cohort_bodies_are_checked(client, admin_headers):
    trainee = client.post(
        "/admin/users", json={"name": "T", "email": "t@example.org", "role": "trainee"}, headers=admin_headers
    ).json()
    cases = [
        ({"name": "c"}, 400, "'trainer'"),
        ({"name": "c", "trainer": "nobody@example.org"}, 404, "no user"),
        ({"name": "c", "trainer": trainee["id"]}, 400, "must be a trainer"),
        ({"name": "c", "trainer": trainee["id"], "members": "ann"}, 400, "'members' must be a list"),
    ]
    for body, status, says in cases:
        r = client.post("/admin/cohorts", json=body, headers=admin_headers)
        assert r.status_code == status and says in r.json()["detail"], (body, r.text)
    trainer = client.post(
        "/admin/users", json={"name": "Tr", "email": "tr@example.org", "role": "trainer"}, headers=admin_headers
    ).json()
    r = client.post(
        "/admin/cohorts", json={"name": "c", "trainer": trainer["id"], "sandbox_mode": "mixed"}, headers=admin_headers
    )
    assert r.status_code == 400 and "sandbox mode" in r.json()["detail"]
    assert client.get("/admin/cohorts", headers=admin_headers).json()["cohorts"] == []


# ---- attribution as AuditEvent -----------------------------------------------------------------------------------


def test_audit_lists_the_sandboxs_own_writes_as_valid_audit_events(client, admin_headers, baseline):
    from fhir.resources.R4B.auditevent import AuditEvent

    created = create_sandbox(client, admin_headers, baseline=baseline)
    base = created["fhir_base"].removeprefix("http://testserver")
    client.put(f"{base}/Patient/p0", json={**PATIENT, "id": "p0", "gender": "female"}, headers=admin_headers)
    new_id = client.post(f"{base}/Patient", json=PATIENT, headers=admin_headers).json()["id"]
    client.delete(f"{base}/Patient/{new_id}", headers=admin_headers)
    r = client.get(f"/admin/sandboxes/{created['id']}/audit", headers=admin_headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+json")
    bundle = r.json()
    assert bundle["total"] == 3  # the baseline's loader writes are not the sandbox's
    events = [e["resource"] for e in bundle["entry"]]
    for event in events:
        AuditEvent.model_validate(event)
    assert [e["action"] for e in events] == ["D", "C", "U"]
    assert events[2]["entity"][0]["what"]["reference"] == f"{created['fhir_base']}/Patient/p0/_history/2"
    assert {e["agent"][0]["who"]["identifier"]["value"] for e in events} == {"admin"}
    assert {e["source"]["site"] for e in events} == {"fhir-api"}
    page = client.get(f"/admin/sandboxes/{created['id']}/audit?_count=1&_offset=1", headers=admin_headers).json()
    assert [e["resource"]["action"] for e in page["entry"]] == ["C"]
    client.post(f"/admin/sandboxes/{created['id']}/reset", headers=admin_headers)
    assert client.get(f"/admin/sandboxes/{created['id']}/audit", headers=admin_headers).json()["total"] == 0


def test_audit_refuses_bad_paging_and_unknown_sandboxes(client, admin_headers):
    created = create_sandbox(client, admin_headers)
    for query in ("_count=0", "_count=x", "_offset=-1", "_since=yesterday"):
        r = client.get(f"/admin/sandboxes/{created['id']}/audit?{query}", headers=admin_headers)
        assert r.status_code == 400, query
    assert client.get("/admin/sandboxes/nope/audit", headers=admin_headers).status_code == 404
