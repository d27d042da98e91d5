"""Turn a SearchPlan into SQL over the index tables.

Each clause becomes ``(layer_id, id) IN (SELECT layer_id, resource_id FROM
sp_<type> WHERE ...)`` against the visible resources of the sandbox: the
subquery form beat joins 7 to 24 times on SQLite (DESIGN.md), and matching the
layer as well as the id means a baseline's index rows never match a resource
the sandbox has changed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Select,
    and_,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    tuple_,
)

from sandbox.fhir.outcome import FhirError
from sandbox.fhir.search_params import SearchParam
from sandbox.fhir.search_plan import PREFIXES, Chain, Clause, Has, SearchPlan, SortKey
from sandbox.fhir.values import date_range, fold, number_range
from sandbox.store.layers import View
from sandbox.store.schema import INDEX_TABLES, resources, sp_reference


def visible(view: View, rtype: str | None, r: FromClause = resources) -> ColumnElement[bool]:
    """Rows of ``r`` that the sandbox sees: its own, and its baseline's that it has not shadowed."""
    conditions = [r.c.deleted == false()]
    if rtype:
        conditions.append(r.c.resource_type == rtype)
    if not view.layered:
        conditions.append(r.c.layer_id == view.overlay)
        return and_(*conditions)
    top = resources.alias("shadow")
    shadowed = exists().where(
        top.c.layer_id == view.overlay, top.c.resource_type == r.c.resource_type, top.c.id == r.c.id
    )
    conditions.append(r.c.layer_id.in_(view.layers))
    conditions.append(or_(r.c.layer_id == view.overlay, not_(shadowed)))
    return and_(*conditions)


def _member_of(view: View, r: FromClause, sub_layer: Any, sub_id: Any, where: list[Any]) -> ColumnElement[bool]:
    """``r`` is among the resources a subquery over an index table selects (same layer, same id)."""
    if not view.layered:
        return r.c.id.in_(select(sub_id).where(sub_layer == view.overlay, *where))
    return tuple_(r.c.layer_id, r.c.id).in_(select(sub_layer, sub_id).where(sub_layer.in_(view.layers), *where))


def plan_conditions(view: View, plan: SearchPlan, r: FromClause = resources) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [visible(view, plan.resource_type, r)]
    if plan.ids is not None:
        conditions.append(r.c.id.in_(plan.ids))
    for values in plan.last_updated:
        conditions.append(or_(*[_date_condition(r.c.last_updated, r.c.last_updated, v) for v in values]))
    for clause in plan.clauses:
        conditions.append(clause_condition(view, plan.resource_type or "", clause, r))
    return conditions


def clause_condition(view: View, rtype: str, clause: Clause, r: FromClause) -> ColumnElement[bool]:
    if clause.has:
        return _has_condition(view, rtype, clause, r)
    if clause.chain:
        return _chain_condition(view, rtype, clause.chain, Clause(clause.param, clause.values, clause.modifier), r)
    param = clause.param
    if param.code == "_id":
        return r.c.id.in_(clause.values)
    if clause.modifier == "missing":
        present = _param_rows(view, rtype, param, r, [])
        return not_(present) if clause.values[0] == "true" else present
    if clause.modifier == "not":
        # Resources with no value matching any of the given ones (including those with no value).
        matching = or_(*[_value_condition(param, v, None, INDEX_TABLES["token"]) for v in clause.values])
        return not_(_param_rows(view, rtype, param, r, [matching]))
    if param.type == "composite":
        return or_(*[_composite_condition(view, rtype, param, v, r) for v in clause.values])
    table = INDEX_TABLES[param.type]
    either = or_(*[_value_condition(param, v, clause.modifier, table) for v in clause.values])
    return _param_rows(view, rtype, param, r, [either])


def _param_rows(view: View, rtype: str, param: SearchParam, r: FromClause, where: list[Any]) -> ColumnElement[bool]:
    table = INDEX_TABLES["token" if param.type == "composite" else param.type]
    return _member_of(
        view,
        r,
        table.c.layer_id,
        table.c.resource_id,
        [table.c.resource_type == rtype, table.c.param == param.code, *where],
    )


def _chain_condition(
    view: View, rtype: str, chain: tuple[Chain, ...], last: Clause, r: FromClause
) -> ColumnElement[bool]:
    link, rest = chain[0], chain[1:]
    target = resources.alias()
    if rest:
        inner = _chain_condition(view, link.target_type, rest, last, target)
    else:
        inner = clause_condition(view, link.target_type, last, target)
    targets = select(target.c.id).where(visible(view, link.target_type, target), inner)
    ref = sp_reference
    return _member_of(
        view,
        r,
        ref.c.layer_id,
        ref.c.resource_id,
        [
            ref.c.resource_type == rtype,
            ref.c.param == link.param.code,
            ref.c.target_type == link.target_type,
            ref.c.target_id.in_(targets),
        ],
    )


