"""Inbound HL7 v2 over a real MLLP socket: ADT and ORU become FHIR, acknowledged; resends apply once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from sandbox.hl7v2.mllp import Client, frame
from sandbox.store.schema import resource_versions
from tests.sandbox.hl7v2.conftest import adt, err, msa, oru


def patients(fhir_json, mrn: str = "12345") -> list[dict]:  # type: ignore[no-untyped-def]
    bundle = fhir_json(f"/fhir/Patient?identifier={mrn}")
    return [e["resource"] for e in bundle.get("entry", [])]


def test_an_a04_registers_the_patient_and_the_visit_and_is_acknowledged_aa(mllp_port, fhir_json):
    with Client("127.0.0.1", mllp_port) as client:
        reply = client.send(adt("A04", "MSG0001"))
    assert msa(reply) == ("AA", "MSG0001")
    assert b"MSH|^~\\&|EHR|default|LABSYS|HOSP|" in reply
    [patient] = patients(fhir_json)
    assert patient["name"][0] == {"family": "Doe", "given": ["John", "Q"]}
    assert patient["birthDate"] == "1980-01-02" and patient["gender"] == "male"
    assert patient["identifier"][0]["system"] == "urn:ehr-sandbox:hl7v2:assigning-authority:HOSP"
    [encounter] = [e["resource"] for e in fhir_json("/fhir/Encounter?identifier=V100")["entry"]]
    assert encounter["status"] == "in-progress" and encounter["class"]["code"] == "AMB"
    assert encounter["subject"]["reference"] == f"Patient/{patient['id']}"


def test_writes_are_attributed_to_the_sending_system(mllp_port, fhir_json, db):
    with Client("127.0.0.1", mllp_port) as client:
        client.send(adt())
    with db.read() as conn:
        rows = conn.execute(
            select(resource_versions.c.resource_type, resource_versions.c.actor, resource_versions.c.route)
        ).all()
    assert sorted(rows) == [("Encounter", "hl7v2:LABSYS^HOSP", "hl7v2"), ("Patient", "hl7v2:LABSYS^HOSP", "hl7v2")]


def test_an_a08_updates_the_patient_an_a04_created_and_an_a03_finishes_the_visit(mllp_port, fhir_json):
    with Client("127.0.0.1", mllp_port) as client:
        assert msa(client.send(adt("A04", "M1")))[0] == "AA"
        assert msa(client.send(adt("A08", "M2", family="Dough")))[0] == "AA"
        assert msa(client.send(adt("A03", "M3", family="Dough", pv1_tail="|" * 26 + "20240102090000")))[0] == "AA"
    [patient] = patients(fhir_json)
    assert patient["name"][0]["family"] == "Dough"
    assert patient["meta"]["versionId"] == "3"  # A04 created it, A08 and A03 updated it
    [encounter] = [e["resource"] for e in fhir_json("/fhir/Encounter?identifier=V100")["entry"]]
    assert encounter["status"] == "finished"
    assert encounter["period"]["end"] == "2024-01-02T09:00:00Z"


def test_a_resent_control_id_is_acknowledged_without_a_second_write(mllp_port, fhir_json):
    with Client("127.0.0.1", mllp_port) as client:
        first = client.send(adt("A04", "SAME"))
        again = client.send(adt("A04", "SAME", family="Other"))
    assert msa(first) == ("AA", "SAME") and msa(again) == ("AA", "SAME")
    assert b"Duplicate" in again
    [patient] = patients(fhir_json)
    assert patient["name"][0]["family"] == "Doe" and patient["meta"]["versionId"] == "1"
    log = fhir_json("/sandboxes/default/hl7v2/messages?control_id=SAME")["messages"]
    assert sorted(m["status"] for m in log) == ["accepted", "duplicate"]


def test_an_oru_becomes_a_report_with_loinc_coded_observations_and_interpretations(mllp_port, fhir_json):
    with Client("127.0.0.1", mllp_port) as client:
        client.send(adt())
        assert msa(client.send(oru()))[0] == "AA"
    [report] = [e["resource"] for e in fhir_json("/fhir/DiagnosticReport?code=http://loinc.org|58410-2")["entry"]]
    assert report["status"] == "final" and len(report["result"]) == 3
    observations = {
        o["resource"]["code"]["coding"][0]["code"]: o["resource"] for o in fhir_json("/fhir/Observation")["entry"]
    }
    hb = observations["718-7"]
    assert hb["code"]["coding"][0]["system"] == "http://loinc.org"
    assert hb["valueQuantity"] == {"value": 11.2, "unit": "g/dL", "system": "http://unitsofmeasure.org", "code": "g/dL"}
    assert hb["interpretation"][0]["coding"][0]["code"] == "L"
    assert hb["referenceRange"][0]["low"] == {"value": 13.5}
    assert observations["8251-1"]["valueString"] == "Slightly hemolyzed"
    [patient] = patients(fhir_json)
    assert hb["subject"]["reference"] == f"Patient/{patient['id']}"  # the A04's patient, matched by PID-3


def test_a_corrected_result_replaces_the_first_one(mllp_port, fhir_json):
    with Client("127.0.0.1", mllp_port) as client:
        client.send(oru("R1", value="7.9"))
        client.send(oru("R2", value="8.4"))
    wbc = fhir_json("/fhir/Observation?code=6690-2")["entry"]
    assert len(wbc) == 1 and wbc[0]["resource"]["valueQuantity"]["value"] == 8.4


def test_one_connection_carries_many_messages_in_order(mllp_port):
    with Client("127.0.0.1", mllp_port) as client:
        replies = [client.send(adt("A04", f"C{n}", mrn=f"P{n}")) for n in range(5)]
    assert [msa(r) for r in replies] == [("AA", f"C{n}") for n in range(5)]


def test_enhanced_mode_answers_with_an_accept_acknowledgment(mllp_port):
    with Client("127.0.0.1", mllp_port) as client:
        accepted = client.send(adt("A04", "E1", extra_msh="|||AL|NE"))
        refused = client.send(adt("A04", "E2", extra_msh="|||AL|NE", sandbox="no-such-sandbox"))
    assert msa(accepted) == ("CA", "E1")
    assert msa(refused)[0] == "CR"


def test_enhanced_mode_without_an_accept_ack_sends_the_application_ack_or_nothing(mllp_port):
    with Client("127.0.0.1", mllp_port) as client:
        application = client.send(adt("A04", "E1", extra_msh="|||NE|AL"))
        client.sock.sendall(frame(adt("A04", "E2", extra_msh="|||NE|NE")))  # asks for no answer at all
        after = client.send(adt("A04", "E3"))
    assert msa(application) == ("AA", "E1")
    assert msa(after) == ("AA", "E3")  # the next answer on the connection is the third message's


def test_the_same_message_on_several_connections_at_once_is_applied_once(mllp_port, fhir_json):
    def send() -> bytes:
        with Client("127.0.0.1", mllp_port) as client:
            return client.send(adt("A04", "RACE"))

    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: send(), range(4)))
    assert [msa(r) for r in replies] == [("AA", "RACE")] * 4
    assert len(patients(fhir_json)) == 1
    statuses = sorted(m["status"] for m in fhir_json("/sandboxes/default/hl7v2/messages")["messages"])
    assert statuses == ["accepted", "duplicate", "duplicate", "duplicate"]


def test_a_failure_inside_the_server_is_answered_ae_and_the_connection_stays_usable(mllp_app, monkeypatch):
    from sandbox.hl7v2 import mappers

    def broken(msg, writer):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug")

    monkeypatch.setitem(mappers.MAPPERS, "ADT^A04", broken)
    with Client("127.0.0.1", mllp_app.mllp_port) as client:
        failed = client.send(adt("A04", "BUG"))
        after = client.send(adt("A08", "OK"))
    assert msa(failed) == ("AE", "BUG") and err(failed)[1] == "207"
    assert msa(after) == ("AA", "OK")
