"""Typed path segments of FHIR URLs, as Starlette convertors: ``{rtype:fhir_type}``, ``{rid:fhir_id}``,
``{operation:fhir_operation}``.

A typed segment matches only what the FHIR grammar allows there, so a route using them cannot take a
neighbour's URL (``/Patient/$everything``, ``/Patient/_history``, ``/metadata``) whatever the route order.
"""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor


class _Segment(Convertor[str]):
    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class ResourceTypeName(_Segment):
    """A resource type's name: ``Patient``, ``MedicationRequest`` (whether the server knows it is the route's
    business)."""

    regex = r"[A-Z][A-Za-z]*"


class ResourceId(_Segment):
    """A logical id: R4's id datatype, 1 to 64 of letters, digits, ``-`` and ``.``."""

    regex = r"[A-Za-z0-9\-\.]{1,64}"


class OperationName(_Segment):
    """An operation: ``$`` and a code."""

    regex = r"\$[A-Za-z][A-Za-z0-9_-]*"


register_url_convertor("fhir_type", ResourceTypeName())
register_url_convertor("fhir_id", ResourceId())
register_url_convertor("fhir_operation", OperationName())
