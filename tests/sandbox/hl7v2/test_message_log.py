"""The message log API: list, view, reprocess; per sandbox, behind the sandbox's credentials; cleared by a reset."""

from __future__ import annotations

from tests.conftest import ADMIN_TOKEN
from tests.sandbox.hl7v2.conftest import adt, msa

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
LOG = "/sandboxes/default/hl7v2/messages"


def test_an_entry_shows_the_message_its_ack_and_the_resources_it_wrote(client):
    client.post("/sandboxes/default/hl7v2", content=adt())
    [summary] = client.get(LOG).json()["messages"]
    assert summary["direction"] == "inbound" and summary["message_type"] == "ADT^A04"
    assert summary["peer"] == "LABSYS^HOSP" and summary["status"] == "accepted" and summary["ack_code"] == "AA"
    assert "content" not in summary
    entry = client.get(f"{LOG}/{summary['id']}").json()
    assert entry["content"].startswith("MSH|^~\\&|LABSYS|HOSP|EHR|default|")
    assert msa(entry["ack"]) == ("AA", "MSG0001")
    assert [r.split("/")[0] for r in entry["resources"]] == ["Patient", "Encounter"]
    assert all(r.endswith("/_history/1") for r in entry["resources"])


def test_the_log_filters_by_direction_status_type_and_control_id(client):
    client.post("/sandboxes/default/hl7v2", content=adt("A04", "A"))
    client.post("/sandboxes/default/hl7v2", content=adt("A08", "B", family="Dough"))
    client.post("/sandboxes/default/hl7v2", content=adt("A08", "C", mrn=""))
    assert [m["control_id"] for m in client.get(f"{LOG}?message_type=ADT^A08").json()["messages"]] == ["C", "B"]
    assert [m["control_id"] for m in client.get(f"{LOG}?status=error").json()["messages"]] == ["C"]
    assert client.get(f"{LOG}?direction=outbound").json()["messages"] == []
    assert client.get(f"{LOG}?direction=sideways").status_code == 400
    assert client.get(f"{LOG}?limit=0").status_code == 400


def test_reprocess_applies_a_logged_message_again(client):
    client.post("/sandboxes/default/hl7v2", content=adt())
    [entry] = client.get(LOG).json()["messages"]
    result = client.post(f"{LOG}/{entry['id']}/reprocess").json()
    assert result["ack_code"] == "AA"
    patient = client.get("/fhir/Patient").json()["entry"][0]["resource"]
    assert patient["meta"]["versionId"] == "2"  # the same patient, matched by PID-3, updated again
    assert len(client.get(LOG).json()["messages"]) == 2


def test_an_unknown_entry_is_404_and_resending_an_inbound_one_is_409(client):
    client.post("/sandboxes/default/hl7v2", content=adt())
    [entry] = client.get(LOG).json()["messages"]
    assert client.get(f"{LOG}/nope").status_code == 404
    assert client.post(f"{LOG}/{entry['id']}/resend").status_code == 409


def test_another_sandbox_s_log_needs_its_credentials_and_holds_only_its_messages(client):
    sandbox = client.post("/admin/sandboxes", json={"name": "vendor"}, headers=ADMIN).json()["id"]
    client.post(f"/sandboxes/{sandbox}/hl7v2", content=adt(sandbox=sandbox), headers=ADMIN)
    assert client.get(f"/sandboxes/{sandbox}/hl7v2/messages").status_code == 401
    assert len(client.get(f"/sandboxes/{sandbox}/hl7v2/messages", headers=ADMIN).json()["messages"]) == 1
    assert client.get(LOG).json()["messages"] == []


def test_a_reset_clears_the_log_and_the_control_ids_so_a_resend_applies_again(client):
    client.post("/sandboxes/default/hl7v2", content=adt())
    assert client.post("/admin/sandboxes/default/reset", headers=ADMIN).status_code == 200
    assert client.get(LOG).json()["messages"] == []
    response = client.post("/sandboxes/default/hl7v2", content=adt())
    assert msa(response.text)[0] == "AA" and "Duplicate" not in response.text
    assert client.get("/fhir/Patient").json()["total"] == 1
