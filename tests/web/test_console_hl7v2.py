"""The vendor console's HL7 v2 pages: how to reach a sandbox, its destinations, a test message, the message log and
a message's page with resend and reprocess, each vendor in its own sandboxes only."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response

from sandbox.accounts.cohorts import create_cohort
from sandbox.accounts.roster import RosterLine
from sandbox.accounts.tokens import issue_token
from sandbox.hl7v2 import destinations, log
from sandbox.hl7v2.delivery import deliver_due, translate
from sandbox.hl7v2.mllp import Client
from sandbox.store.database import Database
from tests.sandbox.hl7v2.conftest import adt, msa
from tests.sandbox.hl7v2.test_outbound import ORDER, Destination, dead_port
from tests.web.console_data import csrf_token, make_user, sign_in
from web.console import hl7v2 as hl7v2_page

PAGE = "/vendor/hl7v2"


@dataclass
class Vendors:
    acme_sandbox: str
    acme_headers: dict[str, str]  # a bearer token of Acme's, for its sandbox's HTTP API
    other_sandbox: str


@pytest.fixture
def vendors(db: Database) -> Vendors:
    tom = make_user(db, "Tom Trainer", "tom@example.org", "trainer")
    acme = make_user(db, "Acme Interfaces", "dev@acme.example", "vendor")
    make_user(db, "Other Interfaces", "dev@other.example", "vendor")
    make_user(db, "Tess Trainee", "tess@example.org", "trainee")
    make_user(db, "Ann Admin", "admin@example.org", "admin")
    with db.write() as conn:
        roster = [
            RosterLine("Acme Interfaces", "dev@acme.example", "vendor"),
            RosterLine("Other Interfaces", "dev@other.example", "vendor"),
        ]
        cohort = create_cohort(conn, "Integrators", tom.id, roster=roster)
        _, secret = issue_token(conn, acme.id, "interfaces")
    sandboxes = {m.user.email: m.sandbox_id for m in cohort.members}
    return Vendors(sandboxes["dev@acme.example"], {"Authorization": f"Bearer {secret}"}, sandboxes["dev@other.example"])


@pytest.fixture
def acme(client: TestClient, vendors: Vendors) -> Vendors:
    """Acme signed in."""
    sign_in(client, "dev@acme.example")
    return vendors


def post_hl7(client: TestClient, v: Vendors, message: str) -> Response:
    answer = client.post(f"/sandboxes/{v.acme_sandbox}/hl7v2", content=message, headers=v.acme_headers)
    assert answer.status_code == 200, answer.text
    return answer


def entries(db: Database, sandbox_id: str, **filters: str) -> list[log.LogEntry]:
    with db.read() as conn:
        return log.listing(conn, sandbox_id, **filters)  # type: ignore[arg-type]


def sandbox_page(client: TestClient, v: Vendors, query: str = "") -> str:
    answer = client.get(f"{PAGE}/{v.acme_sandbox}{query}")
    assert answer.status_code == 200, answer.text
    return answer.text


def log_rows(page: str) -> list[str]:
    """The message log's rows, newest first."""
    if 'id="message-log"' not in page:
        return []
    return page.split('id="message-log"')[1].split("</table>")[0].split('<tr data-message="')[1:]


def post_form(client: TestClient, path: str, **fields: object) -> Response:
    data = {"csrf_token": csrf_token(client, PAGE)} | fields
    return client.post(path, data=data, follow_redirects=False)


# ---- the pages and the log ----------------------------------------------------------------------------------


def test_the_vendor_sees_its_sandboxes_and_how_to_reach_them(client: TestClient, acme: Vendors) -> None:
    index = client.get(PAGE)
    assert index.status_code == 200
    assert f'<tr data-sandbox="{acme.acme_sandbox}">' in index.text and acme.other_sandbox not in index.text
    assert f"POST http://testserver/sandboxes/{acme.acme_sandbox}/hl7v2" in index.text
    assert '<a href="/vendor/hl7v2" aria-current="page">HL7 v2 interfaces</a>' in index.text  # in the navigation
    assert "HL7 v2 interfaces" in client.get("/vendor").text
    page = sandbox_page(client, acme)
    assert '<code id="mllp-host">testserver</code>' in page and '<code id="mllp-port">2575</code>' in page
    assert f'<code id="msh-6">{acme.acme_sandbox}</code>' in page
    assert f"POST http://testserver/sandboxes/{acme.acme_sandbox}/hl7v2" in page
    assert 'id="no-destinations"' in page and 'id="empty-log"' in page


