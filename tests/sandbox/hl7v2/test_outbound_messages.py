"""The outbound messages themselves: checked by hl7apy (an independent HL7 v2.5.1 implementation) in strict mode,
and read back by our own reader."""

from __future__ import annotations

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message, parse_segment
from sqlalchemy import select

from sandbox.hl7v2.delivery import translate
from sandbox.hl7v2.er7 import parse
from sandbox.store.schema import hl7v2_messages
from tests.sandbox.hl7v2.conftest import adt, oru
from tests.sandbox.hl7v2.test_outbound import ORDER, REFERRAL


def queued(app, db, client, writes) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Message type -> ER7 of what the outbox produced for ``writes`` (a function of the patient id)."""
    client.put("/sandboxes/default/hl7v2/destinations/all", json={"host": "127.0.0.1", "port": 9})
    client.post("/sandboxes/default/hl7v2", content=adt())
    pid = client.get("/fhir/Patient").json()["entry"][0]["resource"]["id"]
    writes(pid)
    translate(db, app.state.fhir)
    with db.read() as conn:
        m = hl7v2_messages.c
        rows = conn.execute(select(m.message_type, m.content).where(m.direction == "outbound")).all()
    return {r.message_type: r.content for r in rows}


def test_referral_patient_update_and_final_results_are_valid_v251(client, app, db):
    def writes(pid: str) -> None:
        subject = {"reference": f"Patient/{pid}"}
        client.post(
            "/fhir/ServiceRequest", json={**REFERRAL, "subject": subject, "performer": [{"display": "Dr Heart"}]}
        )
        patient = client.get(f"/fhir/Patient/{pid}").json()
        client.put(f"/fhir/Patient/{pid}", json={**patient, "gender": "female"})
        observation = client.post(
            "/fhir/Observation",
            json={
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "718-7", "display": "Hemoglobin"}]},
                "subject": subject,
                "valueQuantity": {"value": 11.2, "unit": "g/dL", "system": "http://unitsofmeasure.org", "code": "g/dL"},
            },
        ).json()
        client.post(
            "/fhir/DiagnosticReport",
            json={
                "resourceType": "DiagnosticReport",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "58410-2", "display": "CBC panel"}]},
                "subject": subject,
                "result": [{"reference": f"Observation/{observation['id']}"}],
            },
        )

    messages = queued(app, db, client, writes)
    assert sorted(messages) == ["ADT^A08", "ORU^R01", "REF^I12"]
    for text in messages.values():
        assert parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()
    obx = parse(messages["ORU^R01"]).first("OBX")
    assert (obx.get(2), obx.get(3, 1), obx.get(3, 3), obx.get(5), obx.get(6, 1)) == (
        "NM",
        "718-7",
        "LN",
        "11.2",
        "g/dL",
    )
    assert [p.get(1) for p in parse(messages["REF^I12"]).all("PRD")] == ["RP", "RT"]


def test_an_orm_has_valid_segments(client, app, db):
    """ORM_O01's order-detail choice group (OBR or RQD or ...) is taken by hl7apy as all required,
    so its structure check cannot pass any ORM: each segment is checked instead."""
    messages = queued(
        app,
        db,
        client,
        lambda pid: client.post("/fhir/ServiceRequest", json={**ORDER, "subject": {"reference": f"Patient/{pid}"}}),
    )
    text = messages["ORM^O01"]
    for line in text.strip("\r").split("\r"):
        assert parse_segment(line, version="2.5.1", validation_level=VALIDATION_LEVEL.STRICT).validate()
    obr = parse(text).first("OBR")
    assert obr.get(4, 1) == "58410-2" and obr.get(5) == "S"


@pytest.mark.parametrize("status", ["preliminary", "registered"])
def test_results_that_are_not_final_do_not_leave(client, app, db, status):
    def writes(pid: str) -> None:
        client.post(
            "/fhir/DiagnosticReport",
            json={
                "resourceType": "DiagnosticReport",
                "status": status,
                "code": {"coding": [{"system": "http://loinc.org", "code": "58410-2"}]},
                "subject": {"reference": f"Patient/{pid}"},
            },
        )

    assert queued(app, db, client, writes) == {}


def test_inbound_results_are_not_sent_back_out(client, app, db):
    assert queued(app, db, client, lambda pid: client.post("/sandboxes/default/hl7v2", content=oru())) == {}
