"""Turn a resource into search index rows, one list per index table.

Runs inside the write transaction, so the index is always exactly the stored
resources: search never scans JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sandbox.fhir.expressions import Branch, Typed, reference_type
from sandbox.fhir.search_params import Registry
from sandbox.fhir.values import MAX_DATE, MIN_DATE, date_range, fold

Row = dict[str, Any]
# A string value longer than this is cut in the index; FHIR servers commonly index a prefix.
MAX_STRING = 255

# Each index table kind's value columns, in the order its rows hold them; a row then ends with param and grp.
VALUE_COLUMNS: dict[str, tuple[str, ...]] = {
    "string": ("value", "exact"),
    "token": ("system", "code", "text"),
    "reference": ("target_type", "target_id", "url", "ident_system", "ident_value"),
    "date": ("low", "high"),
    "number": ("low", "high"),
    "quantity": ("system", "code", "low", "high"),
    "uri": ("value",),
    "combo": ("target_type", "target_id", "system", "code"),
}
COLUMNS: dict[str, tuple[str, ...]] = {kind: (*names, "param", "grp") for kind, names in VALUE_COLUMNS.items()}
# A stored index row's columns: the resource's key (layer, type, id), then ``COLUMNS[kind]``.
STORED_COLUMNS: dict[str, tuple[str, ...]] = {
    kind: ("layer_id", "resource_type", "resource_id", *names) for kind, names in COLUMNS.items()
}

# The pairs of parameters whose values are also indexed together, one ``sp_combo`` row per pair of values
# (``schema.sp_combo``): (reference parameter, token parameter) -> the rows' ``param``.
COMBOS: dict[tuple[str, str], str] = {("patient", "code"): "patient+code"}


def index_resource(registry: Registry, resource: dict) -> dict[str, list[Row]]:
    """All index rows for ``resource``, keyed by index table kind ("string", "token", ...), each row a dict
    of its columns (``COLUMNS``)."""
    return {
        kind: [dict(zip(COLUMNS[kind], row, strict=True)) for row in rows]
        for kind, rows in index_tuples(registry, resource).items()
    }


def index_tuples(registry: Registry, resource: dict) -> dict[str, list[tuple]]:
    """``index_resource``'s rows as tuples, in the order of ``COLUMNS[kind]``: what bulk inserts take."""
    rows: dict[str, list[tuple]] = {}
    # Values turned into rows once per resource and element: Observation.code gives the rows of code,
    # combo-code and the code component of two composites, valueQuantity those of four parameters.
    memo: dict[tuple[str, int, int], list[tuple]] = {}
    grp = 0
    # Only what can find anything in a resource of this shape is run (``IndexPlan``).
    for param, planned in registry.index_plan(resource["resourceType"]).for_shape(tuple(resource)):
        if param.type != "composite":
            found = _branch_rows(param.type, planned, resource, memo)  # type: ignore[arg-type]
            if found:
                tail = (param.code, 0)
                rows.setdefault(param.type, []).extend([row + tail for row in found])
            continue
        kinds = [component.type for component in param.components]
        for focus_branch, components in planned:  # type: ignore[misc]
            for focus, _ in focus_branch.run(resource):
                if not isinstance(focus, dict):
                    continue
                parts: list[list[tuple]] = []
                for kind, branches in zip(kinds, components, strict=True):
                    part = _branch_rows(kind, branches, focus, memo)
                    if not part:
                        break  # a composite value needs every component: the rest need not be worked out
                    parts.append(part)
                else:
                    grp += 1
                    for kind, code, part in zip(kinds, param.component_codes, parts, strict=True):
                        tail = (code, grp)
                        rows.setdefault(kind, []).extend([row + tail for row in part])
    combos = _combo_rows(rows)
    if combos:
        rows["combo"] = combos
    # The first of equal rows is kept, in order.
    return {kind: list(dict.fromkeys(found)) for kind, found in rows.items()}


