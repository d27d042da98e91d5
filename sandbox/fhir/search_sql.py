"""Turn a SearchPlan into SQL over the index tables.

Each clause becomes ``(layer_id, id) IN (SELECT layer_id, resource_id FROM
sp_<type> WHERE ...)`` against the visible resources of the sandbox: the
subquery form beat joins 7 to 24 times on SQLite (DESIGN.md), and matching the
layer as well as the id means a baseline's index rows never match a resource
the sandbox has changed.  Every hop to another resource (chains, ``_has``)
matches layer and id the same way, so a shadowed baseline row never leaks in.
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
    true,
    tuple_,
)

from sandbox.fhir.outcome import FhirError
from sandbox.fhir.search_cursor import Cursor, SortValue
from sandbox.fhir.search_params import SearchParam
from sandbox.fhir.search_plan import Allowed, Chain, Clause, Has, SearchPlan, SortKey, check_date, check_number
from sandbox.fhir.values import fold
from sandbox.store.layers import View
from sandbox.store.schema import INDEX_TABLES, resources, sp_reference

Types = str | tuple[str, ...] | None  # one type, the types of a system-level search, or all


def visible(view: View, rtypes: Types, r: FromClause = resources) -> ColumnElement[bool]:
    """Rows of ``r`` that the sandbox sees: its own, and its baseline's that it has not shadowed."""
    conditions = [r.c.deleted == false()]
    if isinstance(rtypes, str):
        conditions.append(r.c.resource_type == rtypes)
    elif rtypes:
        conditions.append(r.c.resource_type.in_(rtypes))
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


def _member_of(
    view: View, rtype: str | None, r: FromClause, table: Any, where: list[Any], *, probe: bool = False
) -> ColumnElement[bool]:
    """``r`` is among the resources a subquery over an index table selects (same layer, same id).

    ``rtype`` None (a search across types) matches the type too, since ids are only unique per type.
    ``probe`` ties the subquery to the outer row, so the database checks each candidate with one
    seek on the value-first index instead of first listing every resource with the value: right
    for every clause but the one that drives the search (a common code can have 20,000 rows).
    """
    if probe:
        where = [*where, table.c.resource_id == r.c.id]
        if view.layered:
            where.append(table.c.layer_id == r.c.layer_id)
    if rtype is not None:
        where = [table.c.resource_type == rtype, *where]
        if not view.layered:
            return r.c.id.in_(select(table.c.resource_id).where(table.c.layer_id == view.overlay, *where))
        return tuple_(r.c.layer_id, r.c.id).in_(
            select(table.c.layer_id, table.c.resource_id).where(table.c.layer_id.in_(view.layers), *where)
        )
    return tuple_(r.c.layer_id, r.c.resource_type, r.c.id).in_(
        select(table.c.layer_id, table.c.resource_type, table.c.resource_id).where(
            table.c.layer_id.in_(view.layers), *where
        )
    )


def plan_conditions(view: View, plan: SearchPlan, r: FromClause = resources) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [visible(view, plan.resource_type or plan.types, r)]
    if plan.ids is not None:
        conditions.append(r.c.id.in_(plan.ids))
    for values in plan.last_updated:
        conditions.append(or_(*[_date_condition(r.c.last_updated, r.c.last_updated, v) for v in values]))
    driver = None if plan.ids is not None else _driver(plan.clauses)
    for clause in plan.clauses:
        conditions.append(clause_condition(view, plan.resource_type, clause, r, probe=clause is not driver))
    if plan.restriction is not None:
        conditions.append(restriction_condition(view, plan, r))
    return conditions


def restriction_condition(view: View, plan: SearchPlan, r: FromClause = resources) -> ColumnElement[bool]:
    """What a restricted caller may see of the plan's type(s): any of the allowed ways of each type."""
    restriction = plan.restriction or {}
    types = [plan.resource_type] if plan.resource_type else list(plan.types or sorted(restriction))
    per_type = []
    for rtype in types:
        ways = restriction.get(rtype)
        if not ways:
            continue
        either = or_(*[_allowed_condition(view, rtype, way, r) for way in ways])
        per_type.append(either if plan.resource_type else and_(r.c.resource_type == rtype, either))
    return or_(*per_type) if per_type else false()