def test_the_page_names_the_listeners_port_and_a_message_over_mllp_is_in_the_log(
    app: FastAPI, db: Database, vendors: Vendors
) -> None:
    app.state.hl7v2.configure(host="127.0.0.1", mllp_port=0, deliver=False)
    with TestClient(app) as client:  # the lifespan starts the listener on a port the OS picks
        port = app.state.hl7v2.server.port
        with Client("127.0.0.1", port) as mllp:
            assert msa(mllp.send(adt(sandbox=vendors.acme_sandbox))) == ("AA", "MSG0001")
        sign_in(client, "dev@acme.example")
        page = sandbox_page(client, vendors)
    assert f'<code id="mllp-port">{port}</code>' in page and "does not listen for MLLP" not in page
    [row] = log_rows(page)
    assert "<td>ADT^A04</td>" in row and '<td class="check-pass">accepted</td>' in row


def test_an_inbound_message_is_in_the_log_and_its_page_shows_the_er7_the_ack_and_the_resources(
    client: TestClient, acme: Vendors
) -> None:
    # A name with markup in it: every value on the page is escaped.
    post_hl7(client, acme, adt(sandbox=acme.acme_sandbox, family="<b>Doe</b>"))
    [row] = log_rows(sandbox_page(client, acme))
    for cell in ("<td>inbound</td>", "<td>ADT^A04</td>", "<code>MSG0001</code>", "<code>LABSYS^HOSP</code>"):
        assert cell in row
    assert '<td class="check-pass">accepted</td>' in row and "<td>AA</td>" in row
    message_id = row.split('"')[0]
    page = client.get(f"{PAGE}/{acme.acme_sandbox}/messages/{message_id}")
    assert page.status_code == 200
    er7 = page.text.split('<pre id="message-er7">')[1].split("</pre>")[0]
    lines = er7.split("\n")
    assert lines[0].startswith("MSH|^~\\&amp;|LABSYS|HOSP|EHR|") and [line[:3] for line in lines[1:]] == [
        "EVN",
        "PID",
        "PV1",
    ]
    assert "&lt;b&gt;Doe&lt;/b&gt;" in er7 and "<b>Doe</b>" not in page.text
    ack = page.text.split('<pre id="message-ack">')[1].split("</pre>")[0]
    assert ack.split("\n")[1].startswith("MSA|AA|MSG0001")
    resources = page.text.split('<ul id="message-resources">')[1].split("</ul>")[0]
    assert re.search(r"<code>Patient/[^/]+/_history/1</code>", resources)
    assert re.search(r"<code>Encounter/[^/]+/_history/1</code>", resources)
    assert "&#34;resourceType&#34;: &#34;Patient&#34;" in resources  # the stored version, indented JSON
    assert 'id="message-status">accepted' in page.text and "Reprocess</button>" in page.text
    assert "Resend</button>" not in page.text


def test_a_refused_message_shows_its_errors_beside_its_ack(client: TestClient, db: Database, acme: Vendors) -> None:
    post_hl7(client, acme, adt("A08", "NOPID", sandbox=acme.acme_sandbox, mrn=""))
    [entry] = entries(db, acme.acme_sandbox)
    page = client.get(f"{PAGE}/{acme.acme_sandbox}/messages/{entry.id}").text
    assert 'class="check-fail" id="message-status">error' in page and 'id="message-ack-code">AE' in page
    errors = page.split('<table id="ack-errors">')[1].split("</table>")[0]
    assert "<code>PID^1^3^1</code>" in errors and "101 Required field missing" in errors


