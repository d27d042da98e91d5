"""The vendor console's CDS services page: registering a vendor's service by its discovery URL (a real HTTP
server on a local port), each refusal beside its field, refresh, delete, the CDS Hooks log and one call's
request and response, and who may see and change which sandbox."""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import unescape
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sandbox.accounts.cohorts import create_cohort
from sandbox.accounts.roster import RosterLine
from sandbox.cdshooks import services
from sandbox.cdshooks.hooks import HookUser
from sandbox.store.database import Database
from tests.sandbox.cdshooks.conftest import ROOT, VendorService, run
from tests.web.console_data import CASE, csrf_token, make_user, sign_in, small_case_baseline

PAGE = "/vendor/cds-services"


@dataclass
class People:
    acme_id: str
    acme_sandbox: str
    other_sandbox: str


@pytest.fixture
def people(app: FastAPI, db: Database) -> People:
    baseline = small_case_baseline(app)
    tom = make_user(db, "Tom Trainer", "tom@example.org", "trainer")
    acme = make_user(db, "Acme Apps", "dev@acme.example", "vendor")
    make_user(db, "Other Apps", "dev@other.example", "vendor")
    make_user(db, "Ann Admin", "admin@example.org", "admin")
    make_user(db, "Tess Trainee", "tess@example.org", "trainee")
    roster = [RosterLine("Acme Apps", "dev@acme.example", "vendor"), RosterLine("Other", "dev@other.example", "vendor")]
    with db.write() as conn:
        cohort = create_cohort(conn, "Integrators", tom.id, baseline_id=baseline, roster=roster)
    sandboxes = {m.user.email: m.sandbox_id for m in cohort.members}
    return People(acme.id, sandboxes["dev@acme.example"], sandboxes["dev@other.example"])


def register(client: TestClient, sandbox: str, url: str, **fields: str) -> Any:
    form = {"csrf_token": csrf_token(client, PAGE), "sandbox": sandbox, "discovery_url": url} | fields
    return client.post(PAGE, data=form, follow_redirects=False)


def registrations(db: Database, sandbox: str) -> list[str]:
    with db.read() as conn:
        return [r.id for r in services.listing(conn, sandbox)]


def section(html: str, sandbox: str) -> str:
    """The page's section of one sandbox."""
    found = re.search(rf'<section class="sandbox" data-sandbox="{re.escape(sandbox)}">(.*?)</section>', html, re.S)
    assert found is not None, f"no section for {sandbox}"
    return found.group(1)


def field_error(html: str, field: str) -> str:
    assert f'aria-describedby="{field}-error"' in html
    return html.split(f'id="{field}-error">')[1].split("</span>")[0]


def pre(html: str, element_id: str) -> str:
    return html.split(f'<pre id="{element_id}">')[1].split("</pre>")[0]


def post(client: TestClient, path: str) -> Any:
    return client.post(path, data={"csrf_token": csrf_token(client, PAGE)}, follow_redirects=False)


def test_a_vendor_registers_a_service_by_its_discovery_url_and_sees_it_listed(
    client: TestClient, db: Database, people: People, vendor: VendorService, admin_headers: dict[str, str]
) -> None:
    sign_in(client, "dev@acme.example")
    assert "CDS services" in client.get("/vendor").text  # in the console's navigation
    before = client.get(PAGE).text
    assert 'data-registration="builtin" data-service="ai-risk-model"' in section(before, people.acme_sandbox)
    assert f'data-sandbox="{people.other_sandbox}"' not in before  # another vendor's sandbox is not shown

    answer = register(client, people.acme_sandbox, vendor.base + "/cds-services")
    assert answer.status_code == 303
    assert answer.headers["location"] == f"{PAGE}?sandbox={people.acme_sandbox}&done=registered"
    assert [name for name, _headers, _body in vendor.received] == ["discovery"]  # read over HTTP, once
    page = client.get(answer.headers["location"]).text
    assert "Service registered." in page
    listed = section(page, people.acme_sandbox)
    reg = f"127-0-0-1-{vendor.port}"
    row = listed.split(f'<tr data-registration="{reg}" data-service="greeter">')[1].split("</tr>")[0]
    assert f"<code>{reg}</code><br>vendor's" in row and f"<code>{vendor.base}/cds-services</code>" in row
    assert "<td>Greeter</td>" in row and "<code>patient-view</code>" in row
    assert "<code>patient</code>, <code>allergies</code>, <code>nothing</code>, <code>user</code>" in row
    assert f'action="{PAGE}/{people.acme_sandbox}/{reg}/refresh"' in row
    assert "built-in (this EHR's demo services)" in listed and "http://testserver/cds-services" in listed
    assert registrations(db, people.acme_sandbox) == ["builtin", reg]
    # The admin API sees the same registration: one store, one function.
    api = client.get(f"/admin/sandboxes/{people.acme_sandbox}/cds-services", headers=admin_headers).json()
    assert [s["id"] for s in api["registrations"][1]["services"]] == ["greeter"]
    # The discovery exchange is in the sandbox's log.
    assert "<td>discovery</td>" in listed and f"<code>{vendor.base}/cds-services</code>" in listed


