"""Which mapper takes which inbound message type (MSH-9.1^MSH-9.2)."""

from __future__ import annotations

from collections.abc import Callable

from sandbox.hl7v2 import adt, documents, immunization, orders, results, scheduling
from sandbox.hl7v2.er7 import Message
from sandbox.hl7v2.writer import Writer

Mapper = Callable[[Message, Writer], None]

MAPPERS: dict[str, Mapper] = {
    "ADT^A01": adt.admit,
    "ADT^A04": adt.admit,
    "ADT^A08": adt.update,
    "ADT^A31": adt.update,
    "ADT^A03": adt.discharge,
    "ADT^A11": adt.cancel_admit,
    "ADT^A40": adt.merge,
    "ORU^R01": results.results,
    "ORM^O01": orders.orders,
    "OML^O21": orders.orders,
    "REF^I12": orders.referral,
    "SIU^S12": scheduling.booking,
    "VXU^V04": immunization.vaccination,
    "MDM^T02": documents.document,
}


def message_types() -> set[str]:
    return {key.split("^")[0] for key in MAPPERS}