def _allowed_condition(view: View, rtype: str, way: Allowed, r: FromClause) -> ColumnElement[bool]:
    parts: list[ColumnElement[bool]] = []
    if way.patient is not None:
        # The compartment, through the same index rows as any reference search (patient=Patient/x).
        target = (f"Patient/{way.patient}",)
        members = [clause_condition(view, rtype, Clause(p, target), r, probe=True) for p in way.compartment]
        if rtype == "Patient":
            members.append(r.c.id == way.patient)
        parts.append(or_(*members) if members else false())
    parts.extend(clause_condition(view, rtype, clause, r, probe=True) for clause in way.clauses)
    return and_(*parts) if parts else true()


def _driver(clauses: list[Clause]) -> Clause | None:
    """The clause whose matches the search starts from; the others are checked per candidate.

    A plain reference (``patient=X``, ``subject=Patient/X``) is nearly always the most selective,
    so it drives when there is one; otherwise the first clause does, as written.
    """
    for clause in clauses:
        if clause.param.type == "reference" and not clause.chain and not clause.has and clause.modifier is None:
            return clause
    return clauses[0] if clauses else None


def clause_condition(
    view: View, rtype: str | None, clause: Clause, r: FromClause, *, probe: bool = False
) -> ColumnElement[bool]:
    if clause.has:
        assert rtype is not None
        return _has_condition(view, rtype, clause, r)
    if clause.chain:
        assert rtype is not None
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
    return _param_rows(view, rtype, param, r, [either], probe=probe)


def _param_rows(
    view: View, rtype: str | None, param: SearchParam, r: FromClause, where: list[Any], *, probe: bool = False
) -> ColumnElement[bool]:
    if param.type == "composite":
        # A composite value is indexed as its components' rows; the first component stands for it.
        table = INDEX_TABLES[param.components[0].type]
        return _member_of(view, rtype, r, table, [table.c.param == f"{param.code}$0", *where], probe=probe)
    table = INDEX_TABLES[param.type]
    return _member_of(view, rtype, r, table, [table.c.param == param.code, *where], probe=probe)


def _chain_condition(
    view: View, rtype: str, chain: tuple[Chain, ...], last: Clause, r: FromClause
) -> ColumnElement[bool]:
    link, rest = chain[0], chain[1:]
    ref = sp_reference
    per_type: list[ColumnElement[bool]] = []
    for target_type in link.target_types:
        target = resources.alias()
        if rest:
            inner = _chain_condition(view, target_type, rest, last, target)
        else:
            inner = clause_condition(view, target_type, last, target)
        # Targets are matched by id among the visible resources, so a reference into the baseline
        # follows whichever layer's version of the target the sandbox sees.
        targets = select(target.c.id).where(visible(view, target_type, target), inner)
        per_type.append(and_(ref.c.target_type == target_type, ref.c.target_id.in_(targets)))
    return _member_of(view, rtype, r, ref, [ref.c.param == link.param.code, or_(*per_type)])


def _has_condition(view: View, rtype: str, clause: Clause, r: FromClause) -> ColumnElement[bool]:
    first, rest = clause.has[0], clause.has[1:]
    source = resources.alias()
    inner_clause = Clause(clause.param, clause.values, clause.modifier, clause.chain, rest)
    matching = clause_condition(view, first.source_type, inner_clause, source)
    sources = select(source.c.layer_id, source.c.id).where(visible(view, first.source_type, source), matching)
    return r.c.id.in_(_referenced_ids(view, first, rtype, sources))


def _referenced_ids(view: View, has: Has, target_type: str, sources: Select) -> Select:
    """Ids the matching sources refer to, through the index rows of the sources' visible versions only."""
    ref = sp_reference
    return select(ref.c.target_id).where(
        ref.c.layer_id.in_(view.layers),
        ref.c.resource_type == has.source_type,
        ref.c.param == has.reference_param.code,
        ref.c.target_type == target_type,
        tuple_(ref.c.layer_id, ref.c.resource_id).in_(sources),
    )


def _composite_condition(
    view: View, rtype: str | None, param: SearchParam, raw: str, r: FromClause
) -> ColumnElement[bool]:
    parts = raw.split("$")
    if len(parts) != len(param.components):
        raise FhirError.of(400, "invalid", f"'{param.code}' needs {len(param.components)} values joined by '$'")
    tables = [INDEX_TABLES[c.type].alias() for c in param.components]
    first = tables[0]
    where: list[Any] = []
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
    return _member_of(view, rtype, r, first, where)


