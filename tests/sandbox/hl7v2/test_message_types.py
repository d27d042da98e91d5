"""Each inbound message type, mapped to FHIR and acknowledged AA (and its required parts, when missing, AE)."""

from __future__ import annotations

import base64

import pytest

from sandbox.hl7v2.mllp import Client
from tests.sandbox.hl7v2.conftest import adt, err, msa

PID = "PID|1||12345^^^HOSP^MR||Doe^John||19800102|M"


def msh(message_type: str, control_id: str) -> str:
    return f"MSH|^~\\&|LABSYS|HOSP|EHR|default|20240101120000||{message_type}|{control_id}|P|2.5.1"


def message(*segments: str) -> str:
    return "\r".join(segments) + "\r"


def send(port: int, *messages: str) -> list[bytes]:
    with Client("127.0.0.1", port) as client:
        return [client.send(m) for m in messages]


def only(client, query: str) -> dict:  # type: ignore[no-untyped-def]
    bundle = client.get(query).json()
    assert bundle["total"] == 1, bundle
    return bundle["entry"][0]["resource"]


def test_a01_admits_and_a11_cancels_the_admission(mllp_app):
    replies = send(mllp_app.mllp_port, adt("A01", "M1", patient_class="I"), adt("A11", "M2", patient_class="I"))
    assert [msa(r)[0] for r in replies] == ["AA", "AA"]
    encounter = only(mllp_app, "/fhir/Encounter?identifier=V100")
    assert encounter["status"] == "entered-in-error" and encounter["class"]["code"] == "IMP"


def test_a11_for_an_unknown_visit_is_ae_with_the_field(mllp_app):
    [reply] = send(mllp_app.mllp_port, adt("A11", "M1", visit="NOPE"))
    assert msa(reply)[0] == "AE" and err(reply)[:2] == ("PV1^1^19^1", "204")


def test_a31_updates_the_person_without_touching_visits(mllp_app):
    send(mllp_app.mllp_port, adt("A04", "M1"), adt("A31", "M2", family="Dough"))
    assert only(mllp_app, "/fhir/Patient?identifier=12345")["name"][0]["family"] == "Dough"
    assert only(mllp_app, "/fhir/Encounter?identifier=V100")["meta"]["versionId"] == "1"


def test_a40_merges_the_prior_patient_into_the_survivor(mllp_app):
    merge = message(
        msh("ADT^A40^ADT_A39", "M3"),
        "EVN|A40|20240101120000",
        "PID|1||12345^^^HOSP^MR||Doe^John||19800102|M",
        "MRG|999^^^HOSP^MR",
    )
    replies = send(mllp_app.mllp_port, adt("A04", "M1"), adt("A04", "M2", mrn="999", visit="V2"), merge)
    assert [msa(r)[0] for r in replies] == ["AA", "AA", "AA"]
    survivor = only(mllp_app, "/fhir/Patient?identifier=12345")
    prior = only(mllp_app, "/fhir/Patient?identifier=999")
    assert prior["active"] is False
    assert prior["link"] == [{"other": {"reference": f"Patient/{survivor['id']}"}, "type": "replaced-by"}]
    assert survivor["link"] == [{"other": {"reference": f"Patient/{prior['id']}"}, "type": "replaces"}]


def test_a40_naming_an_unknown_prior_patient_is_ae(mllp_app):
    merge = message(msh("ADT^A40^ADT_A39", "M1"), "EVN|A40", PID, "MRG|404^^^HOSP^MR")
    [reply] = send(mllp_app.mllp_port, merge)
    assert msa(reply)[0] == "AE" and err(reply)[:2] == ("MRG^1^1^1", "204")
    assert mllp_app.get("/fhir/Patient").json()["total"] == 0


@pytest.mark.parametrize("message_type", ["ORM^O01^ORM_O01", "OML^O21^OML_O21"])
def test_an_order_becomes_a_service_request_and_its_cancel_revokes_it(mllp_app, message_type):
    new = message(
        msh(message_type, "O1"),
        PID,
        "ORC|NW|PL100^EHR|||||^^^^^S||20240101100000|||1234^Smith^Jane",
        "OBR|1|PL100^EHR||58410-2^CBC panel^LN",
    )
    cancel = message(msh(message_type, "O2"), PID, "ORC|CA|PL100^EHR", "OBR|1|PL100^EHR||58410-2^CBC panel^LN")
    assert msa(send(mllp_app.mllp_port, new)[0])[0] == "AA"
    order = only(mllp_app, "/fhir/ServiceRequest?identifier=PL100")
    assert order["status"] == "active" and order["intent"] == "order" and order["priority"] == "stat"
    assert order["code"]["coding"][0] == {"system": "http://loinc.org", "code": "58410-2", "display": "CBC panel"}
    assert order["authoredOn"] == "2024-01-01T10:00:00Z" and order["requester"]["display"] == "Jane Smith"
    send(mllp_app.mllp_port, cancel)
    assert only(mllp_app, "/fhir/ServiceRequest?identifier=PL100")["status"] == "revoked"