@pytest.mark.parametrize(
    ("url", "discovery", "fields", "field", "message"),
    [
        ("", None, {}, "discovery_url", "&#39;discovery_url&#39; is required"),
        ("{base}/services", None, {}, "discovery_url", "is not a discovery URL"),
        ("ftp://example.org/cds-services", None, {}, "discovery_url", "is not an absolute http(s) URL"),
        ("http://127.0.0.1:9/cds-services", None, {}, "discovery_url", "Discovery at http://127.0.0.1:9/cds-services"),
        ("{base}/cds-services", "garbage", {}, "discovery_url", "failed: The answer is not JSON"),
        ("{base}/cds-services", {"services": [{"id": "x"}]}, {}, "discovery_url", "services[0].hook is required"),
        ("{base}/cds-services", {"cards": []}, {}, "discovery_url", "not a JSON object with a &#34;services&#34;"),
        ("{base}/cds-services", None, {"registration_id": "bad id!"}, "registration_id", "is not a usable id"),
        ("{base}/cds-services", None, {"registration_id": "builtin"}, "registration_id", "is not a usable id"),
    ],
)
def test_a_refused_registration_shows_the_reason_beside_the_field_and_stores_nothing(
    client: TestClient,
    db: Database,
    people: People,
    vendor: VendorService,
    url: str,
    discovery: Any,
    fields: dict[str, str],
    field: str,
    message: str,
) -> None:
    if discovery is not None:
        vendor.discovery = discovery
    sign_in(client, "dev@acme.example")
    answer = register(client, people.acme_sandbox, url.format(base=vendor.base), **fields)
    assert answer.status_code == 400
    assert "The service was not registered" in answer.text
    assert message in field_error(answer.text, field)
    assert f'value="{url.format(base=vendor.base)}"' in answer.text  # what was typed, to mend
    assert f'<option value="{people.acme_sandbox}" selected>' in answer.text
    assert registrations(db, people.acme_sandbox) == ["builtin"]


def test_a_url_or_id_registered_already_is_refused_beside_its_field(
    client: TestClient, db: Database, people: People, vendor: VendorService
) -> None:
    sign_in(client, "dev@acme.example")
    url = vendor.base + "/cds-services"
    assert register(client, people.acme_sandbox, url, registration_id="greeter.v1").status_code == 303
    again = register(client, people.acme_sandbox, url)
    assert again.status_code == 400 and "is registered already, as &#39;greeter.v1&#39;" in field_error(
        again.text, "discovery_url"
    )
    taken = register(client, people.acme_sandbox, url + "/", registration_id="greeter.v1")
    assert taken.status_code == 400
    assert "is registered already" in field_error(taken.text, "discovery_url")  # the same URL, slash aside
    with db.write() as conn:  # a second URL under a taken id
        services.remove(conn, people.acme_sandbox, "greeter.v1")
        services.add(conn, people.acme_sandbox, "https://elsewhere.example/cds-services", [], registration_id="x")
    clash = register(client, people.acme_sandbox, url, registration_id="x")
    assert clash.status_code == 400 and "has a registration &#39;x&#39; already" in field_error(
        clash.text, "registration_id"
    )
    assert registrations(db, people.acme_sandbox) == ["builtin", "x"]
    assert register(client, "", url).status_code == 400  # no sandbox chosen
    assert "Choose the sandbox" in field_error(register(client, "", url).text, "sandbox")