def test_the_log_filters_by_direction_and_status_and_pages(
    client: TestClient, db: Database, acme: Vendors, monkeypatch: pytest.MonkeyPatch
) -> None:
    post_hl7(client, acme, adt("A04", "A", sandbox=acme.acme_sandbox))
    post_hl7(client, acme, adt("A08", "B", sandbox=acme.acme_sandbox, mrn=""))
    post_hl7(client, acme, adt("A08", "C", sandbox=acme.acme_sandbox, family="Dough"))
    rows = log_rows(sandbox_page(client, acme))
    assert [re.findall(r"<code>(\w+)</code></a>", row) for row in rows] == [["C"], ["B"], ["A"]]
    [error] = log_rows(sandbox_page(client, acme, "?status=error"))
    assert "<code>B</code>" in error
    assert log_rows(sandbox_page(client, acme, "?direction=inbound&status=accepted")) != []
    assert 'id="empty-log"' in sandbox_page(client, acme, "?direction=outbound")
    for bad in ("?direction=sideways", "?status=lost", "?direction=outbound&status=accepted", "?page=0", "?page=x"):
        assert client.get(f"{PAGE}/{acme.acme_sandbox}{bad}").status_code == 400, bad

    monkeypatch.setattr(hl7v2_page, "LOG_PAGE", 2)
    first = sandbox_page(client, acme, "?direction=inbound")
    assert len(log_rows(first)) == 2 and 'rel="next"' in first and 'rel="prev"' not in first
    older = re.search(r'<a href="([^"]+)" rel="next">', first).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
    assert older == f"{PAGE}/{acme.acme_sandbox}?direction=inbound&page=2#log"
    second = sandbox_page(client, acme, "?direction=inbound&page=2")
    assert [r.count("<code>A</code>") for r in log_rows(second)] == [1] and 'rel="prev"' in second


def test_reprocess_applies_a_logged_message_again_as_a_new_entry(
    client: TestClient, db: Database, acme: Vendors
) -> None:
    post_hl7(client, acme, adt(sandbox=acme.acme_sandbox))
    [entry] = entries(db, acme.acme_sandbox)
    answer = post_form(client, f"{PAGE}/{acme.acme_sandbox}/messages/{entry.id}/reprocess")
    assert answer.status_code == 303
    [new, old] = entries(db, acme.acme_sandbox)
    assert old.id == entry.id and new.status == "accepted" and new.control_id == "MSG0001"
    assert answer.headers["location"] == f"{PAGE}/{acme.acme_sandbox}/messages/{new.id}?done=reprocessed"
    assert "Applied again" in client.get(answer.headers["location"]).text
    patient = client.get(f"/sandboxes/{acme.acme_sandbox}/fhir/Patient", headers=acme.acme_headers).json()
    assert patient["total"] == 1 and patient["entry"][0]["resource"]["meta"]["versionId"] == "2"
    resend = post_form(client, f"{PAGE}/{acme.acme_sandbox}/messages/{entry.id}/resend")
    assert resend.status_code == 409 and "Only outbound messages are resent" in resend.text
    assert len(entries(db, acme.acme_sandbox)) == 2


def test_an_outbound_message_is_resent_from_its_page(
    client: TestClient, app: FastAPI, db: Database, acme: Vendors
) -> None:
    lab = Destination()
    try:
        saved = post_form(
            client,
            f"{PAGE}/{acme.acme_sandbox}/destinations",
            destination_id="lab",
            host="127.0.0.1",
            port=str(lab.port),
            message_types=["ORM^O01"],
            receiving_application="LIS",
            receiving_facility="LAB",
            enabled="on",
        )
        assert saved.status_code == 303
        post_hl7(client, acme, adt(sandbox=acme.acme_sandbox))
        patient_id = client.get(f"/sandboxes/{acme.acme_sandbox}/fhir/Patient", headers=acme.acme_headers).json()
        order = {**ORDER, "subject": {"reference": f"Patient/{patient_id['entry'][0]['resource']['id']}"}}
        base = f"/sandboxes/{acme.acme_sandbox}/fhir"
        assert client.post(f"{base}/ServiceRequest", json=order, headers=acme.acme_headers).status_code == 201
        translate(db, app.state.fhir)
        assert deliver_due(db, "w1") == 1
        [sent] = entries(db, acme.acme_sandbox, direction="outbound")
        assert sent.status == "delivered" and sent.attempts == 1 and len(lab.received) == 1
        page = client.get(f"{PAGE}/{acme.acme_sandbox}/messages/{sent.id}").text
        assert 'id="message-attempts">1' in page and "Resend</button>" in page and "Reprocess</button>" not in page
        assert re.search(r"<code>ServiceRequest/[^/]+/_history/1</code>", page)  # what it was built from
        assert page.split('<pre id="message-ack">')[1].split("\n")[1].startswith(f"MSA|AA|{sent.control_id}")

        answer = post_form(client, f"{PAGE}/{acme.acme_sandbox}/messages/{sent.id}/resend")
        assert answer.status_code == 303
        assert answer.headers["location"] == f"{PAGE}/{acme.acme_sandbox}/messages/{sent.id}?done=resent"
        [queued] = entries(db, acme.acme_sandbox, direction="outbound")
        assert queued.status == "pending" and queued.attempts == 0
        assert deliver_due(db, "w1") == 1
        assert lab.received == [sent.content, sent.content]  # the same message again
        assert entries(db, acme.acme_sandbox, direction="outbound")[0].status == "delivered"
        reprocess = post_form(client, f"{PAGE}/{acme.acme_sandbox}/messages/{sent.id}/reprocess")
        assert reprocess.status_code == 409 and "Only inbound messages are reprocessed" in reprocess.text
    finally:
        lab.close()