def _combo_rows(rows: dict[str, list[tuple]]) -> list[tuple]:
    """Each local target of the reference parameter with each code of the token parameter, per ``COMBOS``."""
    out: list[tuple] = []
    for (ref_param, token_param), name in COMBOS.items():
        # Reference rows: target_type, target_id, url, ident_system, ident_value, param, grp.
        targets = [(r[0], r[1]) for r in rows.get("reference", ()) if r[5] == ref_param and r[1] is not None]
        if not targets:
            continue
        # Token rows: system, code, text, param, grp.
        codes = [(t[0], t[1]) for t in rows.get("token", ()) if t[3] == token_param and t[1] is not None]
        out.extend((*target, *code, name, 0) for target in targets for code in codes)
    return out


def _branch_rows(
    kind: str, branches: tuple[Branch, ...], focus: dict, memo: dict[tuple[str, int, int], list[tuple]]
) -> list[tuple]:
    """The value columns of the rows an expression's values in ``focus`` give (not to be changed: shared)."""
    convert = _CONVERTERS.get(kind)
    if convert is None:
        return []
    out: list[tuple] = []
    for branch in branches:
        if branch.key is None:
            found = _converted(convert, branch.run(focus))
        else:
            # ``focus`` is the resource or an element of it, so its id stays its own while the resource is indexed.
            key = (kind, id(focus), branch.key)
            found = memo.get(key)  # type: ignore[assignment]
            if found is None:
                found = memo[key] = _converted(convert, branch.run(focus))
        if len(branches) == 1:
            return found
        out.extend(found)
    return out


def _converted(convert: Callable[[Any, str | None], list[tuple]], values: list[Typed]) -> list[tuple]:
    out: list[tuple] = []
    for value, type_ in values:
        out.extend(convert(value, type_))
    return out


def _string_rows(value: Any, type_: str | None = None) -> list[tuple]:
    if isinstance(value, str):
        return [(fold(value)[:MAX_STRING], value[:MAX_STRING])]
    if isinstance(value, dict):
        # HumanName, Address and the like: every string part is searchable on its own.
        parts: list[tuple] = []
        for key, part in value.items():
            if key in ("use", "period", "extension", "id", "type"):
                continue
            for item in part if isinstance(part, list) else [part]:
                if isinstance(item, str):
                    parts.extend(_string_rows(item))
        return parts
    return []


def _token_rows(value: Any, type_: str | None) -> list[tuple]:
    if isinstance(value, bool):
        return [(None, "true" if value else "false", None)]
    if isinstance(value, str | int):
        return [(None, str(value), None)]
    if not isinstance(value, dict):
        return []
    if type_ == "CodeableConcept" or "coding" in value:
        text = fold(value["text"]) if isinstance(value.get("text"), str) else None
        rows = [
            (c.get("system"), c.get("code"), _coding_text(c) or text)
            for c in value.get("coding", [])
            if isinstance(c, dict)
        ]
        # ``:text`` matches the text of any of the parameter's rows, and a coding's row carries its display (or
        # the concept's text): the concept's text needs a row of its own only when no coding's row has it.  Most
        # codings' display is the concept's text: the rows left out were 4 of a vital sign's 23 index rows.
        if text and not any(row[2] == text for row in rows):
            rows.append((None, None, text))
        return rows
    if type_ == "ContactPoint":
        return [(value.get("system"), value.get("value"), None)] if "value" in value else []
    if type_ == "Identifier" or ("value" in value and "code" not in value):
        type_text = value.get("type", {}).get("text") if isinstance(value.get("type"), dict) else None
        return [(value.get("system"), value.get("value"), fold(type_text) if type_text else None)]
    if "code" in value or "system" in value:  # Coding, Quantity as token
        return [(value.get("system"), value.get("code"), _coding_text(value))]
    return []