def test_refresh_reads_discovery_again_and_a_failed_refresh_keeps_the_services(
    client: TestClient, db: Database, people: People, vendor: VendorService
) -> None:
    sign_in(client, "dev@acme.example")
    register(client, people.acme_sandbox, vendor.base + "/cds-services", registration_id="acme")
    vendor.discovery["services"].append({"id": "signer", "hook": "order-sign", "description": "Checks orders"})
    answer = post(client, f"{PAGE}/{people.acme_sandbox}/acme/refresh")
    assert answer.status_code == 303 and answer.headers["location"].endswith("&done=refreshed")
    page = client.get(answer.headers["location"]).text
    assert "Discovery read again" in page
    assert 'data-registration="acme" data-service="signer"' in page and "<code>order-sign</code>" in page

    vendor.discovery = "garbage"
    failed = post(client, f"{PAGE}/{people.acme_sandbox}/acme/refresh")
    assert failed.status_code == 502
    assert re.search(r'id="refresh-error">Discovery at [^<]+ failed: The answer is not JSON</p>', failed.text)
    assert 'data-registration="acme" data-service="signer"' in failed.text  # the old services stay
    with db.read() as conn:
        assert [s.id for s in services.get(conn, people.acme_sandbox, "acme").services] == ["greeter", "signer"]
    assert post(client, f"{PAGE}/{people.acme_sandbox}/nothing/refresh").status_code == 404


def test_delete_removes_a_registration_and_the_built_in_services_can_be_put_back(
    client: TestClient, db: Database, people: People, vendor: VendorService
) -> None:
    sign_in(client, "dev@acme.example")
    register(client, people.acme_sandbox, vendor.base + "/cds-services", registration_id="acme")
    answer = post(client, f"{PAGE}/{people.acme_sandbox}/acme/delete")
    assert answer.status_code == 303 and "Registration deleted." in client.get(answer.headers["location"]).text
    assert registrations(db, people.acme_sandbox) == ["builtin"]
    assert post(client, f"{PAGE}/{people.acme_sandbox}/acme/delete").status_code == 404

    assert post(client, f"{PAGE}/{people.acme_sandbox}/builtin/delete").status_code == 303
    assert registrations(db, people.acme_sandbox) == []
    page = section(client.get(PAGE).text, people.acme_sandbox)
    assert "No services: the chart calls none." in page and "Put the built-in demo services back" in page
    assert post(client, f"{PAGE}/{people.acme_sandbox}/builtin").status_code == 303
    assert registrations(db, people.acme_sandbox) == ["builtin"]


