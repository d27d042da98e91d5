"""A search's values, apart from its shape, so that each shape of search is built into SQL once.

``Observation?patient=1&code=http://loinc.org|8867-4`` and the same search for
another patient and code differ only in the values bound into the SQL.  This
module splits a plan into its *shape* (parameters, modifiers, the form each
value takes, sort, paging direction: everything that changes the SQL text) and
its *values* (a dict of named bind parameters).  ``search_sql`` builds a
statement from the shape, binding each value by its name, and ``search``
keeps the statements by shape: building a SQLAlchemy statement costs more
than running it, so a search whose shape was seen before only binds values.

A value's *form* says which SQL it needs: ``http://loinc.org|8867-4`` is a
token of form ``syscode`` (system and code), ``|8867-4`` of form ``nosys``.
The form goes into the shape; the pieces (``s``, ``c``) go into the values,
named after where the value stands in the plan (clause 2, value 0: ``c2_0_s``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sandbox.fhir.search_cursor import Cursor
from sandbox.fhir.search_params import SearchParam
from sandbox.fhir.search_plan import Clause, SearchPlan, check_date, check_number
from sandbox.fhir.values import fold
from sandbox.store.layers import View

Slots = dict[str, Any]
Form = str | tuple[Any, ...]


def like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def value_form(param: SearchParam, modifier: str | None, raw: str) -> tuple[Form, Slots]:
    """The form of one search value and its pieces, by parameter type."""
    kind = param.type
    if kind == "string":
        if modifier == "exact":
            return "exact", {"v": raw}
        folded = like_escape(fold(raw))
        return ("contains", {"v": f"%{folded}%"}) if modifier == "contains" else ("prefix", {"v": f"{folded}%"})
    if kind == "token":
        return token_form(raw, modifier)
    if kind == "reference":
        return _reference_form(param, raw, modifier)
    if kind == "date":
        return date_form(raw)
    if kind == "number":
        return _number_form(raw)
    if kind == "quantity":
        return _quantity_form(raw)
    if kind == "uri":
        if modifier == "below":
            return "below", {"v": f"{like_escape(raw)}%"}
        return ("above" if modifier == "above" else "eq"), {"v": raw}
    if kind == "composite":
        return _composite_form(param, raw)
    return ("unsupported", kind), {}


def token_form(raw: str, modifier: str | None) -> tuple[Form, Slots]:
    if modifier == "text":
        return "text", {"v": f"{like_escape(fold(raw))}%"}
    if "|" not in raw:
        return "code", {"c": raw}
    system, _, code = raw.partition("|")
    if not system:
        return "nosys", {"c": code}
    if not code:
        return "sys", {"s": system}
    return "syscode", {"s": system, "c": code}


def _reference_form(param: SearchParam, raw: str, modifier: str | None) -> tuple[Form, Slots]:
    if modifier == "identifier":
        system, bar, ident = raw.partition("|")
        if not bar:
            return "ident", {"v": raw}
        if not system:
            return "ident-nosys", {"v": ident}
        return ("ident-sys-v", {"s": system, "v": ident}) if ident else ("ident-sys", {"s": system})
    if modifier:  # :[Type]
        return "typeid", {"t": modifier, "i": raw}
    if "://" in raw or raw.startswith("urn:"):
        url = raw.split("|")[0]
        parts = url.rstrip("/").split("/")
        if len(parts) >= 2:
            return "url-local", {"u": url, "t": parts[-2], "i": parts[-1]}
        return "url", {"u": url}
    if "/" in raw:
        rtype, _, rid = raw.partition("/")
        return "typeid", {"t": rtype, "i": rid.split("/_history/")[0]}
    if len(param.targets) == 1:
        return "typeid", {"t": param.targets[0], "i": raw}
    return "id", {"i": raw}


def date_form(raw: str) -> tuple[Form, Slots]:
    """FHIR date prefixes; the value is a range (``2020`` is all of that year) and so is each stored value."""
    prefix, (low, high) = check_date(raw)
    if prefix != "ap":
        return prefix, {"lo": low, "hi": high}
    # ap: within 10% of the distance between the value and now, on either side.
    now = datetime.now(UTC).replace(tzinfo=None)
    start = datetime.fromisoformat(low)
    gap = abs(now - start) * 0.1
    return "ap", {
        "lo": (start - gap).strftime("%Y-%m-%dT%H:%M:%S.%f"),
        "hi": (datetime.fromisoformat(high) + gap).strftime("%Y-%m-%dT%H:%M:%S.%f"),
    }


def _number_form(raw: str) -> tuple[Form, Slots]:
    prefix, (low, high), value = check_number(raw)
    if prefix == "ap":
        margin = abs(value) * 0.1
        return "ap", {"lo": value - margin, "hi": value + margin}
    return prefix, {"lo": low, "hi": high, "v": value}


def _quantity_form(raw: str) -> tuple[Form, Slots]:
    number, _, unit = raw.partition("|")
    form, slots = _number_form(number)
    system, bar, code = unit.partition("|")
    if not bar:
        code, system = system, ""
    if code:
        slots["code"] = code
    if system:
        slots["system"] = system
    return (form, bool(code), bool(system)), slots


def _composite_form(param: SearchParam, raw: str) -> tuple[Form, Slots]:
    # The plan checked that the parts match the components in number.
    forms: list[Form] = []
    slots: Slots = {}
    for n, (component, part) in enumerate(zip(param.components, raw.split("$"), strict=True)):
        part_param = SearchParam(param.resource_type, f"{param.code}${n}", component.type, "")
        form, part_slots = value_form(part_param, None, part)
        forms.append(form)
        slots.update({f"{n}{name}": value for name, value in part_slots.items()})
    return tuple(forms), slots


# ---- a whole plan ------------------------------------------------------------------------------


def clause_forms(clause: Clause) -> tuple[tuple[Form, Slots], ...]:
    """Each value's form and pieces; ``:missing`` and ``_id`` carry theirs in the clause itself."""
    param = clause.param
    if param.code == "_id" or clause.modifier == "missing":
        return ()
    if clause.modifier == "not":
        return tuple(token_form(v, None) for v in clause.values)
    return tuple(value_form(param, clause.modifier, v) for v in clause.values)