def _coding_text(coding: dict) -> str | None:
    display = coding.get("display")
    return fold(display) if isinstance(display, str) else None


def _reference_rows(value: Any, type_: str | None) -> list[tuple]:
    if isinstance(value, str):  # canonical or uri used as a reference
        return [_reference_row(value, None)]
    if not isinstance(value, dict):
        return []
    rows: list[tuple] = []
    ref = value.get("reference")
    if isinstance(ref, str) and not ref.startswith("#"):
        declared = value.get("type")
        rows.append(_reference_row(ref, declared if isinstance(declared, str) else None))
    ident = value.get("identifier")
    if isinstance(ident, dict) and ident.get("value"):
        rows.append((reference_type(value), None, None, ident.get("system"), ident["value"]))
    return rows


def _reference_row(ref: str, declared_type: str | None) -> tuple:
    """``Patient/1``, ``Patient/1/_history/2`` or an absolute ``http://host/fhir/Patient/1``; a reference
    whose text names no type takes ``declared_type`` (``Reference.type``).

    Absolute URLs keep their text in ``url`` too: the search side decides
    whether they belong to this server.
    """
    # A canonical may carry a version (``http://x/Questionnaire/q|2``); the reference is to the resource.
    plain = ref.split("/_history/")[0].split("|")[0]
    parts = plain.split("/")
    url = plain if "://" in ref or ref.startswith("urn:") else None
    if len(parts) >= 2 and parts[-2][:1].isupper() and parts[-1]:
        return (parts[-2], parts[-1], url, None, None)
    return (declared_type, None, url, None, None)


def _date_rows(value: Any, type_: str | None) -> list[tuple]:
    if isinstance(value, str):
        found = date_range(value)
        return [found] if found else []
    if not isinstance(value, dict):
        return []
    if "start" in value or "end" in value:  # Period: open ends reach to the ends of time
        start = date_range(value["start"]) if isinstance(value.get("start"), str) else None
        end = date_range(value["end"]) if isinstance(value.get("end"), str) else None
        return [(start[0] if start else MIN_DATE, end[1] if end else MAX_DATE)]
    if "event" in value or "repeat" in value:  # Timing
        rows = [r for e in value.get("event", []) for r in _date_rows(e, "dateTime")]
        bounds = value.get("repeat", {}).get("boundsPeriod")
        if isinstance(bounds, dict):
            rows.extend(_date_rows(bounds, "Period"))
        return rows
    return []


def _number_rows(value: Any, type_: str | None = None) -> list[tuple]:
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return [(float(value), float(value))]
    return []


def _quantity_rows(value: Any, type_: str | None = None) -> list[tuple]:
    if not isinstance(value, dict):
        return []
    if "low" in value or "high" in value:  # Range
        low, high = value.get("low") or {}, value.get("high") or {}
        unit = low or high
        lo = float(low["value"]) if "value" in low else float("-inf")
        hi = float(high["value"]) if "value" in high else float("inf")
        return [(unit.get("system"), unit.get("code") or unit.get("unit"), lo, hi)]
    if "value" not in value or not isinstance(value["value"], int | float | Decimal):
        return []
    number = float(value["value"])
    code = value.get("code") or value.get("unit") or value.get("currency")
    rows = [(value.get("system"), code, number, number)]
    if value.get("unit") and value.get("code") and value["unit"] != value["code"]:
        rows.append((None, value["unit"], number, number))
    return rows


def _uri_rows(value: Any, type_: str | None) -> list[tuple]:
    return [(value,)] if isinstance(value, str) else []


# How a value becomes the value columns of its rows, per index table kind (other kinds index nothing).
_CONVERTERS: dict[str, Callable[[Any, str | None], list[tuple]]] = {
    "string": _string_rows,
    "token": _token_rows,
    "reference": _reference_rows,
    "date": _date_rows,
    "number": _number_rows,
    "quantity": _quantity_rows,
    "uri": _uri_rows,
}
