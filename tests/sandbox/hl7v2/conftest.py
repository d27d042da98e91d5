"""HL7 v2 fixtures: the app with its MLLP listener or its demo lab on a real socket (an ephemeral port); messages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from sandbox.hl7v2.er7 import parse


@pytest.fixture
def mllp_app(app):  # type: ignore[no-untyped-def]
    """A running app (lifespan started) listening for MLLP on 127.0.0.1, port chosen by the OS."""
    app.state.hl7v2.configure(host="127.0.0.1", mllp_port=0, deliver=False)
    with TestClient(app) as client:
        client.mllp_port = app.state.hl7v2.server.port  # type: ignore[attr-defined]
        yield client


@pytest.fixture
def mllp_port(mllp_app) -> int:  # type: ignore[no-untyped-def]
    return mllp_app.mllp_port


@pytest.fixture
def lab_port(app) -> Iterator[int]:  # type: ignore[no-untyped-def]
    """The app's built-in demo lab on 127.0.0.1 (port chosen by the OS), with neither the listener nor deliveries."""
    app.state.hl7v2.configure(host="127.0.0.1", mllp_port=None, deliver=False, demo_lab_port=0)
    with TestClient(app):
        assert app.state.hl7v2.server is None and app.state.hl7v2.worker is None
        yield app.state.hl7v2.lab.port
    assert app.state.hl7v2.lab is None  # stopped with the app


def adt(
    event: str = "A04",
    control_id: str = "MSG0001",
    *,
    sandbox: str = "default",
    mrn: str = "12345",
    family: str = "Doe",
    given: str = "John",
    visit: str = "V100",
    patient_class: str = "O",
    extra_msh: str = "",
    pv1_tail: str = "",
) -> str:
    msh = f"MSH|^~\\&|LABSYS|HOSP|EHR|{sandbox}|20240101120000||ADT^{event}^ADT_A01|{control_id}|P|2.5.1{extra_msh}"
    pv1 = f"PV1|1|{patient_class}|CLINIC^101^1^HOSP||||1234^Smith^Jane^^^Dr||||||||||||{visit}^^^HOSP^VN{pv1_tail}"
    return (
        "\r".join(
            [
                msh,
                f"EVN|{event}|20240101120000",
                f"PID|1||{mrn}^^^HOSP^MR||{family}^{given}^Q||19800102|M|||1 Main St^^Boston^MA^02110||555-1234^PRN^PH",
                pv1,
            ]
        )
        + "\r"
    )


def oru(control_id: str = "LAB0001", *, sandbox: str = "default", mrn: str = "12345", value: str = "7.9") -> str:
    return (
        "\r".join(
            [
                f"MSH|^~\\&|LABSYS|HOSP|EHR|{sandbox}|20240101130000||ORU^R01^ORU_R01|{control_id}|P|2.5.1",
                f"PID|1||{mrn}^^^HOSP^MR||Doe^John||19800102|M",
                "ORC|RE|ORD1|FIL1",
                "OBR|1|ORD1|FIL1|58410-2^CBC panel^LN|||20240101123000|||||||||||||||20240101125900|||F",
                f"OBX|1|NM|6690-2^WBC^LN||{value}|10*3/uL^10*3/uL^UCUM|4.5-11.0|N|||F|||20240101123000",
                "OBX|2|NM|718-7^Hemoglobin^LN||11.2|g/dL^g/dL^UCUM|13.5-17.5|L|||F|||20240101123000",
                "OBX|3|ST|8251-1^Comment^LN||Slightly hemolyzed||||||F",
            ]
        )
        + "\r"
    )


def msa(reply: bytes | str) -> tuple[str, str]:
    """(acknowledgment code, control id acknowledged) of an ACK."""
    seg = parse(reply).first("MSA")
    assert seg is not None
    return seg.get(1), seg.get(2)


def err(reply: bytes | str) -> tuple[str, str, str]:
    """(ERR-2 location, ERR-3 code, ERR-8 text) of an ACK's first ERR segment."""
    seg = parse(reply).first("ERR")
    assert seg is not None
    return seg.raw(2), seg.get(3), seg.get(8)


@pytest.fixture
def fhir_json(mllp_app) -> Iterator:  # type: ignore[no-untyped-def]
    def get(path: str) -> dict:
        response = mllp_app.get(path)
        assert response.status_code == 200, response.text
        return response.json()

    yield get
