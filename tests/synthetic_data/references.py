"""Every ``reference`` string in a resource or bundle, however deeply nested: what reference checks walk."""

from __future__ import annotations

from typing import Any


def all_references(value: Any) -> list[str]:
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                found.append(item)
            else:
                found.extend(all_references(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(all_references(item))
    return found