def _has_condition(view: View, rtype: str, clause: Clause, r: FromClause) -> ColumnElement[bool]:
    first, rest = clause.has[0], clause.has[1:]
    source = resources.alias()
    inner_clause = Clause(clause.param, clause.values, clause.modifier, clause.chain, rest)
    sources = select(source.c.id).where(
        visible(view, first.source_type, source), clause_condition(view, first.source_type, inner_clause, source)
    )
    return r.c.id.in_(_referenced_ids(view, first, rtype, sources))


def _referenced_ids(view: View, has: Has, target_type: str, sources: Select) -> Select:
    ref = sp_reference
    return select(ref.c.target_id).where(
        ref.c.layer_id.in_(view.layers),
        ref.c.resource_type == has.source_type,
        ref.c.param == has.reference_param.code,
        ref.c.target_type == target_type,
        ref.c.resource_id.in_(sources),
    )


def _composite_condition(view: View, rtype: str, param: SearchParam, raw: str, r: FromClause) -> ColumnElement[bool]:
    parts = raw.split("$")
    if len(parts) != len(param.components):
        raise FhirError.of(400, "invalid", f"'{param.code}' needs {len(param.components)} values joined by '$'")
    tables = [INDEX_TABLES[c.type].alias() for c in param.components]
    first = tables[0]
    where: list[Any] = [first.c.resource_type == rtype]
    for n, (component, table, value) in enumerate(zip(param.components, tables, parts, strict=True)):
        fake = SearchParam(param.resource_type, f"{param.code}${n}", component.type, "")
        where.append(table.c.param == fake.code)
        where.append(_value_condition(fake, value, None, table))
        if n:
            where.extend(
                [
                    table.c.layer_id == first.c.layer_id,
                    table.c.resource_type == first.c.resource_type,
                    table.c.resource_id == first.c.resource_id,
                    table.c.grp == first.c.grp,
                ]
            )
    return _member_of(view, r, first.c.layer_id, first.c.resource_id, where)


# ---- value conditions per parameter type ------------------------------------------------------


def _split_prefix(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2] in PREFIXES and (value[2].isdigit() or value[2] in "-+."):
        return value[:2], value[2:]
    return "eq", value


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _value_condition(param: SearchParam, value: str, modifier: str | None, table: Any) -> ColumnElement[bool]:
    kind = param.type
    if kind == "string":
        if modifier == "exact":
            return table.c.exact == value
        folded = _like_escape(fold(value))
        if modifier == "contains":
            return table.c.value.like(f"%{folded}%", escape="\\")
        return table.c.value.like(f"{folded}%", escape="\\")
    if kind == "token":
        return _token_condition(value, modifier, table)
    if kind == "reference":
        return _reference_condition(param, value, modifier, table)
    if kind == "date":
        return _date_condition(table.c.low, table.c.high, value)
    if kind == "number":
        return _number_condition(table.c.low, table.c.high, value)
    if kind == "quantity":
        return _quantity_condition(value, table)
    if kind == "uri":
        if modifier == "below":
            return table.c.value.like(f"{_like_escape(value)}%", escape="\\")
        if modifier == "above":
            return literal(value).like(table.c.value + "%")
        return table.c.value == value
    raise FhirError.of(400, "not-supported", f"Searching on {kind} parameters is not supported")


def _token_condition(value: str, modifier: str | None, table: Any) -> ColumnElement[bool]:
    if modifier == "text":
        return table.c.text.like(f"{_like_escape(fold(value))}%", escape="\\")
    if "|" not in value:
        return table.c.code == value
    system, _, code = value.partition("|")
    if not system:
        return and_(table.c.system.is_(None), table.c.code == code)
    if not code:
        return table.c.system == system
    return and_(table.c.system == system, table.c.code == code)