def test_the_log_lists_each_call_and_one_call_shows_its_request_and_response_escaped(
    client: TestClient, app: FastAPI, people: People, vendor: VendorService
) -> None:
    vendor.discovery["services"][0]["description"] = "Says <script>alert(1)</script>"
    sign_in(client, "dev@acme.example")
    register(client, people.acme_sandbox, vendor.base + "/cds-services", registration_id="acme")
    run(app.state.cds.patient_view(people.acme_sandbox, HookUser(people.acme_id), CASE, root=ROOT))

    page = section(client.get(PAGE).text, people.acme_sandbox)
    rows = re.findall(r'<tr data-call="([^"]+)">(.*?)</tr>', page, re.S)
    assert len(rows) == 3  # the discovery, then one hook call to each patient-view service: greeter, AI model
    [discovery_call] = [cid for cid, body in rows if "<td>discovery</td>" in body]
    [(greeter_call, greeter)] = [(cid, body) for cid, body in rows if "<code>acme/greeter</code>" in body]
    assert "<td>hook</td>" in greeter and "<code>patient-view</code>" in greeter and "<td>ok (HTTP 200)" in greeter
    assert "<td>1</td>" in greeter  # one card kept
    assert f'href="{PAGE}/{people.acme_sandbox}/log/{greeter_call}"' in greeter

    call = client.get(f"{PAGE}/{people.acme_sandbox}/log/{greeter_call}")
    assert call.status_code == 200
    sent = orjson.loads(unescape(pre(call.text, "call-request")))
    assert sent["hook"] == "patient-view" and sent["context"]["patientId"] == CASE
    assert sent["fhirAuthorization"]["access_token"].startswith("...")  # the log keeps only the token's tail
    received = orjson.loads(unescape(pre(call.text, "call-response")))
    assert [c["summary"] for c in received["cards"]] == ["Hello from the vendor", "no indicator"]  # as received
    assert "cards[1] dropped" in call.text  # why the chart did not show it

    shown = client.get(f"{PAGE}/{people.acme_sandbox}/log/{discovery_call}").text
    assert "Says &lt;script&gt;alert(1)&lt;/script&gt;" in pre(shown, "call-response") and "<script>alert" not in shown
    assert client.get(f"{PAGE}/{people.acme_sandbox}/log/no-such-call").status_code == 404
    assert client.get(f"{PAGE}/{people.other_sandbox}/log/{greeter_call}").status_code == 403


def test_another_vendors_sandbox_is_refused_and_nothing_of_it_changes(
    client: TestClient, db: Database, people: People, vendor: VendorService
) -> None:
    sign_in(client, "dev@acme.example")
    register(client, people.acme_sandbox, vendor.base + "/cds-services", registration_id="acme")
    vendor.received.clear()
    client.cookies.clear()
    sign_in(client, "dev@other.example")
    assert client.get(f"{PAGE}?sandbox={people.acme_sandbox}").status_code == 403
    assert client.get(f"{PAGE}?sandbox=no-such-sandbox").status_code == 404
    refused = register(client, people.acme_sandbox, vendor.base + "/cds-services", registration_id="mine")
    assert refused.status_code == 403 and vendor.received == []  # refused before the URL is even read
    assert register(client, "no-such-sandbox", vendor.base + "/cds-services").status_code == 404
    for action in ("refresh", "delete"):
        assert post(client, f"{PAGE}/{people.acme_sandbox}/acme/{action}").status_code == 403
        assert post(client, f"{PAGE}/{people.acme_sandbox}/nothing/{action}").status_code == 403
        assert post(client, f"{PAGE}/no-such-sandbox/acme/{action}").status_code == 404
    assert post(client, f"{PAGE}/{people.acme_sandbox}/builtin").status_code == 403
    assert registrations(db, people.acme_sandbox) == ["builtin", "acme"]
    assert vendor.received == []
    # Their own sandbox works as usual.
    assert register(client, people.other_sandbox, vendor.base + "/cds-services").status_code == 303


def test_trainees_trainers_and_strangers_are_refused_and_admins_see_every_sandbox(
    client: TestClient, db: Database, people: People, vendor: VendorService
) -> None:
    url = vendor.base + "/cds-services"
    anonymous = client.get(PAGE, follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")
    form = {"sandbox": people.acme_sandbox, "discovery_url": url}
    assert client.post(PAGE, data=form, follow_redirects=False).headers["location"].startswith("/login")
    for email in ("tess@example.org", "tom@example.org"):
        sign_in(client, email)
        assert client.get(PAGE).status_code == 403
        assert client.post(PAGE, data=form | {"csrf_token": csrf_token(client)}).status_code == 403
        client.cookies.clear()
    sign_in(client, "dev@acme.example")
    assert client.post(PAGE, data=form).status_code == 403  # no CSRF token
    assert registrations(db, people.acme_sandbox) == ["builtin"] and vendor.received == []
    client.cookies.clear()

    sign_in(client, "admin@example.org")
    page = client.get(PAGE).text
    assert all(f'data-sandbox="{s}"' in page for s in ("default", people.acme_sandbox, people.other_sandbox))
    assert register(client, people.other_sandbox, url, registration_id="by-admin").status_code == 303
    assert registrations(db, people.other_sandbox) == ["builtin", "by-admin"]
