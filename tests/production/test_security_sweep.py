"""A sweep of every route in the app's route table (tests/production/routes.py), so that a route added
tomorrow is swept too: without credentials, with another sandbox's credentials, with a trainee's credentials
on trainer routes; then SQL and script injection in search parameters and form fields."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from sandbox.accounts import passwords
from sandbox.accounts.cohorts import add_member, create_cohort
from sandbox.accounts.tokens import issue_token
from sandbox.accounts.users import create_user
from sandbox.store.database import Database
from sandbox.store.sandboxes import create_baseline
from sandbox.store.schema import resource_versions
from tests.production.routes import route_table

# Routes anyone may call, and why.  Anything else must turn away a caller without credentials.
OPEN = {
    "/healthz": "liveness probe",
    "/readyz": "readiness probe",
    "/metrics": "Prometheus scrape: counts by route template, no data",
    "/openapi.json": "the API's description",
    "/docs": "the API's description",
    "/docs/oauth2-redirect": "the API's description",
    "/login": "the sign-in form",
    "/logout": "ends the caller's own session, if any",
    "/sandboxes/{sandbox_id}/fhir/metadata": "CapabilityStatement: what the server supports, no data",
    "/sandboxes/{sandbox_id}/fhir/.well-known/smart-configuration": "SMART discovery: where to authorize, no data",
    "/console/console.css": "the consoles' stylesheet",
    "/static/{name}": "the chart's own stylesheet and script",
    "/cds-hooks/jwks.json": "the public key that verifies our CDS Hooks calls",
    "/cds-services": "the built-in CDS services' discovery: stateless, they answer from the request alone",
    "/cds-services/{service_id}": "a built-in CDS service: stateless, no database behind it",
    "/cds-services/{service_id}/feedback": "a built-in CDS service's feedback endpoint: stateless",
}
# OAuth2 endpoints are public by protocol: the client proves itself inside the request (PKCE verifier,
# client assertion or secret, the user's session on the consent page), and a bad request is a 400 OAuth error.
for _base in ("/auth", "/sandboxes/{sandbox_id}/auth"):
    for _endpoint in ("authorize", "token", "introspect", "revoke"):
        OPEN[f"{_base}/{_endpoint}"] = "OAuth2 endpoint: the client authenticates inside the request"
    OPEN[f"{_base}/jwks"] = "the public keys that verify our id_tokens"
PASSWORD = "correct horse battery staple"
SQL = ["' OR '1'='1", "x'; DROP TABLE resources; --", "1) OR 1=1 --", '" OR ""="', "%' --"]
SCRIPT = "<script>alert('xss')</script>"


def is_open(path: str) -> bool:
    # The default sandbox (/fhir) is an open playground by design (README: like public test servers).
    return path in OPEN or path == "/fhir" or path.startswith("/fhir/")


@dataclass
class World:
    victim_sandbox: str
    victim_cohort: str
    victim_trainee: str
    victim_email: str
    baseline: str
    patient: str  # a Patient in the victim's sandbox
    outsider: dict[str, str]  # a trainee of another cohort (another sandbox's credentials)
    trainee: dict[str, str]  # the victim trainee's own token (a trainee on trainer routes)
    stranger_trainer: dict[str, str]  # a trainer of another cohort


@pytest.fixture
def world(db: Database, client: TestClient, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    with db.write() as conn:
        baseline = create_baseline(conn, "Sweep baseline").id
        trainer = create_user(conn, "Tess Trainer", "tess@sweep.invalid", "trainer", password=PASSWORD)
        other_trainer = create_user(conn, "Otto Trainer", "otto@sweep.invalid", "trainer")
        victim = create_user(conn, "Vic Trainee", "vic@sweep.invalid", "trainee", password=PASSWORD)
        outsider = create_user(conn, "Oz Trainee", "oz@sweep.invalid", "trainee")
        cohort = create_cohort(conn, "Victims", trainer.id, baseline_id=baseline)
        other = create_cohort(conn, "Others", other_trainer.id, baseline_id=baseline)
        victim_sandbox = add_member(conn, cohort.id, victim.id).sandbox_id
        add_member(conn, other.id, outsider.id)
        tokens = {u.id: issue_token(conn, u.id)[1] for u in (victim, outsider, other_trainer)}
    bearer = {uid: {"Authorization": f"Bearer {t}"} for uid, t in tokens.items()}
    made = client.post(
        f"/sandboxes/{victim_sandbox}/fhir/Patient",
        json={"resourceType": "Patient", "name": [{"family": "Victim"}]},
        headers=bearer[victim.id],
    )
    assert made.status_code == 201, made.text
    return World(
        victim_sandbox,
        cohort.id,
        victim.id,
        victim.email,
        baseline,
        made.json()["id"],
        bearer[outsider.id],
        bearer[victim.id],
        bearer[other_trainer.id],
    )


def concrete(path: str, world: World) -> str:
    """A template's parameters filled with the victim's things (a sandbox, a cohort, a patient...)."""
    values = {
        "sandbox_id": world.victim_sandbox,
        "cohort_id": world.victim_cohort,
        "baseline_id": world.baseline,
        "user_id": world.victim_trainee,
        "user_ref": world.victim_email,
        "rtype": "Patient",
        "rid": world.patient,
        "vid": "1",
        "operation": "$everything",
        "destination_id": "lab",
        "message_id": "m-1",
        "token_id": "t-1",
    }

    def fill(match: re.Match[str]) -> str:
        name = match.group(1).split(":")[0]
        return values.get(name, "x")

    return re.sub(r"\{([^}]+)\}", fill, path)


def sweep(client: TestClient, world: World, headers: dict[str, str], selected) -> list[tuple[str, str, int]]:  # type: ignore[no-untyped-def]
    answers = []
    for method, template in sorted(set(route_table(client.app.routes))):
        if not selected(template):
            continue
        url = concrete(template, world)
        response = client.request(method, url, headers=headers, json={}, follow_redirects=False)
        answers.append((method, template, response.status_code, response.headers.get("location", "")))
    return answers


def writes(db: Database) -> int:
    with db.read() as conn:
        return conn.execute(select(func.count()).select_from(resource_versions)).scalar_one()


def test_every_route_turns_away_a_caller_without_credentials(client: TestClient, world: World, db: Database) -> None:
    client.cookies.clear()
    before = writes(db)
    answers = sweep(client, world, {}, lambda t: not is_open(t))
    assert answers, "the route table is empty: the sweep would prove nothing"
    let_in = [
        (m, t, s) for m, t, s, loc in answers if not (s in (401, 403) or s in (302, 303) and loc.startswith("/login"))
    ]
    assert let_in == []
    assert writes(db) == before


def test_another_sandboxs_credentials_reach_nothing_of_this_one(client: TestClient, world: World, db: Database) -> None:
    before = writes(db)
    for who in (world.outsider, world.stranger_trainer):
        answers = sweep(client, world, who, lambda t: ("{sandbox_id}" in t or "{cohort_id}" in t) and not is_open(t))
        assert answers
        # Web pages know nothing of bearer tokens: they send a caller without a session to sign in.
        let_in = [
            (m, t, s)
            for m, t, s, loc in answers
            if not (s in (403, 404) or s in (302, 303) and loc.startswith("/login"))
        ]
        assert let_in == []
    assert writes(db) == before


def test_a_trainee_is_turned_away_from_every_trainer_route(client: TestClient, world: World, db: Database) -> None:
    before = writes(db)
    answers = sweep(client, world, world.trainee, lambda t: t.startswith("/admin"))
    let_in = [(m, t, s) for m, t, s, loc in answers if s != 403]
    assert let_in == []
    # The trainer console, signed in on the web as the trainee.
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    signed_in = client.post(
        "/login",
        data={"email": world.victim_email, "password": PASSWORD, "csrf_token": token},
        follow_redirects=False,
    )
    assert signed_in.status_code == 303
    console = client.get("/trainer", follow_redirects=False)
    assert console.status_code == 403
    assert writes(db) == before


def test_a_signed_in_vendor_reaches_no_page_of_a_sandbox_not_its_own(
    client: TestClient, world: World, db: Database
) -> None:
    """A vendor opens the charts of its own sandbox (to launch its apps there): every page of another sandbox,
    read or posted with the vendor's own valid CSRF token, is still refused, and nothing is written."""
    with db.write() as conn:
        trainer = create_user(conn, "Val Trainer", "val@sweep.invalid", "trainer")
        vendor = create_user(conn, "Vee Vendor", "vee@sweep.invalid", "vendor", password=PASSWORD)
        own = add_member(conn, create_cohort(conn, "Vendors", trainer.id, baseline_id=world.baseline).id, vendor.id)
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    signed_in = client.post(
        "/login", data={"email": "vee@sweep.invalid", "password": PASSWORD, "csrf_token": token}, follow_redirects=False
    )
    assert signed_in.status_code == 303
    mine = client.get(f"/chart/{own.sandbox_id}/patients")
    assert mine.status_code == 200  # the vendor's own sandbox opens: the sweep below is about the others
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', mine.text).group(1)  # type: ignore[union-attr]
    before = writes(db)
    answers = []
    for method, template in sorted(set(route_table(client.app.routes))):
        if "{sandbox_id}" not in template or template.startswith("/sandboxes/") or is_open(template):
            continue
        url = concrete(template, world)
        if method == "POST":
            response = client.post(url, data={"csrf_token": csrf}, follow_redirects=False)
        else:
            response = client.request(method, url, follow_redirects=False)
        answers.append((method, template, response.status_code))
    assert any(t.startswith("/chart/") for _, t, _ in answers), "no chart page was swept"
    # The admin API takes bearer tokens only: a session cookie is no credential there (401).
    assert [(m, t, s) for m, t, s in answers if s not in (401, 403, 404)] == []
    assert writes(db) == before


