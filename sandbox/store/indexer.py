"""Turn a resource into search index rows, one list per index table.

Runs inside the write transaction, so the index is always exactly the stored
resources: search never scans JSON.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sandbox.fhir.expressions import Typed, reference_type
from sandbox.fhir.search_params import Registry, SearchParam
from sandbox.fhir.values import MAX_DATE, MIN_DATE, date_range, fold

Row = dict[str, Any]
# A string value longer than this is cut in the index; FHIR servers commonly index a prefix.
MAX_STRING = 255


def index_resource(registry: Registry, resource: dict) -> dict[str, list[Row]]:
    """All index rows for ``resource``, keyed by index table type ("string", "token", ...)."""
    rows: dict[str, list[Row]] = {}
    rtype = resource["resourceType"]
    grp = 0
    # Parameters reading none of the resource's top-level elements would find nothing: they are not run.
    for param in registry.index_plan(rtype).relevant(resource):
        if param.type == "composite":
            for focus in param.evaluate_composite(resource):
                parts: list[list[Row]] = []
                for component, values in zip(param.components, focus, strict=True):
                    part = _rows(component.type, values)
                    if not part:
                        break  # a composite value needs every component: the rest need not be worked out
                    parts.append(part)
                else:
                    grp += 1
                    for n, (component, part) in enumerate(zip(param.components, parts, strict=True)):
                        for row in part:
                            row["param"], row["grp"] = f"{param.code}${n}", grp
                            rows.setdefault(component.type, []).append(row)
            continue
        for row in _rows(param.type, param.evaluate(resource), param):
            row["param"], row["grp"] = param.code, 0
            rows.setdefault(param.type, []).append(row)
    return {kind: _dedupe(found) for kind, found in rows.items()}


def _dedupe(rows: list[Row]) -> list[Row]:
    seen: set[tuple] = set()
    out: list[Row] = []
    for row in rows:
        # Rows of one kind are built with their keys in one order, so the items need no sorting.
        key = tuple(row.items())
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def _rows(kind: str, values: list[Typed], param: SearchParam | None = None) -> list[Row]:
    out: list[Row] = []
    for value, type_ in values:
        if kind == "string":
            out.extend(_string_rows(value))
        elif kind == "token":
            out.extend(_token_rows(value, type_))
        elif kind == "reference":
            out.extend(_reference_rows(value, type_))
        elif kind == "date":
            out.extend(_date_rows(value, type_))
        elif kind == "number":
            out.extend(_number_rows(value))
        elif kind == "quantity":
            out.extend(_quantity_rows(value))
        elif kind == "uri" and isinstance(value, str):
            out.append({"value": value})
    return out


def _string_rows(value: Any) -> list[Row]:
    if isinstance(value, str):
        return [{"value": fold(value)[:MAX_STRING], "exact": value[:MAX_STRING]}]
    if isinstance(value, dict):
        # HumanName, Address and the like: every string part is searchable on its own.
        parts: list[Row] = []
        for key, part in value.items():
            if key in ("use", "period", "extension", "id", "type"):
                continue
            for item in part if isinstance(part, list) else [part]:
                if isinstance(item, str):
                    parts.extend(_string_rows(item))
        return parts
    return []


def _token_rows(value: Any, type_: str | None) -> list[Row]:
    if isinstance(value, bool):
        return [{"system": None, "code": "true" if value else "false", "text": None}]
    if isinstance(value, str | int):
        return [{"system": None, "code": str(value), "text": None}]
    if not isinstance(value, dict):
        return []
    if type_ == "CodeableConcept" or "coding" in value:
        text = fold(value["text"]) if isinstance(value.get("text"), str) else None
        rows = [
            {"system": c.get("system"), "code": c.get("code"), "text": _coding_text(c) or text}
            for c in value.get("coding", [])
            if isinstance(c, dict)
        ]
        if not rows and text or text:
            rows.append({"system": None, "code": None, "text": text})
        return rows
    if type_ == "ContactPoint":
        return [{"system": value.get("system"), "code": value.get("value"), "text": None}] if "value" in value else []
    if type_ == "Identifier" or ("value" in value and "code" not in value):
        type_text = value.get("type", {}).get("text") if isinstance(value.get("type"), dict) else None
        return [
            {"system": value.get("system"), "code": value.get("value"), "text": fold(type_text) if type_text else None}
        ]
    if "code" in value or "system" in value:  # Coding, Quantity as token
        return [{"system": value.get("system"), "code": value.get("code"), "text": _coding_text(value)}]
    return []


def _coding_text(coding: dict) -> str | None:
    display = coding.get("display")
    return fold(display) if isinstance(display, str) else None


def _reference_rows(value: Any, type_: str | None) -> list[Row]:
    if isinstance(value, str):  # canonical or uri used as a reference
        return [_reference_row(value)]
    if not isinstance(value, dict):
        return []
    rows: list[Row] = []
    ref = value.get("reference")
    if isinstance(ref, str) and not ref.startswith("#"):
        row = _reference_row(ref)
        if row["target_type"] is None and isinstance(value.get("type"), str):
            row["target_type"] = value["type"]
        rows.append(row)
    ident = value.get("identifier")
    if isinstance(ident, dict) and ident.get("value"):
        rows.append(
            {
                "target_type": reference_type(value),
                "target_id": None,
                "url": None,
                "ident_system": ident.get("system"),
                "ident_value": ident["value"],
            }
        )
    return rows


def _reference_row(ref: str) -> Row:
    """``Patient/1``, ``Patient/1/_history/2`` or an absolute ``http://host/fhir/Patient/1``.

    Absolute URLs keep their text in ``url`` too: the search side decides
    whether they belong to this server.
    """
    # A canonical may carry a version (``http://x/Questionnaire/q|2``); the reference is to the resource.
    plain = ref.split("/_history/")[0].split("|")[0]
    parts = plain.split("/")
    row: Row = {"target_type": None, "target_id": None, "url": None, "ident_system": None, "ident_value": None}
    if "://" in ref or ref.startswith("urn:"):
        row["url"] = plain
    if len(parts) >= 2 and parts[-2][:1].isupper() and parts[-1]:
        row["target_type"], row["target_id"] = parts[-2], parts[-1]
    return row


def _date_rows(value: Any, type_: str | None) -> list[Row]:
    if isinstance(value, str):
        found = date_range(value)
        return [{"low": found[0], "high": found[1]}] if found else []
    if not isinstance(value, dict):
        return []
    if "start" in value or "end" in value:  # Period: open ends reach to the ends of time
        start = date_range(value["start"]) if isinstance(value.get("start"), str) else None
        end = date_range(value["end"]) if isinstance(value.get("end"), str) else None
        return [{"low": start[0] if start else MIN_DATE, "high": end[1] if end else MAX_DATE}]
    if "event" in value or "repeat" in value:  # Timing
        rows = [r for e in value.get("event", []) for r in _date_rows(e, "dateTime")]
        bounds = value.get("repeat", {}).get("boundsPeriod")
        if isinstance(bounds, dict):
            rows.extend(_date_rows(bounds, "Period"))
        return rows
    return []


def _number_rows(value: Any) -> list[Row]:
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return [{"low": float(value), "high": float(value)}]
    return []


def _quantity_rows(value: Any) -> list[Row]:
    if not isinstance(value, dict):
        return []
    if "low" in value or "high" in value:  # Range
        low, high = value.get("low") or {}, value.get("high") or {}
        unit = low or high
        lo = float(low["value"]) if "value" in low else float("-inf")
        hi = float(high["value"]) if "value" in high else float("inf")
        return [{"system": unit.get("system"), "code": unit.get("code") or unit.get("unit"), "low": lo, "high": hi}]
    if "value" not in value or not isinstance(value["value"], int | float | Decimal):
        return []
    number = float(value["value"])
    code = value.get("code") or value.get("unit") or value.get("currency")
    rows = [{"system": value.get("system"), "code": code, "low": number, "high": number}]
    if value.get("unit") and value.get("code") and value["unit"] != value["code"]:
        rows.append({"system": None, "code": value["unit"], "low": number, "high": number})
    return rows
