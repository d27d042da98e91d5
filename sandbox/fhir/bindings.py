"""Required code bindings, which the fhir.resources models do not check (``gender: "robot"`` passes).

``data/required_bindings.json`` lists, for every ``code`` element of a resource
bound *required* to an enumerable value set, the allowed codes (built by
``tools/build_search_registry.py`` from the specification).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from sandbox.fhir.outcome import Issue

_DATA = Path(__file__).parent / "data" / "required_bindings.json"


@cache
def _bindings_by_type() -> dict[str, list[tuple[list[str], frozenset[str]]]]:
    by_type: dict[str, list[tuple[list[str], frozenset[str]]]] = {}
    for path, codes in json.loads(_DATA.read_text()).items():
        rtype, *steps = path.split(".")
        by_type.setdefault(rtype, []).append((steps, frozenset(codes)))
    return by_type


def check_required_bindings(resource: dict[str, Any]) -> list[Issue]:
    issues: list[Issue] = []
    rtype = resource.get("resourceType", "")
    for steps, allowed in _bindings_by_type().get(rtype, []):
        for location, value in _walk(resource, steps, rtype):
            if isinstance(value, str) and value not in allowed:
                shown = ", ".join(sorted(allowed)[:12]) + (", ..." if len(allowed) > 12 else "")
                issues.append(
                    Issue(
                        "code-invalid",
                        f"'{value}' is not a valid code at {location} (allowed: {shown})",
                        expression=location,
                    )
                )
    return issues


def _walk(node: Any, steps: list[str], path: str) -> list[tuple[str, Any]]:
    if not steps:
        return [(path, node)]
    if not isinstance(node, dict) or steps[0] not in node:
        return []
    child = node[steps[0]]
    here = f"{path}.{steps[0]}"
    if isinstance(child, list):
        return [found for n, item in enumerate(child) for found in _walk(item, steps[1:], f"{here}[{n}]")]
    return _walk(child, steps[1:], here)