@pytest.mark.parametrize("value", [*SQL, SCRIPT])
def test_injection_in_search_parameters_finds_nothing_and_breaks_nothing(
    client: TestClient, world: World, db: Database, value: str
) -> None:
    base = f"/sandboxes/{world.victim_sandbox}/fhir"
    before = writes(db)
    for param in ("name", "family", "identifier", "_id", "gender", "birthdate", "general-practitioner", "_tag"):
        response = client.get(f"{base}/Patient", params={param: value}, headers=world.trainee)
        assert response.status_code in (200, 400), (param, response.status_code, response.text)
        assert response.headers["content-type"].startswith("application/fhir+json")  # never HTML: no script runs
        if response.status_code == 200:
            assert response.json().get("total", 0) == 0, param  # the value is a value, not SQL
    chained = client.get(f"{base}/Observation", params={"subject:Patient.name": value}, headers=world.trainee)
    assert chained.status_code in (200, 400)
    still = client.get(f"{base}/Patient", params={"family": "Victim"}, headers=world.trainee).json()
    assert still["total"] == 1  # the tables are all there
    assert writes(db) == before


def test_injection_in_form_fields_is_shown_escaped_and_signs_nobody_in(client: TestClient, world: World) -> None:
    for email, password in [(SCRIPT, "x"), (world.victim_email, SQL[0]), (f"{SQL[0]}@x.invalid", SQL[1])]:
        page = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        answer = client.post("/login", data={"email": email, "password": password, "csrf_token": token})
        assert answer.status_code in (200, 400, 401, 429)
        assert SCRIPT not in answer.text
        assert "session" not in "".join(answer.headers.get_list("set-cookie")).lower() or answer.status_code != 303
    home = client.get("/", follow_redirects=False)
    assert home.status_code in (302, 303)  # still signed out