def _reference_condition(param: SearchParam, value: str, modifier: str | None, table: Any) -> ColumnElement[bool]:
    if modifier == "identifier":
        system, bar, ident = value.partition("|")
        if not bar:
            return table.c.ident_value == value
        if not system:
            return and_(table.c.ident_system.is_(None), table.c.ident_value == ident)
        return (
            and_(table.c.ident_system == system, table.c.ident_value == ident)
            if ident
            else table.c.ident_system == system
        )
    if modifier:  # :[Type]
        return and_(table.c.target_type == modifier, table.c.target_id == value)
    if "://" in value or value.startswith("urn:"):
        url = value.split("|")[0]
        parts = url.rstrip("/").split("/")
        local = and_(table.c.target_type == parts[-2], table.c.target_id == parts[-1]) if len(parts) >= 2 else false()
        return or_(table.c.url == url, local)
    if "/" in value:
        rtype, _, rid = value.partition("/")
        return and_(table.c.target_type == rtype, table.c.target_id == rid.split("/_history/")[0])
    if len(param.targets) == 1:
        return and_(table.c.target_type == param.targets[0], table.c.target_id == value)
    return table.c.target_id == value


def _date_condition(low: Any, high: Any, raw: str) -> ColumnElement[bool]:
    prefix, text = _split_prefix(raw)
    bounds = date_range(text)
    if bounds is None:
        raise FhirError.of(400, "invalid", f"'{text}' is not a valid date, dateTime or instant")
    qlow, qhigh = bounds
    if prefix == "eq":
        return and_(low >= qlow, high <= qhigh)
    if prefix == "ne":
        return not_(and_(low >= qlow, high <= qhigh))
    if prefix == "gt":
        return high > qhigh
    if prefix == "lt":
        return low < qlow
    if prefix == "ge":
        return high >= qlow
    if prefix == "le":
        return low <= qhigh
    if prefix == "sa":
        return low > qhigh
    if prefix == "eb":
        return high < qlow
    # ap: within 10% of the distance between the value and now, on either side.
    now = datetime.now(UTC).replace(tzinfo=None)
    start = datetime.fromisoformat(qlow)
    gap = abs(now - start) * 0.1
    lo = (start - gap).strftime("%Y-%m-%dT%H:%M:%S.%f")
    hi = (datetime.fromisoformat(qhigh) + gap).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return and_(high >= lo, low <= hi)


def _number_condition(low: Any, high: Any, raw: str) -> ColumnElement[bool]:
    prefix, text = _split_prefix(raw)
    bounds = number_range(text)
    if bounds is None:
        raise FhirError.of(400, "invalid", f"'{text}' is not a number")
    qlow, qhigh = bounds
    value = float(text)
    if prefix == "eq":
        return and_(low >= qlow, high < qhigh)
    if prefix == "ne":
        return or_(low < qlow, high >= qhigh)
    if prefix in ("gt", "sa"):
        return high > value
    if prefix in ("lt", "eb"):
        return low < value
    if prefix == "ge":
        return high >= value
    if prefix == "le":
        return low <= value
    margin = abs(value) * 0.1  # ap
    return and_(high >= value - margin, low <= value + margin)


def _quantity_condition(raw: str, table: Any) -> ColumnElement[bool]:
    number, _, unit = raw.partition("|")
    condition = _number_condition(table.c.low, table.c.high, number)
    if unit:
        system, bar, code = unit.partition("|")
        if not bar:
            code, system = system, ""
        if code:
            condition = and_(condition, table.c.code == code)
        if system:
            condition = and_(condition, table.c.system == system)
    return condition


# ---- sorting ----------------------------------------------------------------------------------


def sort_expression(view: View, key: SortKey, r: FromClause) -> Any:
    """The value a resource sorts by: the lowest value of the parameter ascending, the highest descending."""
    if key.param is None:
        return r.c.id if key.code == "_id" else r.c.last_updated
    table = INDEX_TABLES[key.param.type]
    column = {
        "string": "value",
        "token": "code",
        "reference": "target_id",
        "date": "high" if key.descending else "low",
        "number": "low",
        "quantity": "low",
        "uri": "value",
    }[key.param.type]
    agg = func.max if key.descending else func.min
    return (
        select(agg(table.c[column]))
        .where(
            table.c.layer_id == r.c.layer_id,
            table.c.resource_type == r.c.resource_type,
            table.c.resource_id == r.c.id,
            table.c.param == key.param.code,
        )
        .scalar_subquery()
    )


def order_by(view: View, plan: SearchPlan, r: FromClause) -> list[Any]:
    keys = []
    for key in plan.sort:
        expr = sort_expression(view, key, r)
        # Resources with no value sort last in both directions, as HAPI and Medplum do.
        keys.append(expr.is_(None))
        keys.append(expr.desc() if key.descending else expr.asc())
    keys.extend([r.c.resource_type, r.c.id])
    return keys