def clause_name(at: str, vi: int, slot: str) -> str:
    """Where piece ``slot`` of value ``vi`` of the clause bound under ``at`` goes (``c3_0_s``)."""
    return f"{at}_{vi}_{slot}"


def compartment_clause(param: SearchParam, patient: str) -> Clause:
    """``param=Patient/{patient}``: membership of a patient's compartment through one reference parameter."""
    return Clause(param, (f"Patient/{patient}",))


def restriction_types(plan: SearchPlan) -> list[str]:
    """The types a restricted caller's limits are spelled out for, in a fixed order."""
    if plan.resource_type:
        return [plan.resource_type]
    return list(plan.types or sorted(plan.restriction or {}))


def layer_name(n: int) -> str:
    return f"layer{n}"


def cursor_names(prefix: str, keys: int) -> tuple[str, str, list[str]]:
    return f"{prefix}_type", f"{prefix}_id", [f"{prefix}_s{n}" for n in range(keys)]


def view_values(view: View) -> dict[str, Any]:
    return {layer_name(n): layer for n, layer in enumerate(view.layers)}


def cursor_shape(cursor: Cursor | None) -> tuple[Any, ...] | None:
    if cursor is None:
        return None
    return cursor.forward, cursor.inclusive, tuple(v is None for v in cursor.values)


def cursor_values(prefix: str, cursor: Cursor) -> dict[str, Any]:
    type_name, id_name, value_names = cursor_names(prefix, len(cursor.values))
    values: dict[str, Any] = {type_name: cursor.resource_type, id_name: cursor.id}
    values.update({name: v for name, v in zip(value_names, cursor.values, strict=True) if v is not None})
    return values


def plan_shape_and_values(view: View, plan: SearchPlan) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The plan's shape (hashable; equal shapes build equal SQL) and the values to bind into it."""
    values = view_values(view)
    clauses = [_clause_shape(values, f"c{n}", clause) for n, clause in enumerate(plan.clauses)]
    last_updated: list[Any] = []
    for n, occurrence in enumerate(plan.last_updated):
        forms = [date_form(v) for v in occurrence]
        last_updated.append(tuple(form for form, _ in forms))
        for vi, (_form, slots) in enumerate(forms):
            values.update({f"lu{n}_{vi}_{slot}": value for slot, value in slots.items()})
    if plan.ids is not None:
        values["ids"] = list(plan.ids)
    if plan.cursor is not None:
        values.update(cursor_values("k", plan.cursor))
    values["limit"] = plan.count + 1
    restriction = None if plan.restriction is None else _restriction_shape(values, plan)
    shape = (
        restriction,
        len(view.layers),
        tuple(sorted(view.quiet)),
        plan.resource_type,
        plan.types,
        plan.ids is not None,
        tuple(last_updated),
        tuple(clauses),
        plan.sort_spec,
        cursor_shape(plan.cursor),
    )
    return shape, values


def _clause_shape(values: dict[str, Any], at: str, clause: Clause) -> tuple[Any, ...]:
    """Put the clause's values under ``at`` and answer what of it shapes the SQL."""
    forms = clause_forms(clause)
    for vi, (_form, slots) in enumerate(forms):
        values.update({clause_name(at, vi, slot): value for slot, value in slots.items()})
    if clause.param.code == "_id":
        values[clause_name(at, 0, "ids")] = list(clause.values)
    return (
        clause.param.resource_type,
        clause.param.code,
        clause.modifier,
        clause.values if clause.modifier == "missing" else len(clause.values),
        tuple((c.param.resource_type, c.param.code, c.target_types) for c in clause.chain),
        tuple((h.source_type, h.reference_param.code) for h in clause.has),
        tuple(form for form, _ in forms),
    )


def _restriction_shape(values: dict[str, Any], plan: SearchPlan) -> tuple[Any, ...]:
    """A restricted caller's limits (``search_sql.restriction_condition``): way ``wi`` of type ``ti`` under
    ``x{ti}_{wi}``, its compartment parameters under ``_p{n}``, its clauses under ``_c{n}``."""
    restriction = plan.restriction or {}
    per_type: list[Any] = []
    for ti, rtype in enumerate(restriction_types(plan)):
        ways: list[Any] = []
        for wi, way in enumerate(restriction.get(rtype) or ()):
            at = f"x{ti}_{wi}"
            compartment: list[Any] = []
            if way.patient is not None:
                values[f"{at}_pid"] = way.patient
                compartment = [
                    _clause_shape(values, f"{at}_p{pi}", compartment_clause(p, way.patient))
                    for pi, p in enumerate(way.compartment)
                ]
            clauses = [_clause_shape(values, f"{at}_c{ci}", c) for ci, c in enumerate(way.clauses)]
            ways.append((way.patient is not None, tuple(compartment), tuple(clauses)))
        per_type.append((rtype, tuple(ways)))
    return tuple(per_type)