def test_an_order_without_a_placer_number_is_ae(mllp_app):
    bad = message(msh("ORM^O01^ORM_O01", "O1"), PID, "ORC|NW", "OBR|1|||58410-2^CBC^LN")
    [reply] = send(mllp_app.mllp_port, bad)
    assert msa(reply)[0] == "AE" and err(reply)[:2] == ("ORC^1^2^1", "101")


def test_ref_i12_becomes_a_referral_service_request(mllp_app):
    ref = message(
        msh("REF^I12^REF_I12", "R1"),
        "RF1|A|R|^Cardiology|||REF77|20240101",
        "PRD|RT|Heart^Harry",
        "PRD|RP|Smith^Jane",
        PID,
        "DG1|1||I10^Essential hypertension^I10C",
    )
    assert msa(send(mllp_app.mllp_port, ref)[0])[0] == "AA"
    referral = only(mllp_app, "/fhir/ServiceRequest?identifier=REF77")
    assert referral["category"][0]["coding"][0]["code"] == "3457005"
    assert referral["performer"] == [{"display": "Harry Heart"}] and referral["requester"] == {"display": "Jane Smith"}
    assert referral["reasonCode"][0]["coding"][0]["system"] == "http://hl7.org/fhir/sid/icd-10-cm"


def test_siu_s12_books_an_appointment(mllp_app):
    siu = message(
        msh("SIU^S12^SIU_S12", "S1"),
        "SCH|PL1|AP55^CLINIC|||||CHECKUP^Annual check-up||30|MIN|^^^20240105090000^20240105093000||||||||||||||Booked",
        PID,
        "RGS|1",
        "AIP|1||1234^Smith^Jane",
        "AIL|1||CLINIC^101",
    )
    assert msa(send(mllp_app.mllp_port, siu)[0])[0] == "AA"
    appointment = only(mllp_app, "/fhir/Appointment?identifier=AP55")
    assert appointment["status"] == "booked"
    assert appointment["start"] == "2024-01-05T09:00:00Z" and appointment["end"] == "2024-01-05T09:30:00Z"
    assert appointment["minutesDuration"] == 30 and len(appointment["participant"]) == 3


def test_vxu_v04_records_an_immunization_with_cvx(mllp_app):
    vxu = message(
        msh("VXU^V04^VXU_V04", "V1"),
        PID,
        "ORC|RE||IMM9",
        "RXA|0|1|20240101100000||141^Influenza, seasonal^CVX|0.5|mL^mL^UCUM||00||||||LOT42||SKB^GSK^MVX||||CP",
        "RXR|IM^Intramuscular^HL70162|LA^Left arm^HL70163",
    )
    assert msa(send(mllp_app.mllp_port, vxu)[0])[0] == "AA"
    immunization = only(mllp_app, "/fhir/Immunization?identifier=IMM9")
    assert immunization["vaccineCode"]["coding"][0]["system"] == "http://hl7.org/fhir/sid/cvx"
    assert immunization["status"] == "completed" and immunization["primarySource"] is True
    assert immunization["lotNumber"] == "LOT42" and immunization["doseQuantity"]["value"] == 0.5
    assert immunization["route"]["coding"][0]["system"] == "http://terminology.hl7.org/CodeSystem/v2-0162"


def test_mdm_t02_files_a_document_with_its_text(mllp_app):
    mdm = message(
        msh("MDM^T02^MDM_T02", "D1"),
        "EVN|T02|20240101120000",
        PID,
        "PV1|1|O",
        "TXA|1|DS|TX|20240101115000|||||1234^Smith^Jane|||DOC123|||||AU",
        "OBX|1|TX|||Discharge summary line one",
        "OBX|2|TX|||Line two",
    )
    assert msa(send(mllp_app.mllp_port, mdm)[0])[0] == "AA"
    document = only(mllp_app, "/fhir/DocumentReference?identifier=DOC123")
    assert document["docStatus"] == "final" and document["author"] == [{"display": "Jane Smith"}]
    text = base64.b64decode(document["content"][0]["attachment"]["data"]).decode()
    assert text == "Discharge summary line one\nLine two"


def test_mdm_without_text_is_ae(mllp_app):
    mdm = message(msh("MDM^T02^MDM_T02", "D1"), PID, "TXA|1|DS|TX|||||||||DOC1")
    [reply] = send(mllp_app.mllp_port, mdm)
    assert msa(reply)[0] == "AE"
    assert mllp_app.get("/fhir/Patient").json()["total"] == 0
