"""MDM^T02 (original document notification and content) to DocumentReference.

TXA describes the document (TXA-2 type, TXA-4 activity time, TXA-12 unique
document number, TXA-17 completion status); the OBX segments carry its text,
stored as a text/plain attachment.
"""

from __future__ import annotations

import base64
from typing import Any

from sandbox.hl7v2 import datatypes as dt
from sandbox.hl7v2.adt import upsert_patient
from sandbox.hl7v2.er7 import Message
from sandbox.hl7v2.writer import Writer

# TXA-17 completion status (table 0271) -> DocumentReference.docStatus
COMPLETION = {
    "AU": "final",
    "LA": "final",
    "DO": "final",
    "DI": "preliminary",
    "IP": "preliminary",
    "IN": "preliminary",
}


def document(msg: Message, writer: Writer) -> None:
    txa = msg.require("TXA")
    patient_ref = upsert_patient(msg, writer)
    number = txa.get(12)
    if not number:
        raise txa.error(12, "101", "TXA-12 (unique document number) is required: documents are matched by it")
    doc_type = txa.get(2)
    if not doc_type:
        raise txa.error(2, "101", "TXA-2 (document type) is required")
    key = {"system": f"urn:ehr-sandbox:hl7v2:document:{txa.get(12, 2) or msg.msh.get(3)}", "value": number}
    lines = [obx.get(5, repetition=r) for obx in msg.all("OBX") for r in range(len(obx.repetitions(5)))]
    if not lines:
        raise txa.error(12, "101", "An MDM^T02 carries its document's text in OBX segments; there are none")
    text = "\n".join(lines)
    resource: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "masterIdentifier": key,
        "identifier": [key],
        "status": "current",
        "type": {"coding": [{"system": f"{dt.V2_TABLE}0270", "code": doc_type}]},
        "subject": {"reference": patient_ref},
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain; charset=utf-8",
                    "data": base64.b64encode(text.encode("utf-8")).decode("ascii"),
                }
            }
        ],
    }
    if status := COMPLETION.get(txa.get(17)):
        resource["docStatus"] = status
    if when := dt.date_time(txa.get(4), txa, 4):
        resource["date"] = when if "T" in when else f"{when}T00:00:00Z"
    authors = [a for rep in range(len(txa.repetitions(9))) if (a := dt.practitioner_display(txa.components(9, rep)))]
    if authors:
        resource["author"] = [{"display": a.get("display", a.get("identifier", {}).get("value", ""))} for a in authors]
    writer.upsert(resource, [key])
