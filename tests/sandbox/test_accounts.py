"""Users, passwords, API tokens, rosters and cohorts; and the roles enforced on the FHIR and admin APIs."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from sandbox.accounts import cohorts, tokens, users
from sandbox.accounts.passwords import hash_password, verify_password
from sandbox.accounts.roster import RosterLine, parse_roster
from sandbox.store import sandboxes
from sandbox.store.admin_errors import Conflict, Invalid, NotFound
from sandbox.store.layers import resolve_view
from sandbox.store.repository import Actor
from sandbox.store.schema import api_tokens, layers
from sandbox.store.schema import users as users_table

PATIENT = {"resourceType": "Patient", "name": [{"family": "Chalmers"}]}


# ---- passwords and users ---------------------------------------------------------------------------------


def test_passwords_are_stored_as_argon2id_hashes_and_verified():
    stored = hash_password("correct horse")
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert verify_password(stored, "correct horse")
    assert not verify_password(stored, "wrong horse")
    assert not verify_password("not a hash", "correct horse")


def test_users_sign_in_with_email_and_password(db):
    with db.write() as conn:
        user = users.create_user(conn, "Ann Lee", " Ann@Example.ORG ", "trainee", password="correct horse")
        assert user.email == "ann@example.org" and user.role == "trainee"
        assert users.check_credentials(conn, "ANN@example.org", "correct horse") == user
        assert users.check_credentials(conn, "ann@example.org", "wrong horse") is None
        assert users.check_credentials(conn, "nobody@example.org", "correct horse") is None
        users.set_password(conn, user.id, "another horse")
        assert users.check_credentials(conn, "ann@example.org", "another horse") is not None
        stored = conn.execute(select(users_table.c.password_hash).where(users_table.c.id == user.id)).scalar_one()
        assert stored.startswith("$argon2id$")


def test_a_user_without_password_cannot_sign_in(db):
    with db.write() as conn:
        users.create_user(conn, "Bob", "bob@example.org", "trainee")
        assert users.check_credentials(conn, "bob@example.org", "") is None


@pytest.mark.parametrize(
    ("name", "email", "role", "password", "error"),
    [
        ("", "a@example.org", "trainee", None, "needs a name"),
        ("A", "not-an-email", "trainee", None, "not an email"),
        ("A", "a@example.org", "superuser", None, "role must be one of"),
        ("A", "a@example.org", "trainee", "short", "at least 8"),
    ],
)
def test_bad_users_are_refused(db, name, email, role, password, error):
    with db.write() as conn, pytest.raises(Invalid, match=error):
        users.create_user(conn, name, email, role, password=password)
    with db.read() as conn:
        assert users.list_users(conn) == []


def test_emails_are_unique_and_users_in_cohorts_cannot_be_deleted(db):
    with db.write() as conn:
        trainer = users.create_user(conn, "T", "t@example.org", "trainer")
        with pytest.raises(Conflict, match="already a user"):
            users.create_user(conn, "T2", "T@example.org", "trainee")
        cohorts.create_cohort(conn, "C", trainer.id)
        with pytest.raises(Conflict, match="remove them from it first"):
            users.delete_user(conn, trainer.id)
        with pytest.raises(NotFound):
            users.delete_user(conn, "nobody")


# ---- tokens ----------------------------------------------------------------------------------------------------


def test_tokens_are_stored_only_as_hashes_and_can_be_revoked(db):
    with db.write() as conn:
        user = users.create_user(conn, "Vic", "vic@example.org", "vendor")
        info, secret = tokens.issue_token(conn, user.id, "ci")
        rows = conn.execute(select(api_tokens)).all()
        assert len(rows) == 1 and secret not in [str(v) for v in rows[0]]
        assert rows[0].token_hash == tokens.token_hash(secret)
        assert tokens.user_for_token(conn, secret) == user
        assert tokens.user_for_token(conn, secret + "x") is None
        tokens.revoke_token(conn, user.id, info.id)
        assert tokens.user_for_token(conn, secret) is None
        with pytest.raises(NotFound):
            tokens.revoke_token(conn, user.id, info.id)
        with pytest.raises(NotFound):
            tokens.issue_token(conn, "nobody", "x")
        with pytest.raises(Invalid):
            tokens.issue_token(conn, user.id, "")


# ---- rosters ---------------------------------------------------------------------------------------------------


def test_a_roster_reads_name_email_role_with_or_without_header():
    text = "name,email,role\nAnn Lee,ann@example.org,trainee\n\nBob,BOB@example.org\nVic,vic@example.org,Vendor\n"
    assert parse_roster(text) == [
        RosterLine("Ann Lee", "ann@example.org", "trainee"),
        RosterLine("Bob", "bob@example.org", "trainee"),
        RosterLine("Vic", "vic@example.org", "vendor"),
    ]
    assert parse_roster('"Lee, Ann",ann@example.org,trainee') == [RosterLine("Lee, Ann", "ann@example.org")]


def test_a_bad_roster_lists_every_bad_line():
    text = (
        "Ann,ann@example.org,trainee\nBob,bob-at-example,trainee\nEve,eve@example.org,admin\nAnn,ann@example.org\nx\n"
    )
    with pytest.raises(Invalid) as caught:
        parse_roster(text)
    message = caught.value.message
    for expected in ("line 2", "not an email", "line 3", "not 'admin'", "line 4", "appears twice", "line 5"):
        assert expected in message
    with pytest.raises(Invalid, match="empty"):
        parse_roster("name,email,role\n")


# ---- cohorts ---------------------------------------------------------------------------------------------------


@pytest.fixture
def baseline(db) -> str:
    from sandbox.fhir.interactions import Interactions
    from sandbox.fhir.search_params import registry
    from sandbox.store.repository import Repository

    reg = registry()
    fhir = Interactions(Repository(reg), reg)
    with db.write() as conn:
        info = sandboxes.create_baseline(conn, "Ward")
        view = sandboxes.baseline_view_for_loading(conn, info.id)
        fhir.update(conn, view, "Patient", "p0", {**PATIENT, "id": "p0"}, Actor("loader", "loader"))
    return info.id


def roster(n: int) -> list[RosterLine]:
    return [RosterLine(f"Trainee {i}", f"t{i}@example.org") for i in range(n)]


def test_a_cohort_of_n_trainees_gets_n_private_sandboxes_over_its_baseline(db, baseline):
    with db.write() as conn:
        trainer = users.create_user(conn, "Tess", "tess@example.org", "trainer")
        cohort = cohorts.create_cohort(conn, "Night shift", "tess@example.org", baseline_id=baseline, roster=roster(5))
        assert cohort.trainer_id == trainer.id and cohort.mode == "private"
        assert len(cohort.members) == 5 and len(set(cohort.sandbox_ids)) == 5
        for sandbox_id in cohort.sandbox_ids:
            assert resolve_view(conn, sandbox_id).layers[1] == baseline
        assert {u.email for u in users.list_users(conn, "trainee")} == {f"t{i}@example.org" for i in range(5)}


def test_a_shared_cohort_has_one_sandbox_and_refuses_resetting_one_trainee(db, baseline):
    with db.write() as conn:
        users.create_user(conn, "Tess", "tess@example.org", "trainer")
        cohort = cohorts.create_cohort(conn, "Demo", "tess@example.org", baseline_id=baseline, mode="shared")
        cohorts.add_roster(conn, cohort.id, roster(3))
        cohort = cohorts.get_cohort(conn, cohort.id)
        assert cohort.sandbox_ids == [cohort.shared_sandbox_id]
        assert {m.sandbox_id for m in cohort.members} == {cohort.shared_sandbox_id}
        with pytest.raises(Conflict, match="shares one sandbox"):
            cohorts.reset_member(conn, cohort.id, "t0@example.org")
        assert cohorts.reset_cohort(conn, cohort.id) == [cohort.shared_sandbox_id]


def test_reset_cohort_and_reset_trainee(app, db, baseline):
    fhir = app.state.fhir
    with db.write() as conn:
        users.create_user(conn, "Tess", "tess@example.org", "trainer")
        cohort = cohorts.create_cohort(conn, "C", "tess@example.org", baseline_id=baseline, roster=roster(3))
        views = {m.user.email: resolve_view(conn, m.sandbox_id) for m in cohort.members}
        for email, view in views.items():
            fhir.update(conn, view, "Patient", "p0", {**PATIENT, "id": "p0", "gender": "other"}, Actor(email))

    def changed(email: str) -> bool:
        with db.read() as conn:
            return fhir.repo.current(conn, views[email], "Patient", "p0").version_id == 2

    with db.write() as conn:
        assert cohorts.reset_member(conn, cohort.id, "t1@example.org") == views["t1@example.org"].sandbox_id
    assert [changed(f"t{i}@example.org") for i in range(3)] == [True, False, True]
    with db.write() as conn:
        assert len(cohorts.reset_cohort(conn, cohort.id)) == 3
    assert not any(changed(f"t{i}@example.org") for i in range(3))


def test_roster_rules_and_membership_changes(db, baseline):
    with db.write() as conn:
        users.create_user(conn, "Tess", "tess@example.org", "trainer")
        users.create_user(conn, "Vera", "vera@example.org", "vendor")
        cohort = cohorts.create_cohort(conn, "C", "tess@example.org", baseline_id=baseline, roster=roster(2))
        with pytest.raises(Conflict, match="already a vendor"):
            cohorts.add_roster(conn, cohort.id, [RosterLine("Vera", "vera@example.org", "trainee")])
        with pytest.raises(Conflict, match="already in cohort"):
            cohorts.add_member(conn, cohort.id, "t0@example.org")
        with pytest.raises(Invalid, match="not 'trainer'"):
            cohorts.add_member(conn, cohort.id, "tess@example.org")
        with pytest.raises(NotFound):
            cohorts.add_member(conn, "nope", "t0@example.org")
        vera = cohorts.add_member(conn, cohort.id, "vera@example.org")
        cohorts.remove_member(conn, cohort.id, "vera@example.org")
        assert conn.execute(select(layers).where(layers.c.id == vera.sandbox_id)).first() is None
        with pytest.raises(NotFound, match="not in cohort"):
            cohorts.reset_member(conn, cohort.id, "vera@example.org")
        sandbox_ids = cohorts.get_cohort(conn, cohort.id).sandbox_ids
        cohorts.delete_cohort(conn, cohort.id)
        assert all(conn.execute(select(layers).where(layers.c.id == s)).first() is None for s in sandbox_ids)
        assert users.find_by_email(conn, "t0@example.org") is not None


def test_cohorts_refuse_bad_trainers_modes_and_baselines(db):
    with db.write() as conn:
        users.create_user(conn, "Ann", "ann@example.org", "trainee")
        users.create_user(conn, "Tess", "tess@example.org", "trainer")
        with pytest.raises(Invalid, match="must be a trainer"):
            cohorts.create_cohort(conn, "C", "ann@example.org")
        with pytest.raises(Invalid, match="sandbox mode"):
            cohorts.create_cohort(conn, "C", "tess@example.org", mode="both")
        with pytest.raises(NotFound, match="no baseline"):
            cohorts.create_cohort(conn, "C", "tess@example.org", baseline_id="nope")
        with pytest.raises(NotFound, match="no user"):
            cohorts.create_cohort(conn, "C", "nobody@example.org")
        assert cohorts.list_cohorts(conn) == []


def test_a_failed_roster_import_changes_nothing(db, baseline):
    with db.write() as conn:
        users.create_user(conn, "Tess", "tess@example.org", "trainer")
        users.create_user(conn, "Vera", "vera@example.org", "vendor")
    with pytest.raises(Conflict), db.write() as conn:
        cohorts.create_cohort(
            conn,
            "C",
            "tess@example.org",
            baseline_id=baseline,
            roster=[RosterLine("New", "new@example.org"), RosterLine("Vera", "vera@example.org")],
        )
    with db.read() as conn:
        assert cohorts.list_cohorts(conn) == [] and users.find_by_email(conn, "new@example.org") is None
        assert sandboxes.list_layers(conn, "sandbox") == []


# ---- roles on the FHIR and admin APIs ------------------------------------------------------------------------------


class People:
    """Two cohorts of two trainees each, with tokens for everyone, over one baseline."""

    def __init__(self, app: Any, baseline: str) -> None:
        self.headers: dict[str, dict[str, str]] = {}
        with app.state.db.write() as conn:
            for name, role in (("tess", "trainer"), ("tom", "trainer"), ("vic", "vendor"), ("ada", "admin")):
                users.create_user(conn, name, f"{name}@example.org", role)
            self.mine = cohorts.create_cohort(
                conn, "Tess's", "tess@example.org", baseline_id=baseline, roster=roster(2)
            )
            self.theirs = cohorts.create_cohort(
                conn, "Tom's", "tom@example.org", baseline_id=baseline, roster=[RosterLine("X", "x@example.org")]
            )
            cohorts.add_member(conn, self.theirs.id, "vic@example.org")
            self.theirs = cohorts.get_cohort(conn, self.theirs.id)
            for user in users.list_users(conn):
                _info, secret = tokens.issue_token(conn, user.id)
                self.headers[user.email.split("@")[0]] = {"Authorization": f"Bearer {secret}"}
        self.sandbox = {m.user.email.split("@")[0]: m.sandbox_id for c in (self.mine, self.theirs) for m in c.members}
        self.ids = {m.user.email.split("@")[0]: m.user.id for c in (self.mine, self.theirs) for m in c.members}


@pytest.fixture
def people(app, baseline) -> People:
    return People(app, baseline)


def base(sandbox_id: str) -> str:
    return f"/sandboxes/{sandbox_id}/fhir"


def test_a_trainee_reaches_only_their_own_sandbox(client, people):
    t0 = people.headers["t0"]
    assert client.get(f"{base(people.sandbox['t0'])}/Patient/p0", headers=t0).status_code == 200
    for other in ("t1", "x", "vic"):
        denied = client.get(f"{base(people.sandbox[other])}/Patient/p0", headers=t0)
        assert denied.status_code == 403 and denied.json()["issue"][0]["code"] == "forbidden"
        assert client.post(f"{base(people.sandbox[other])}/Patient", json=PATIENT, headers=t0).status_code == 403
    assert client.get(f"{base('no-such-sandbox')}/Patient", headers=t0).status_code == 403
    assert client.get("/fhir/Patient", headers=t0).status_code == 200


def test_a_trainee_cannot_use_the_admin_api(client, people):
    t0 = people.headers["t0"]
    for method, path in [
        ("GET", "/admin/sandboxes"),
        ("POST", f"/admin/sandboxes/{people.sandbox['t0']}/reset"),
        ("POST", f"/admin/sandboxes/{people.sandbox['t1']}/reset"),
        ("GET", f"/admin/sandboxes/{people.sandbox['t1']}/export"),
        ("POST", f"/admin/cohorts/{people.mine.id}/reset"),
        ("GET", "/admin/users"),
    ]:
        r = client.request(method, path, headers=t0)
        assert r.status_code == 403, (method, path)


def test_a_vendor_reaches_only_the_sandboxes_they_are_in(client, people):
    vic = people.headers["vic"]
    assert client.get(f"{base(people.sandbox['vic'])}/Patient", headers=vic).status_code == 200
    assert client.get(f"{base(people.sandbox['x'])}/Patient", headers=vic).status_code == 403
    assert client.get("/admin/baselines", headers=vic).status_code == 403


def test_a_trainer_reaches_only_their_cohorts(client, people):
    tess = people.headers["tess"]
    for trainee in ("t0", "t1"):
        assert client.get(f"{base(people.sandbox[trainee])}/Patient/p0", headers=tess).status_code == 200
    assert client.get(f"{base(people.sandbox['x'])}/Patient/p0", headers=tess).status_code == 403
    assert client.post(f"/admin/cohorts/{people.mine.id}/reset", headers=tess).status_code == 200
    assert client.post(f"/admin/cohorts/{people.theirs.id}/reset", headers=tess).status_code == 403
    reset_one = client.post(f"/admin/cohorts/{people.mine.id}/members/{people.ids['t0']}/reset", headers=tess)
    assert reset_one.status_code == 200
    assert client.post(f"/admin/sandboxes/{people.sandbox['t1']}/reset", headers=tess).status_code == 200
    assert client.post(f"/admin/sandboxes/{people.sandbox['x']}/reset", headers=tess).status_code == 403
    assert client.get(f"/admin/cohorts/{people.theirs.id}", headers=tess).status_code == 403
    assert client.get("/admin/cohorts/nope", headers=tess).status_code == 404
    assert [c["id"] for c in client.get("/admin/cohorts", headers=tess).json()["cohorts"]] == [people.mine.id]
    listed = {s["id"] for s in client.get("/admin/sandboxes", headers=tess).json()["sandboxes"]}
    assert listed == {"default", people.sandbox["t0"], people.sandbox["t1"]}
    assert client.post("/admin/sandboxes", json={"name": "mine"}, headers=tess).status_code == 403
    assert client.delete(f"/admin/sandboxes/{people.sandbox['t0']}", headers=tess).status_code == 403
    assert (
        client.post("/admin/users", json={"name": "n", "email": "n@x.org", "role": "admin"}, headers=tess).status_code
        == 403
    )


def test_a_trainer_creates_cohorts_only_for_themself(client, people, baseline):
    tess = people.headers["tess"]
    own = client.post(
        "/admin/cohorts",
        json={"name": "Mine", "baseline": baseline, "members": [{"name": "N", "email": "n@example.org"}]},
        headers=tess,
    )
    assert own.status_code == 201 and own.json()["trainer"] == people.mine.trainer_id
    other = client.post("/admin/cohorts", json={"name": "Tom's too", "trainer": "tom@example.org"}, headers=tess)
    assert other.status_code == 403


def test_an_admin_users_token_reaches_everything(client, people):
    ada = people.headers["ada"]
    assert client.get(f"{base(people.sandbox['x'])}/Patient", headers=ada).status_code == 200
    assert client.get("/admin/users", headers=ada).status_code == 200


def test_bad_or_missing_credentials_are_401_everywhere(client, people):
    bad = {"Authorization": "Bearer ehrs_not-a-token"}
    assert client.get("/fhir/Patient", headers=bad).status_code == 401
    assert client.get(f"{base(people.sandbox['t0'])}/Patient", headers=bad).status_code == 401
    missing = client.get(f"{base(people.sandbox['t0'])}/Patient")
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/admin/cohorts", headers=bad).status_code == 401
    assert client.get("/fhir/Patient").status_code == 200


def test_writes_are_attributed_to_the_user_and_route(app, client, people):
    r = client.post(f"{base(people.sandbox['t0'])}/Patient", json=PATIENT, headers=people.headers["t0"])
    assert r.status_code == 201
    with app.state.db.read() as conn:
        view = resolve_view(conn, people.sandbox["t0"])
        versions, _ = app.state.fhir.repo.history(conn, view, rtype="Patient", rid=r.json()["id"])
    assert (versions[0].actor, versions[0].route) == (f"user:{people.ids['t0']}", "fhir-api")
