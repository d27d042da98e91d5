"""Strict conformance to the HL7 v2 standard's message structures and data types, checked by hl7apy.

Asked for per message (``POST /sandboxes/{id}/hl7v2?validate=strict``), not on
every message: hl7apy took 16 ms to parse and validate an ADT^A04 on the test
machine, several times what applying the message costs.  Known limitation of
hl7apy: it takes choice groups as all required, so no ORM^O01 passes its
structure check (ORM_O01's OBR-or-RQD-or-... group).
"""

from __future__ import annotations

import re

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message

from sandbox.hl7v2.er7 import V2Error

_LOCATION = re.compile(r"\b([A-Z][A-Z0-9]{2})\.([A-Z][A-Z0-9]{2})_(\d+)\b")
_GROUP_CHILD = re.compile(r"Missing required child [A-Z0-9_]+\.([A-Z][A-Z0-9]{2})$")


def strict_errors(text: str) -> list[V2Error]:
    """What hl7apy finds wrong with the message (its first finding), or nothing."""
    try:
        message = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
        message.validate()
    except (HL7apyException, ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
        return [_error(str(exc) or type(exc).__name__)]
    return []


def _error(text: str) -> V2Error:
    detail = f"Not conformant to the HL7 v2 standard (hl7apy, strict): {text}"
    if found := _LOCATION.search(text):
        code = "101" if text.startswith("Missing required child") else "102"
        return V2Error(code, detail, found.group(1), 1, int(found.group(3)))
    if found := _GROUP_CHILD.search(text):
        return V2Error("100", detail, found.group(1))
    return V2Error("102", detail)