# ---- destinations ----------------------------------------------------------------------------------------------

GOOD_DESTINATION = {
    "destination_id": "lab",
    "host": "10.0.0.5",
    "port": "2575",
    "message_types": ["ORM^O01", "ORU^R01"],
    "receiving_application": "LIS",
    "receiving_facility": "LAB",
    "enabled": "on",
}


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"destination_id": "bad id!"}, "destination_id", "not a valid destination id"),
        ({"destination_id": ""}, "destination_id", "not a valid destination id"),
        ({"host": " "}, "host", "host is required"),
        ({"port": "abc"}, "port", "a number from 1 to 65535"),
        ({"port": "70000"}, "port", "a number from 1 to 65535"),
        ({"port": "9" * 5000}, "port", "a number from 1 to 65535"),
        ({"port": ""}, "port", "port is required"),
        ({"message_types": []}, "message_types", "non-empty list"),
        ({"message_types": ["ADT^A04"]}, "message_types", "non-empty list"),
    ],
)
def test_a_bad_destination_is_refused_beside_its_field_and_nothing_is_stored(
    client: TestClient, db: Database, acme: Vendors, fields: dict[str, object], field: str, message: str
) -> None:
    answer = post_form(client, f"{PAGE}/{acme.acme_sandbox}/destinations", **(GOOD_DESTINATION | fields))
    assert answer.status_code == 400
    assert f'id="{field}-error">' in answer.text
    assert message in answer.text.split(f'id="{field}-error">')[1].split("</span>")[0]
    assert f'aria-describedby="{field}-error"' in answer.text
    assert 'value="10.0.0.5"' in answer.text or field == "host"  # what was typed is shown again
    with db.read() as conn:
        assert destinations.listing(conn, acme.acme_sandbox) == []


def test_a_destination_is_added_changed_and_deleted(client: TestClient, db: Database, acme: Vendors) -> None:
    path = f"{PAGE}/{acme.acme_sandbox}/destinations"
    answer = post_form(client, path, **GOOD_DESTINATION)
    assert answer.status_code == 303
    assert "Destination saved." in client.get(answer.headers["location"]).text
    with db.read() as conn:
        [lab] = destinations.listing(conn, acme.acme_sandbox)
    assert (lab.host, lab.port, lab.message_types, lab.receiving_facility, lab.enabled) == (
        "10.0.0.5",
        2575,
        ("ORM^O01", "ORU^R01"),
        "LAB",
        True,
    )
    # The API sees what the console stored: one service behind both.
    api = client.get(f"/sandboxes/{acme.acme_sandbox}/hl7v2/destinations", headers=acme.acme_headers).json()
    assert api["destinations"] == [lab.to_json()]

    form = sandbox_page(client, acme, "?edit=lab")
    assert 'id="port" name="port" size="6" inputmode="numeric" value="2575"' in form
    assert 'value="ORU^R01" checked' in form and 'value="REF^I12">' in form
    assert client.get(f"{PAGE}/{acme.acme_sandbox}?edit=nobody").status_code == 404
    changed = GOOD_DESTINATION | {"port": "2576", "message_types": ["ADT^A08"], "receiving_application": ""}
    changed.pop("enabled")
    assert post_form(client, path, **changed).status_code == 303
    with db.read() as conn:
        [lab] = destinations.listing(conn, acme.acme_sandbox)
    assert (lab.port, lab.message_types, lab.receiving_application, lab.enabled) == (2576, ("ADT^A08",), "lab", False)

    assert post_form(client, f"{path}/nobody/delete").status_code == 404
    deleted = post_form(client, f"{path}/lab/delete")
    assert deleted.status_code == 303 and "Destination deleted." in client.get(deleted.headers["location"]).text
    with db.read() as conn:
        assert destinations.listing(conn, acme.acme_sandbox) == []


