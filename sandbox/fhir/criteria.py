"""A search written as one string, ``Type?query``: Subscription criteria and bulk export ``_typeFilter``."""

from __future__ import annotations

from urllib.parse import parse_qsl

from sandbox.fhir.outcome import FhirError
from sandbox.fhir.resource_types import is_resource_type
from sandbox.fhir.search_params import registry
from sandbox.fhir.search_plan import SearchPlan, parse


def split_criteria(criteria: str) -> tuple[str, list[tuple[str, str]]]:
    """``Type?a=1&b=2`` -> (``Type``, [(a, 1), (b, 2)]), checked by the search planner; FhirError if not valid."""
    rtype, _ = criteria_plan(criteria)
    return rtype, parse_qsl(criteria.strip().partition("?")[2], keep_blank_values=True)


def criteria_plan(criteria: str) -> tuple[str, SearchPlan]:
    """The type and the strict search plan of ``Type?query`` (an unknown parameter is an error, not ignored)."""
    rtype, _, query = criteria.strip().partition("?")
    if not is_resource_type(rtype):
        raise FhirError.of(
            400, "invalid", f"'{rtype}' is not a resource type; write Type?search, e.g. Observation?code=..."
        )
    return rtype, parse(registry(), rtype, parse_qsl(query, keep_blank_values=True), strict=True)
