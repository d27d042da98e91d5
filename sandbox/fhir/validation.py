"""Parse and validate resources on the way in.

Validation is paid once, on write (DESIGN.md): the fhir.resources R4B models
check structure and datatypes; this module adds what they do not enforce
(nulls, empty values, required code bindings) and reports every problem as an
issue with its FHIRPath location.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson
from pydantic import ValidationError

from sandbox.fhir.bindings import check_required_bindings
from sandbox.fhir.outcome import FhirError, Issue
from sandbox.fhir.resource_types import is_resource_type, model_class
from sandbox.subscriptions.criteria import check_subscription


def parse_json(body: bytes) -> Any:
    """Decode a request body, keeping decimals exactly as written (``72.50`` stays ``72.50``)."""
    if not body.strip():
        raise FhirError.of(400, "structure", "The request body is empty; a FHIR JSON resource was expected")
    try:
        return json.loads(body, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FhirError.of(400, "structure", f"The request body is not valid JSON: {exc}") from None


def dump_json(resource: Any) -> bytes:
    return orjson.dumps(resource, default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    raise TypeError(f"cannot serialize {type(value).__name__}")


def parse_resource(body: bytes, expected_type: str | None = None) -> dict[str, Any]:
    return validate(parse_json(body), expected_type)


def validate(resource: Any, expected_type: str | None = None) -> dict[str, Any]:
    """Return ``resource`` if valid; raise FhirError (400 or 422) listing every problem otherwise."""
    if not isinstance(resource, dict):
        raise FhirError.of(400, "structure", "A FHIR resource must be a JSON object")
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        raise FhirError.of(400, "structure", "The resource has no resourceType")
    if not is_resource_type(rtype):
        raise FhirError.of(400, "not-supported", f"Unknown resource type '{rtype}'", "resourceType")
    if expected_type and rtype != expected_type:
        raise FhirError.of(
            400, "invalid", f"Resource type '{rtype}' does not match the URL's type '{expected_type}'", "resourceType"
        )
    # Nearly every resource has no empty or null value and no NUL: one walk without paths finds that out cheaply.
    suspect = _may_have_empty_null_or_nul(resource)
    issues = _empty_and_null(resource, rtype) if suspect else []
    try:
        model_class(rtype).model_validate(resource)
    except ValidationError as exc:
        issues.extend(_pydantic_issues(exc, rtype))
    issues.extend(check_required_bindings(resource))
    if suspect:
        issues.extend(_nul_characters(resource, rtype))
    if rtype == "Subscription" and not issues:
        issues.extend(check_subscription(resource))  # its criteria must be a search this server can run
    if issues:
        raise FhirError(422, issues)
    return resource


def _pydantic_issues(exc: ValidationError, rtype: str) -> list[Issue]:
    issues = []
    for error in exc.errors():
        location = fhirpath_of(rtype, error["loc"])
        kind = error["type"]
        if kind == "extra_forbidden":
            code, message = "structure", f"Unknown element '{error['loc'][-1]}'"
        elif kind == "missing":
            code, message = "required", "Missing required element"
        else:
            code, message = "value", str(error["msg"]).removeprefix("Value error, ")
        issues.append(Issue(code, f"{message} at {location}", expression=location))
    return issues


def fhirpath_of(rtype: str, loc: tuple | list) -> str:
    path = rtype
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "__root__":
            path += f".{part}"
    return path


def _may_have_empty_null_or_nul(value: Any) -> bool:
    """Whether ``_empty_and_null`` or ``_nul_characters`` could find anything (their rules, no issues built)."""
    if isinstance(value, dict):
        if not value:
            return True
        for key, item in value.items():
            if item is None:
                if not key.startswith("_"):
                    return True
            elif _may_have_empty_null_or_nul(item):
                return True
        return False
    if isinstance(value, list):
        return not value or any(item is not None and _may_have_empty_null_or_nul(item) for item in value)
    return isinstance(value, str) and (not value.strip() or "\x00" in value)


def _empty_and_null(value: Any, path: str) -> list[Issue]:
    """FHIR JSON forbids null, empty objects, empty arrays and empty strings; the models let them pass."""
    issues: list[Issue] = []
    if isinstance(value, dict):
        if not value:
            issues.append(Issue("structure", f"Empty object at {path}", expression=path))
        for key, item in value.items():
            child = f"{path}.{key}"
            if item is None and not key.startswith("_"):
                issues.append(Issue("structure", f"null is not allowed at {child}", expression=child))
            else:
                issues.extend(_empty_and_null(item, child))
    elif isinstance(value, list):
        if not value:
            issues.append(Issue("structure", f"Empty array at {path}", expression=path))
        for n, item in enumerate(value):
            if item is not None:  # nulls inside arrays are legal placeholders for primitive extensions
                issues.extend(_empty_and_null(item, f"{path}[{n}]"))
    elif isinstance(value, str) and not value.strip():
        issues.append(Issue("value", f"Empty string at {path}", expression=path))
    return issues


def _nul_characters(value: Any, path: str) -> list[Issue]:
    """FHIR strings may not hold characters below U+0020 but tab, CR and LF; NUL matters most (PostgreSQL
    cannot store it in text, so it would fail the index write), and the models let it pass."""
    if isinstance(value, str):
        return [Issue("value", f"NUL character in the string at {path}", expression=path)] if "\x00" in value else []
    if isinstance(value, dict):
        return [issue for key, item in value.items() for issue in _nul_characters(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [issue for n, item in enumerate(value) for issue in _nul_characters(item, f"{path}[{n}]")]
    return []