# ---- the test message form ---------------------------------------------------------------------------------------


def test_a_test_message_is_applied_and_its_ack_shown(client: TestClient, db: Database, acme: Vendors) -> None:
    typed = adt(sandbox=acme.acme_sandbox).replace("\r", "\r\n")  # as a textarea sends it
    answer = post_form(client, f"{PAGE}/{acme.acme_sandbox}/send", message=typed)
    assert answer.status_code == 200
    assert (
        '<strong class="check-pass" id="sent-code">AA</strong> (accepted), writing 2 resource versions' in answer.text
    )
    ack = answer.text.split('<pre id="sent-ack" aria-label="The acknowledgment">')[1].split("</pre>")[0]
    assert ack.split("\n")[1].startswith("MSA|AA|MSG0001")
    [entry] = entries(db, acme.acme_sandbox)
    assert f'href="{PAGE}/{acme.acme_sandbox}/messages/{entry.id}" id="sent-entry"' in answer.text
    assert entry.content == adt(sandbox=acme.acme_sandbox)  # segments end with CR, as sent over MLLP
    assert len(log_rows(answer.text)) == 1

    again = post_form(client, f"{PAGE}/{acme.acme_sandbox}/send", message=typed)
    assert "(duplicate)" in again.text  # the same control id: acknowledged, not applied twice


def test_a_test_message_for_another_sandbox_or_none_is_answered_or_refused(
    client: TestClient, db: Database, acme: Vendors
) -> None:
    elsewhere = post_form(client, f"{PAGE}/{acme.acme_sandbox}/send", message=adt(sandbox="default"))
    assert elsewhere.status_code == 200 and 'id="sent-code">AR</strong> (rejected)' in elsewhere.text
    assert "It is in no log" in elsewhere.text and "MSH-6 names sandbox &#39;default&#39;" in elsewhere.text
    empty = post_form(client, f"{PAGE}/{acme.acme_sandbox}/send", message="  \r\n")
    assert empty.status_code == 400 and 'id="message-error">Paste one HL7 v2 message' in empty.text
    assert 'value="ORM^O01" checked' in empty.text  # the destination form as it starts
    garbage = post_form(client, f"{PAGE}/{acme.acme_sandbox}/send", message="hello")
    assert 'id="sent-code">AR</strong>' in garbage.text
    assert [e.status for e in entries(db, acme.acme_sandbox)] == ["rejected"]
    with db.read() as conn:
        assert log.listing(conn, "default") == []


# ---- who may do what ---------------------------------------------------------------------------------------------


@pytest.fixture
def acme_message(client: TestClient, db: Database, vendors: Vendors) -> Iterator[str]:
    post_hl7(client, vendors, adt(sandbox=vendors.acme_sandbox))
    [entry] = entries(db, vendors.acme_sandbox)
    yield entry.id


def test_another_vendor_gets_403_for_every_page_and_post_and_changes_nothing(
    client: TestClient, db: Database, vendors: Vendors, acme_message: str
) -> None:
    sign_in(client, "dev@other.example")
    theirs = f"{PAGE}/{vendors.acme_sandbox}"
    assert vendors.acme_sandbox not in client.get(PAGE).text
    assert client.get(theirs).status_code == 403
    assert client.get(f"{theirs}/messages/{acme_message}").status_code == 403
    for path, fields in (
        (f"{theirs}/messages/{acme_message}/reprocess", {}),
        (f"{theirs}/messages/{acme_message}/resend", {}),
        (f"{theirs}/destinations", GOOD_DESTINATION),
        (f"{theirs}/destinations/lab/delete", {}),
        (f"{theirs}/send", {"message": adt("A04", "X2", sandbox=vendors.acme_sandbox)}),
    ):
        assert post_form(client, path, **fields).status_code == 403, path
    # Its own sandbox does not hold Acme's message either.
    assert client.get(f"{PAGE}/{vendors.other_sandbox}/messages/{acme_message}").status_code == 404
    assert client.get(f"{PAGE}/no-such-sandbox").status_code == 404
    assert post_form(client, f"{PAGE}/no-such-sandbox/destinations", **GOOD_DESTINATION).status_code == 404
    assert [e.id for e in entries(db, vendors.acme_sandbox)] == [acme_message]
    with db.read() as conn:
        assert destinations.listing(conn, vendors.acme_sandbox) == []