# ---- value conditions per parameter type ------------------------------------------------------


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
    """FHIR R4 date prefixes over ranges: both the value searched for and the stored value are ranges.

    ``eq``: the search range contains the target; ``gt``: the part above the search range
    overlaps the target; ``ge``: ``gt`` or ``eq``; ``sa``: the target starts after the search range.
    """
    prefix, (qlow, qhigh) = check_date(raw)
    contained = and_(low >= qlow, high <= qhigh)
    if prefix == "eq":
        return contained
    if prefix == "ne":
        return not_(contained)
    if prefix == "gt":
        return high > qhigh
    if prefix == "lt":
        return low < qlow
    if prefix == "ge":
        return or_(high > qhigh, contained)
    if prefix == "le":
        return or_(low < qlow, contained)
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
    """Numbers: ``eq`` uses the implicit precision of the value (``100`` is [99.5, 100.5));
    ``gt``/``lt``/``ge``/``le`` compare with the value itself; ``sa``/``eb`` lie beyond its range."""
    prefix, (qlow, qhigh), value = check_number(raw)
    if prefix == "eq":
        return and_(low >= qlow, high < qhigh)
    if prefix == "ne":
        return or_(low < qlow, high >= qhigh)
    if prefix == "gt":
        return high > value
    if prefix == "lt":
        return low < value
    if prefix == "ge":
        return high >= value
    if prefix == "le":
        return low <= value
    if prefix == "sa":
        return low >= qhigh
    if prefix == "eb":
        return high < qlow
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


# ---- sorting and keyset paging ------------------------------------------------------------------


def sort_expression(key: SortKey, r: FromClause) -> Any:
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


def sort_label(n: int) -> str:
    return f"sort_{n}"


def order_by(plan: SearchPlan, page: FromClause, *, forward: bool = True) -> list[Any]:
    """The order of a page subquery carrying ``sort_N`` columns; ``forward=False`` reads it backwards.

    Resources with no value sort last in both directions, as HAPI and Medplum do; the
    type and id break ties, so the order is total and a cursor position is unambiguous.
    """
    keys: list[Any] = []
    for n, key in enumerate(plan.sort):
        column = page.c[sort_label(n)]
        ordered = column.asc() if key.descending != forward else column.desc()
        keys.append(ordered.nulls_last() if forward else ordered.nulls_first())
    if forward:
        keys.extend([page.c.resource_type.asc(), page.c.id.asc()])
    else:
        keys.extend([page.c.resource_type.desc(), page.c.id.desc()])
    return keys


def keyset_condition(plan: SearchPlan, page: FromClause, cursor: Cursor) -> ColumnElement[bool]:
    """Rows strictly after (or before) the cursor's position in the sort order, or at it when inclusive.

    Built as ``k1 beyond v1 OR (k1 = v1 AND (k2 beyond v2 OR (...)))``, with NULLs last
    in the forward order, so it works for any mix of ascending and descending keys.
    """
    tail: ColumnElement[bool] = or_(
        _beyond(page.c.resource_type, cursor.resource_type, cursor.forward),
        and_(
            page.c.resource_type == cursor.resource_type,
            or_(_beyond(page.c.id, cursor.id, cursor.forward), page.c.id == cursor.id)
            if cursor.inclusive
            else _beyond(page.c.id, cursor.id, cursor.forward),
        ),
    )
    for n in reversed(range(len(plan.sort))):
        key, value = plan.sort[n], cursor.values[n]
        column = page.c[sort_label(n)]
        after = cursor.forward != key.descending  # "beyond" means greater for this key
        tail = or_(_key_beyond(column, value, after, cursor.forward), and_(_key_equal(column, value), tail))
    return tail


def _beyond(column: Any, value: str, greater: bool) -> ColumnElement[bool]:
    return column > value if greater else column < value


def _key_beyond(column: Any, value: SortValue, greater: bool, forward: bool) -> ColumnElement[bool]:
    # NULLs sit at the end of the forward order: beyond every value going forward, before none going back.
    if value is None:
        return false() if forward else column.is_not(None)
    compared = _beyond(column, value, greater)  # type: ignore[arg-type]
    return or_(column.is_(None), compared) if forward else and_(column.is_not(None), compared)


def _key_equal(column: Any, value: SortValue) -> ColumnElement[bool]:
    return column.is_(None) if value is None else column == value
