"""``_summary`` and ``_elements``: return part of a resource, marked SUBSETTED as the spec requires."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from sandbox.fhir.validation import dump_json, parse_json

_SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
_ALWAYS = ("resourceType", "id", "meta")


@cache
def _summary_elements() -> dict[str, frozenset[str]]:
    raw = json.loads((Path(__file__).parent / "data" / "summary_elements.json").read_text())
    return {k: frozenset(v) for k, v in raw.items()}


def subset(content: bytes, summary: str | None, elements: tuple[str, ...]) -> bytes:
    """The stored bytes unchanged when no subsetting applies; a trimmed copy otherwise."""
    if summary in (None, "false") and not elements:
        return content
    resource: dict[str, Any] = parse_json(content)
    rtype = resource["resourceType"]
    if summary == "text":
        keep = {"text", "id", "meta"} | _mandatory(resource)
    elif summary == "data":
        keep = set(resource) - {"text"}
    elif summary == "true":
        names = _summary_elements().get(rtype, frozenset())
        keep = {k for k in resource if _base_name(k) in names}
    else:
        keep = {k for k in resource if _base_name(k) in set(elements)}
    trimmed = {k: v for k, v in resource.items() if k in keep or k in _ALWAYS}
    meta = dict(trimmed.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), _SUBSETTED]
    trimmed["meta"] = meta
    return dump_json(trimmed)


def _base_name(key: str) -> str:
    """``valueQuantity`` -> ``value`` when the element is a choice; otherwise the key itself."""
    key = key.lstrip("_")
    for i, ch in enumerate(key):
        if ch.isupper() and i > 0:
            return key[:i]
    return key


def _mandatory(resource: dict[str, Any]) -> set[str]:
    # _summary=text keeps mandatory elements too; status is mandatory wherever it exists.
    return {k for k in ("status",) if k in resource}