def test_an_unknown_message_is_404(client: TestClient, acme: Vendors, acme_message: str) -> None:
    assert client.get(f"{PAGE}/{acme.acme_sandbox}/messages/nope").status_code == 404
    assert post_form(client, f"{PAGE}/{acme.acme_sandbox}/messages/nope/reprocess").status_code == 404
    assert post_form(client, f"{PAGE}/{acme.acme_sandbox}/messages/nope/resend").status_code == 404


@pytest.mark.parametrize("email", ["tess@example.org", "tom@example.org"])
def test_trainees_and_trainers_get_403(
    client: TestClient, db: Database, vendors: Vendors, acme_message: str, email: str
) -> None:
    sign_in(client, email)
    assert client.get(PAGE).status_code == 403
    assert client.get(f"{PAGE}/{vendors.acme_sandbox}/messages/{acme_message}").status_code == 403
    token = csrf_token(client, "/")
    path = f"{PAGE}/{vendors.acme_sandbox}/messages/{acme_message}/reprocess"
    assert client.post(path, data={"csrf_token": token}).status_code == 403
    assert len(entries(db, vendors.acme_sandbox)) == 1


def test_anonymous_is_sent_to_sign_in_and_a_post_without_its_csrf_token_is_refused(
    client: TestClient, db: Database, vendors: Vendors, acme_message: str
) -> None:
    page = client.get(f"{PAGE}/{vendors.acme_sandbox}", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login?next=")
    path = f"{PAGE}/{vendors.acme_sandbox}/destinations"
    assert client.post(path, data=GOOD_DESTINATION, follow_redirects=False).headers["location"] == "/login"
    sign_in(client, "dev@acme.example")
    assert client.post(path, data=GOOD_DESTINATION).status_code == 403
    reprocess = f"{PAGE}/{vendors.acme_sandbox}/messages/{acme_message}/reprocess"
    assert client.post(reprocess, data={"csrf_token": "forged"}).status_code == 403
    assert len(entries(db, vendors.acme_sandbox)) == 1
    with db.read() as conn:
        assert destinations.listing(conn, vendors.acme_sandbox) == []


def test_an_admin_sees_every_sandbox(client: TestClient, vendors: Vendors, acme_message: str) -> None:
    sign_in(client, "admin@example.org")
    index = client.get(PAGE).text
    for sandbox_id in (vendors.acme_sandbox, vendors.other_sandbox, "default"):
        assert f'<tr data-sandbox="{sandbox_id}">' in index
    assert client.get(f"{PAGE}/{vendors.acme_sandbox}/messages/{acme_message}").status_code == 200


def test_a_dead_destination_shows_the_failed_attempt(
    client: TestClient, app: FastAPI, db: Database, acme: Vendors
) -> None:
    fields = GOOD_DESTINATION | {"host": "127.0.0.1", "port": str(dead_port()), "message_types": ["ADT^A08"]}
    assert post_form(client, f"{PAGE}/{acme.acme_sandbox}/destinations", **fields).status_code == 303
    post_hl7(client, acme, adt(sandbox=acme.acme_sandbox))
    headers = acme.acme_headers
    patient = client.get(f"/sandboxes/{acme.acme_sandbox}/fhir/Patient", headers=headers).json()["entry"][0]["resource"]
    updated = patient | {"gender": "female"}
    base = f"/sandboxes/{acme.acme_sandbox}/fhir"
    assert client.put(f"{base}/Patient/{patient['id']}", json=updated, headers=headers).status_code == 200
    translate(db, app.state.fhir)
    assert deliver_due(db, "w1", timeout=2.0) == 1
    [row] = log_rows(sandbox_page(client, acme, "?direction=outbound&status=pending"))
    assert "<td>ADT^A08</td>" in row and "attempt 1 to 127.0.0.1" in row
    message_id = row.split('"')[0]
    page = client.get(f"{PAGE}/{acme.acme_sandbox}/messages/{message_id}").text
    assert 'id="message-attempts">1' in page and "attempt 1 to 127.0.0.1" in page and "None yet." in page
