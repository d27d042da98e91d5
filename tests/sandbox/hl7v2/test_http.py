"""``POST /sandboxes/{id}/hl7v2``: the same messages over HTTP, with the sandbox's FHIR API credentials rules."""

from __future__ import annotations

from tests.conftest import ADMIN_TOKEN
from tests.sandbox.hl7v2.conftest import adt, err, msa

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_the_default_sandbox_takes_a_message_without_credentials_and_answers_its_ack(client):
    response = client.post(
        "/sandboxes/default/hl7v2", content=adt(), headers={"Content-Type": "x-application/hl7-v2+er7"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("x-application/hl7-v2+er7")
    assert msa(response.text) == ("AA", "MSG0001")
    assert response.headers["X-HL7-Ack-Code"] == "AA"
    assert client.get("/fhir/Patient?identifier=12345").json()["total"] == 1


def test_another_sandbox_needs_credentials_and_routes_by_the_url(client):
    sandbox = client.post("/admin/sandboxes", json={"name": "ward 4"}, headers=ADMIN).json()["id"]
    message = adt(sandbox=sandbox)
    assert client.post(f"/sandboxes/{sandbox}/hl7v2", content=message).status_code == 401
    response = client.post(f"/sandboxes/{sandbox}/hl7v2", content=message, headers=ADMIN)
    assert msa(response.text)[0] == "AA"
    assert client.get(f"/sandboxes/{sandbox}/fhir/Patient", headers=ADMIN).json()["total"] == 1
    assert client.get("/fhir/Patient").json()["total"] == 0


def test_msh6_naming_another_sandbox_than_the_url_is_rejected(client):
    response = client.post("/sandboxes/default/hl7v2", content=adt(sandbox="elsewhere"))
    assert msa(response.text)[0] == "AR"
    assert err(response.text)[:2] == ("MSH^1^6^1", "204")
    assert client.get("/fhir/Patient").json()["total"] == 0


def test_an_unknown_sandbox_in_the_url_is_404(client):
    response = client.post("/sandboxes/nowhere/hl7v2", content=adt(sandbox="nowhere"), headers=ADMIN)
    assert response.status_code == 404


def test_an_empty_body_is_400_and_a_huge_one_413(client):
    assert client.post("/sandboxes/default/hl7v2", content=b"").status_code == 400
    assert client.post("/sandboxes/default/hl7v2", content=b"MSH" + b"x" * (2 * 1024 * 1024)).status_code == 413


def test_garbage_over_http_is_rejected_and_logged(client):
    response = client.post("/sandboxes/default/hl7v2", content=b"\x00\x01 not hl7")
    assert msa(response.text)[0] == "AR"
    [entry] = client.get("/sandboxes/default/hl7v2/messages").json()["messages"]
    assert entry["status"] == "rejected"


def test_strict_validation_refuses_what_the_standard_refuses_and_nothing_is_written(client):
    no_evn = "\r".join(s for s in adt().split("\r") if not s.startswith("EVN"))  # ADT_A01 requires EVN
    strict = client.post("/sandboxes/default/hl7v2?validate=strict", content=no_evn)
    assert msa(strict.text)[0] == "AE"
    location, code, text = err(strict.text)
    assert (location, code) == ("EVN^1", "100") and "ADT_A01.EVN" in text
    assert client.get("/fhir/Patient").json()["total"] == 0
    assert msa(client.post("/sandboxes/default/hl7v2?validate=strict", content=adt()).text)[0] == "AA"
    assert msa(client.post("/sandboxes/default/hl7v2", content=no_evn.replace("MSG0001", "M2")).text)[0] == "AA"


def test_strict_validation_points_at_the_field(client):
    missing_id = adt().replace("PID|1||12345^^^HOSP^MR|", "PID|1|||")
    response = client.post("/sandboxes/default/hl7v2?validate=strict", content=missing_id)
    assert msa(response.text)[0] == "AE" and err(response.text)[:2] == ("PID^1^3^1", "101")


def test_validate_takes_only_strict(client):
    assert client.post("/sandboxes/default/hl7v2?validate=lax", content=adt()).status_code == 400
