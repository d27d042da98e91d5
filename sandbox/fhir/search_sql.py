"""Turn a SearchPlan into SQL over the index tables.

Each clause becomes ``(layer_id, id) IN (SELECT layer_id, resource_id FROM
sp_<type> WHERE ...)`` against the visible resources of the sandbox: the
subquery form beat joins 7 to 24 times on SQLite (DESIGN.md), and matching the
layer as well as the id means a baseline's index rows never match a resource
the sandbox has changed.  Every hop to another resource (chains, ``_has``)
matches layer and id the same way, so a shadowed baseline row never leaks in.

No value is written into the SQL: each is a bind parameter named after where
it stands in the plan (``search_values``), so one statement serves every
search of the same shape and ``search`` builds each shape once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import (
    BindParameter,
    Boolean,
    ColumnElement,
    FromClause,
    Select,
    and_,
    bindparam,
    exists,
    false,
    func,
    not_,
    or_,
    select,
    true,
    tuple_,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.util import ClauseAdapter
from sqlalchemy.sql.visitors import InternalTraversal

from sandbox.fhir.outcome import FhirError
from sandbox.fhir.search_cursor import Cursor
from sandbox.fhir.search_params import SearchParam
from sandbox.fhir.search_plan import Allowed, Chain, Clause, Has, SearchPlan, SortKey
from sandbox.fhir.search_values import (
    Form,
    clause_forms,
    clause_name,
    compartment_clause,
    cursor_names,
    date_form,
    layer_name,
    plan_shape_and_values,
    restriction_types,
    view_values,
)
from sandbox.store.indexer import COMBOS
from sandbox.store.layers import View
from sandbox.store.schema import INDEX_TABLES, resources, sp_reference


class Binds:
    """One bind parameter per value name, carrying this request's value.

    The statement keeps the first request's values as defaults; later requests of
    the same shape pass their own values when they execute it.
    """

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self._made: dict[str, BindParameter[Any]] = {}

    def __call__(self, name: str) -> BindParameter[Any]:
        made = self._made.get(name)
        if made is None:
            value = self.values[name]
            made = self._made[name] = bindparam(name, value, expanding=isinstance(value, list))
        return made


Types = str | tuple[str, ...] | None  # one type, the types of a system-level search, or all


def visible(view: View, rtypes: Types, r: FromClause = resources, b: Binds | None = None) -> ColumnElement[bool]:
    """Rows of ``r`` that the sandbox sees: its own, and its baseline's that it has not shadowed."""
    b = b or Binds(view_values(view))
    conditions = [r.c.deleted == false()]
    if isinstance(rtypes, str):
        conditions.append(r.c.resource_type == rtypes)
    elif rtypes:
        conditions.append(r.c.resource_type.in_(rtypes))
    layers = _layers(view, b, rtypes)
    if len(layers) == 1:
        conditions.append(r.c.layer_id == layers[0])
        return and_(*conditions)
    overlay = layers[0]
    top = resources.alias("shadow")
    same = (top.c.layer_id == overlay, top.c.resource_type == r.c.resource_type, top.c.id == r.c.id)
    conditions.append(r.c.layer_id.in_(layers))
    conditions.append(
        _Unshadowed(
            either=or_(r.c.layer_id == overlay, not_(exists().where(*same))),
            anti=not_(exists().where(r.c.layer_id != overlay, *same)),
        )
    )
    return and_(*conditions)


class _Unshadowed(ColumnElement[bool]):
    """A baseline row is seen unless the overlay has a row of it (changed or deleted there); an overlay row is.

    Written the way each database runs best, measured on a sandbox with 500 writes of its own: PostgreSQL
    hashes the overlay's rows once for ``overlay OR NOT EXISTS`` (as ``NOT EXISTS`` alone it plans an anti-join
    from its statistics, which count a fresh sandbox's rows as none, and rescans them per match); SQLite probes
    per candidate either way, and without the OR its patient-scoped searches in a sandbox run 15% faster.
    """

    inherit_cache = True
    type = Boolean()
    _traverse_internals = [
        ("either", InternalTraversal.dp_clauseelement),
        ("anti", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, *, either: ColumnElement[bool], anti: ColumnElement[bool]) -> None:
        self.either, self.anti = either, anti


@compiles(_Unshadowed)
def _unshadowed(element: _Unshadowed, compiler: Any, **kw: Any) -> str:
    return f"({compiler.process(element.either, **kw)})"  # it stands among ANDs: the OR needs its brackets


@compiles(_Unshadowed, "sqlite")
def _unshadowed_sqlite(element: _Unshadowed, compiler: Any, **kw: Any) -> str:
    return f"({compiler.process(element.anti, **kw)})"


def _layers(view: View, b: Binds, rtypes: Types = None) -> list[BindParameter[Any]]:
    """The layers to look in for resources of ``rtypes``: the baseline alone for a type the overlay has none of."""
    if isinstance(rtypes, str) and rtypes in view.quiet:
        return [b(layer_name(1))]
    return [b(layer_name(n)) for n in range(len(view.layers))]


def quiet_probe(database: int, view: View, rtypes: Iterable[str]) -> tuple[tuple[str, ...], Any] | None:
    """Which of ``rtypes`` the sandbox's overlay holds no resource of (neither new, changed nor deleted) needs
    finding out: the types to probe and the statement (one row, a flag per type) that does, or None.

    For quiet types the sandbox sees its baseline as it is, so a search needs no check per candidate for a
    shadowing row: a fresh trainee sandbox then searches as fast as a store without sandboxes.
    One probe (an index seek per type) per search; read in the search's own unit of work.
    ``database`` tells the databases a process uses apart (``quiet_types``).
    """
    # A type once seen in an overlay stays there until a reset, and searching a type as not quiet is always
    # right (only slower), so types known to be present skip the probe: a sandbox's busy types cost no round trip.
    types = tuple(sorted({t for t in rtypes if (database, view.overlay, t) not in _PRESENT}))
    if not view.layered or not types:
        return None
    statement = _QUIET_PROBES.get(types)
    if statement is None:
        r = resources
        overlay = bindparam("overlay")
        probes = [exists().where(r.c.layer_id == overlay, r.c.resource_type == t) for t in types]
        statement = select(*[probe.label(f"t{n}") for n, probe in enumerate(probes)])
        _QUIET_PROBES[types] = statement
    return types, statement


def quiet_types(database: int, view: View, types: tuple[str, ...], found: Sequence[Any]) -> frozenset[str]:
    """The quiet ones of the ``types`` a ``quiet_probe`` statement probed, given its row ``found``."""
    if len(_PRESENT) >= _MAX_PRESENT:
        _PRESENT.clear()
    _PRESENT.update((database, view.overlay, t) for t, present in zip(types, found, strict=True) if present)
    return frozenset(t for t, present in zip(types, found, strict=True) if not present)


_QUIET_PROBES: dict[tuple[str, ...], Any] = {}
# (database, overlay, resource type) found there, per process and bounded.  A stale entry (a database gone, its
# engine's id reused) only costs a quiet type its fast path.
_PRESENT: set[tuple[int, str, str]] = set()
_MAX_PRESENT = 100_000


# Conditions checked on each row of the index table that drives a search (given an alias of that table).
RowChecks = Callable[[FromClause], list[ColumnElement[bool]]]


def _member_of(
    view: View,
    b: Binds,
    rtype: str | None,
    r: FromClause,
    table: Any,
    where: list[Any],
    *,
    probe: bool = False,
    row_checks: RowChecks | None = None,
) -> ColumnElement[bool]:
    """``r`` is among the resources a subquery over an index table selects (same layer, same id).

    ``rtype`` None (a search across types) matches the type too, since ids are only unique per type.
    ``probe`` ties the subquery to the outer row, so the database checks each candidate with one
    seek on the value-first index instead of first listing every resource with the value: right
    for every clause but the one that drives the search (a common code can have 20,000 rows).
    ``r`` is then a resource, or the row of the driving index table that names one (``row_checks``).

    ``row_checks`` (for the driving clause of a typed search) puts the other clauses' probes inside
    this subquery, on each of its rows, rather than on each resource it selects: PostgreSQL otherwise
    fetched every candidate's resource row before probing (a patient's 80 Observations for the 12
    with the code asked for), a third of the search's time.
    """
    layers = _layers(view, b, rtype)
    if probe:
        where = [*where, table.c.resource_id == _resource_id(r)]
    if rtype is not None:
        where = [table.c.resource_type == rtype, *where]
        if row_checks is not None:
            rows = table.alias()  # the probes may read the same table: theirs must not be taken for this one
            adapt = ClauseAdapter(rows).traverse
            where = [adapt(condition) for condition in where] + row_checks(rows)
            table = rows
        if probe and len(layers) > 1:
            # The candidate's own layer, which is one of the view's already: with the list of layers as well,
            # PostgreSQL descends the index once per layer for every candidate.
            return _resource_id(r).in_(select(table.c.resource_id).where(table.c.layer_id == r.c.layer_id, *where))
        if len(layers) == 1:
            return _resource_id(r).in_(select(table.c.resource_id).where(table.c.layer_id == layers[0], *where))
        return tuple_(r.c.layer_id, _resource_id(r)).in_(
            select(table.c.layer_id, table.c.resource_id).where(table.c.layer_id.in_(layers), *where)
        )
    return tuple_(r.c.layer_id, r.c.resource_type, r.c.id).in_(
        select(table.c.layer_id, table.c.resource_type, table.c.resource_id).where(table.c.layer_id.in_(layers), *where)
    )


def _resource_id(r: FromClause) -> Any:
    """The id column of a resource, or of the resource an index row belongs to."""
    return r.c.id if "id" in r.c else r.c.resource_id


def plan_conditions(
    view: View, plan: SearchPlan, b: Binds | None = None, r: FromClause = resources
) -> list[ColumnElement[bool]]:
    """The plan's conditions on ``r``; without ``b``, for a statement of its own that carries its values."""
    b = b or Binds(plan_shape_and_values(view, plan)[1])
    conditions: list[ColumnElement[bool]] = [visible(view, plan.resource_type or plan.types, r, b)]
    if plan.ids is not None:
        conditions.append(r.c.id.in_(b("ids")))
    for n, occurrence in enumerate(plan.last_updated):
        conditions.append(
            or_(
                *[
                    _date_condition(r.c.last_updated, r.c.last_updated, form, _slots(b, f"lu{n}_{vi}_"))
                    for vi, form in enumerate(_date_forms(occurrence))
                ]
            )
        )
    # A pair of clauses matched together on their combined index rows drives, or else one clause does.
    combo = None if plan.ids is not None else _combo(plan)
    driver = None if plan.ids is not None or combo is not None else _driver(plan.clauses)
    # Probes checked on the driving rows (see _member_of), where the clauses allow it.
    per_row: list[int] = []
    if combo is not None or (driver is not None and plan.resource_type is not None and _probe_alone(driver)):
        per_row = [
            n
            for n, clause in enumerate(plan.clauses)
            if clause is not driver and n not in (combo or ()) and _probe_alone(clause)
        ]

    def row_checks(rows: FromClause) -> list[ColumnElement[bool]]:
        return [
            clause_condition(view, b, f"c{n}", plan.resource_type, plan.clauses[n], rows, probe=True) for n in per_row
        ]

    if combo is not None:
        assert plan.resource_type is not None
        conditions.append(
            _combo_condition(view, b, plan.resource_type, plan.clauses, combo, r, row_checks if per_row else None)
        )
    for n, clause in enumerate(plan.clauses):
        if n in per_row or n in (combo or ()):
            continue
        conditions.append(
            clause_condition(
                view,
                b,
                f"c{n}",
                plan.resource_type,
                clause,
                r,
                probe=clause is not driver,
                row_checks=row_checks if clause is driver and per_row else None,
            )
        )
    if plan.restriction is not None:
        conditions.append(restriction_condition(view, plan, b, r))
    return conditions


def restriction_condition(view: View, plan: SearchPlan, b: Binds, r: FromClause = resources) -> ColumnElement[bool]:
    """What a restricted caller may see of the plan's type(s): any of the allowed ways of each type.

    Way ``wi`` of type ``ti`` binds its values under ``x{ti}_{wi}`` (``search_values.restriction_shape``).
    """
    restriction = plan.restriction or {}
    per_type = []
    for ti, rtype in enumerate(restriction_types(plan)):
        ways = restriction.get(rtype)
        if not ways:
            continue
        either = or_(*[_allowed_condition(view, b, f"x{ti}_{wi}", rtype, way, r) for wi, way in enumerate(ways)])
        per_type.append(either if plan.resource_type else and_(r.c.resource_type == rtype, either))
    return or_(*per_type) if per_type else false()


def _allowed_condition(view: View, b: Binds, at: str, rtype: str, way: Allowed, r: FromClause) -> ColumnElement[bool]:
    parts: list[ColumnElement[bool]] = []
    if way.patient is not None:
        # The compartment, through the same index rows as any reference search (patient=Patient/x).
        members = [
            clause_condition(view, b, f"{at}_p{pi}", rtype, compartment_clause(p, way.patient), r, probe=True)
            for pi, p in enumerate(way.compartment)
        ]
        if rtype == "Patient":
            members.append(r.c.id == b(f"{at}_pid"))
        parts.append(or_(*members) if members else false())
    parts.extend(
        clause_condition(view, b, f"{at}_c{ci}", rtype, clause, r, probe=True) for ci, clause in enumerate(way.clauses)
    )
    return and_(*parts) if parts else true()


def _date_forms(values: tuple[str, ...]) -> list[Form]:
    return [date_form(v)[0] for v in values]


def _slots(b: Binds, prefix: str) -> Any:
    """The bind parameter of one piece of one value: ``slot("lo")`` is ``{prefix}lo``."""
    return lambda slot: b(prefix + slot)


def _driver(clauses: list[Clause]) -> Clause | None:
    """The clause whose matches the search starts from; the others are checked per candidate.

    A plain reference (``patient=X``, ``subject=Patient/X``) is nearly always the most selective,
    so it drives when there is one; otherwise the first clause does, as written.
    """
    for clause in clauses:
        if clause.param.type == "reference" and not clause.chain and not clause.has and clause.modifier is None:
            return clause
    return clauses[0] if clauses else None


def _combo(plan: SearchPlan) -> tuple[int, int] | None:
    """The clauses (reference, token) that one ``sp_combo`` seek can match together (``indexer.COMBOS``), by
    their place in the plan: each with one value, the reference to a resource by id and the token a code, no
    modifier but a reference's type.  What the two match together is exactly what their rows do one by one: a
    resource's combined rows are every pair of its rows of the two parameters."""
    if plan.resource_type is None:
        return None
    for ref_param, token_param in COMBOS:
        ref = _plain_clause(plan.clauses, ref_param, "reference", _COMBO_REFERENCE_FORMS)
        token = _plain_clause(plan.clauses, token_param, "token", _COMBO_TOKEN_FORMS)
        if ref is not None and token is not None:
            return ref, token
    return None


# What a combined row can answer: a target by type and id or id alone; a code with a system, with none, or in any.
_COMBO_REFERENCE_FORMS = frozenset({"typeid", "id"})
_COMBO_TOKEN_FORMS = frozenset({"syscode", "nosys", "code"})


def _plain_clause(clauses: list[Clause], code: str, kind: str, forms: frozenset[str]) -> int | None:
    """The first clause on parameter ``code`` of type ``kind`` with one value of one of ``forms``, if any."""
    for n, clause in enumerate(clauses):
        param = clause.param
        if param.code != code or param.type != kind or clause.chain or clause.has or len(clause.values) != 1:
            continue
        if clause.modifier is not None and not (kind == "reference" and clause.modifier in param.targets):
            continue
        if clause_forms(clause)[0][0] in forms:
            return n
    return None


def _combo_condition(
    view: View,
    b: Binds,
    rtype: str,
    clauses: list[Clause],
    combo: tuple[int, int],
    r: FromClause,
    row_checks: RowChecks | None,
) -> ColumnElement[bool]:
    """Clauses ``combo`` (reference, token) matched on one row of ``sp_combo``, under their own values' names."""
    ref, token = combo
    table = INDEX_TABLES["combo"]
    name = COMBOS[(clauses[ref].param.code, clauses[token].param.code)]
    where = [
        table.c.param == name,
        _reference_condition(clause_forms(clauses[ref])[0][0], _slots(b, clause_name(f"c{ref}", 0, "")), table),
        _token_condition(clause_forms(clauses[token])[0][0], _slots(b, clause_name(f"c{token}", 0, "")), table),
    ]
    return _member_of(view, b, rtype, r, table, where, row_checks=row_checks)


def _probe_alone(clause: Clause) -> bool:
    """Whether the clause is matched on one index table's rows and nothing else (no hop, no absence, no
    composite): then it can drive a search with the others' probes on its rows, or be probed on the driver's."""
    return (
        not clause.has
        and not clause.chain
        and clause.param.code != "_id"
        and clause.modifier not in ("missing", "not")
        and clause.param.type != "composite"
    )


def clause_condition(
    view: View,
    b: Binds,
    at: str,
    rtype: str | None,
    clause: Clause,
    r: FromClause,
    *,
    probe: bool = False,
    row_checks: RowChecks | None = None,
) -> ColumnElement[bool]:
    """A clause as a condition on ``r``; its values are bound under ``at`` (``c3`` for the plan's clause 3).
    ``row_checks`` only for a clause that ``_probe_alone`` accepts (see ``_member_of``)."""
    if clause.has:
        assert rtype is not None
        return _has_condition(view, b, at, rtype, clause, r)
    if clause.chain:
        assert rtype is not None
        last = Clause(clause.param, clause.values, clause.modifier)
        return _chain_condition(view, b, at, rtype, clause.chain, last, r)
    param = clause.param
    if param.code == "_id":
        return r.c.id.in_(b(clause_name(at, 0, "ids")))
    if clause.modifier == "missing":
        present = _param_rows(view, b, rtype, param, r, [])
        return not_(present) if clause.values[0] == "true" else present
    # Each value's form, and where its pieces are bound: value vi under "{at}_{vi}_".
    values = [(form, clause_name(at, vi, "")) for vi, (form, _) in enumerate(clause_forms(clause))]
    if clause.modifier == "not":
        # Resources with no value matching any of the given ones (including those with no value).
        token = INDEX_TABLES["token"]
        matching = or_(*[_token_condition(form, _slots(b, at), token) for form, at in values])
        return not_(_param_rows(view, b, rtype, param, r, [matching]))
    if param.type == "composite":
        return or_(*[_composite_condition(view, b, rtype, param, form, at, r) for form, at in values])
    table = INDEX_TABLES[param.type]
    matches = [_value_condition(param, form, _slots(b, at), table) for form, at in values]
    if probe and len(matches) > 1:
        # One probe a value: with the values OR'd in one subquery SQLite seeks on the parameter alone and
        # reads every value of it for each candidate (40x slower for `code=a,b` on a long chart).
        return or_(*[_param_rows(view, b, rtype, param, r, [match], probe=True) for match in matches])
    return _param_rows(view, b, rtype, param, r, [or_(*matches)], probe=probe, row_checks=row_checks)


def _param_rows(
    view: View,
    b: Binds,
    rtype: str | None,
    param: SearchParam,
    r: FromClause,
    where: list[Any],
    *,
    probe: bool = False,
    row_checks: RowChecks | None = None,
) -> ColumnElement[bool]:
    if param.type == "composite":
        # A composite value is indexed as its components' rows; the first component stands for it.
        table = INDEX_TABLES[param.components[0].type]
        return _member_of(view, b, rtype, r, table, [table.c.param == f"{param.code}$0", *where], probe=probe)
    table = INDEX_TABLES[param.type]
    return _member_of(
        view, b, rtype, r, table, [table.c.param == param.code, *where], probe=probe, row_checks=row_checks
    )


def _chain_condition(
    view: View, b: Binds, at: str, rtype: str, chain: tuple[Chain, ...], last: Clause, r: FromClause
) -> ColumnElement[bool]:
    link, rest = chain[0], chain[1:]
    ref = sp_reference
    per_type: list[ColumnElement[bool]] = []
    for target_type in link.target_types:
        target = resources.alias()
        if rest:
            inner = _chain_condition(view, b, at, target_type, rest, last, target)
        else:
            inner = clause_condition(view, b, at, target_type, last, target)
        # Targets are matched by id among the visible resources, so a reference into the baseline
        # follows whichever layer's version of the target the sandbox sees.
        targets = select(target.c.id).where(visible(view, target_type, target, b), inner)
        per_type.append(and_(ref.c.target_type == target_type, ref.c.target_id.in_(targets)))
    return _member_of(view, b, rtype, r, ref, [ref.c.param == link.param.code, or_(*per_type)])


def _has_condition(view: View, b: Binds, at: str, rtype: str, clause: Clause, r: FromClause) -> ColumnElement[bool]:
    first, rest = clause.has[0], clause.has[1:]
    source = resources.alias()
    inner_clause = Clause(clause.param, clause.values, clause.modifier, clause.chain, rest)
    matching = clause_condition(view, b, at, first.source_type, inner_clause, source)
    sources = select(source.c.layer_id, source.c.id).where(visible(view, first.source_type, source, b), matching)
    return r.c.id.in_(_referenced_ids(view, b, first, rtype, sources))


def _referenced_ids(view: View, b: Binds, has: Has, target_type: str, sources: Select) -> Select:
    """Ids the matching sources refer to, through the index rows of the sources' visible versions only."""
    ref = sp_reference
    return select(ref.c.target_id).where(
        ref.c.layer_id.in_(_layers(view, b)),
        ref.c.resource_type == has.source_type,
        ref.c.param == has.reference_param.code,
        ref.c.target_type == target_type,
        tuple_(ref.c.layer_id, ref.c.resource_id).in_(sources),
    )


def _composite_condition(
    view: View, b: Binds, rtype: str | None, param: SearchParam, form: Any, prefix: str, r: FromClause
) -> ColumnElement[bool]:
    tables = [INDEX_TABLES[c.type].alias() for c in param.components]
    first = tables[0]
    where: list[Any] = []
    for n, (component, table, part_form) in enumerate(zip(param.components, tables, form, strict=True)):
        part = SearchParam(param.resource_type, f"{param.code}${n}", component.type, "")
        where.append(table.c.param == part.code)
        where.append(_value_condition(part, part_form, _slots(b, f"{prefix}{n}"), table))
        if n:
            where.extend(
                [
                    table.c.layer_id == first.c.layer_id,
                    table.c.resource_type == first.c.resource_type,
                    table.c.resource_id == first.c.resource_id,
                    table.c.grp == first.c.grp,
                ]
            )
    return _member_of(view, b, rtype, r, first, where)


# ---- value conditions per parameter type ------------------------------------------------------
#
# Each takes the value's form (``search_values.value_form``) and ``slot``, which gives the bind
# parameter of one of the value's pieces by its name.


def _value_condition(param: SearchParam, form: Any, slot: Any, table: Any) -> ColumnElement[bool]:
    kind = param.type
    if kind == "string":
        return table.c.exact == slot("v") if form == "exact" else table.c.value.like(slot("v"), escape="\\")
    if kind == "token":
        return _token_condition(form, slot, table)
    if kind == "reference":
        return _reference_condition(form, slot, table)
    if kind == "date":
        return _date_condition(table.c.low, table.c.high, form, slot)
    if kind == "number":
        return _number_condition(table.c.low, table.c.high, form, slot)
    if kind == "quantity":
        number, has_code, has_system = form
        condition = _number_condition(table.c.low, table.c.high, number, slot)
        if has_code:
            condition = and_(condition, table.c.code == slot("code"))
        if has_system:
            condition = and_(condition, table.c.system == slot("system"))
        return condition
    if kind == "uri":
        if form == "below":
            return table.c.value.like(slot("v"), escape="\\")
        if form == "above":
            return slot("v").like(table.c.value + "%")
        return table.c.value == slot("v")
    raise FhirError.of(400, "not-supported", f"Searching on {kind} parameters is not supported")


def _token_condition(form: Any, slot: Any, table: Any) -> ColumnElement[bool]:
    if form == "text":
        return table.c.text.like(slot("v"), escape="\\")
    if form == "code":
        return table.c.code == slot("c")
    if form == "nosys":
        return and_(table.c.system.is_(None), table.c.code == slot("c"))
    if form == "sys":
        return table.c.system == slot("s")
    return and_(table.c.system == slot("s"), table.c.code == slot("c"))


def _reference_condition(form: Any, slot: Any, table: Any) -> ColumnElement[bool]:
    if form == "ident":
        return table.c.ident_value == slot("v")
    if form == "ident-nosys":
        return and_(table.c.ident_system.is_(None), table.c.ident_value == slot("v"))
    if form == "ident-sys-v":
        return and_(table.c.ident_system == slot("s"), table.c.ident_value == slot("v"))
    if form == "ident-sys":
        return table.c.ident_system == slot("s")
    if form == "typeid":
        return and_(table.c.target_type == slot("t"), table.c.target_id == slot("i"))
    if form == "url-local":
        local = and_(table.c.target_type == slot("t"), table.c.target_id == slot("i"))
        return or_(table.c.url == slot("u"), local)
    if form == "url":
        return table.c.url == slot("u")
    return table.c.target_id == slot("i")


def _date_condition(low: Any, high: Any, prefix: Any, slot: Any) -> ColumnElement[bool]:
    """FHIR R4 date prefixes over ranges: both the value searched for and the stored value are ranges.

    ``eq``: the search range contains the target; ``gt``: the part above the search range
    overlaps the target; ``ge``: ``gt`` or ``eq``; ``sa``: the target starts after the search range;
    ``ap``: the target overlaps the widened range ``search_values.date_form`` made.
    """
    qlow, qhigh = slot("lo"), slot("hi")
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
    return and_(high >= qlow, low <= qhigh)  # ap


def _number_condition(low: Any, high: Any, prefix: Any, slot: Any) -> ColumnElement[bool]:
    """Numbers: ``eq`` uses the implicit precision of the value (``100`` is [99.5, 100.5));
    ``gt``/``lt``/``ge``/``le`` compare with the value itself; ``sa``/``eb`` lie beyond its range;
    ``ap`` overlaps the value give or take 10%."""
    if prefix == "eq":
        return and_(low >= slot("lo"), high < slot("hi"))
    if prefix == "ne":
        return or_(low < slot("lo"), high >= slot("hi"))
    if prefix == "gt":
        return high > slot("v")
    if prefix == "lt":
        return low < slot("v")
    if prefix == "ge":
        return high >= slot("v")
    if prefix == "le":
        return low <= slot("v")
    if prefix == "sa":
        return low >= slot("hi")
    if prefix == "eb":
        return high < slot("lo")
    return and_(high >= slot("lo"), low <= slot("hi"))  # ap


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


def keyset_condition(
    plan: SearchPlan, page: FromClause, cursor: Cursor, b: Binds, prefix: str = "k"
) -> ColumnElement[bool]:
    """Rows strictly after (or before) the cursor's position in the sort order, or at it when inclusive.

    Built as ``k1 beyond v1 OR (k1 = v1 AND (k2 beyond v2 OR (...)))``, with NULLs last
    in the forward order, so it works for any mix of ascending and descending keys.  The
    position's values are bound under ``prefix`` (``search_values.cursor_values``).
    """
    type_name, id_name, value_names = cursor_names(prefix, len(plan.sort))
    rtype, rid = b(type_name), b(id_name)
    tail: ColumnElement[bool] = or_(
        _beyond(page.c.resource_type, rtype, cursor.forward),
        and_(
            page.c.resource_type == rtype,
            or_(_beyond(page.c.id, rid, cursor.forward), page.c.id == rid)
            if cursor.inclusive
            else _beyond(page.c.id, rid, cursor.forward),
        ),
    )
    for n in reversed(range(len(plan.sort))):
        key = plan.sort[n]
        value = None if cursor.values[n] is None else b(value_names[n])
        column = page.c[sort_label(n)]
        after = cursor.forward != key.descending  # "beyond" means greater for this key
        tail = or_(_key_beyond(column, value, after, cursor.forward), and_(_key_equal(column, value), tail))
    return tail


def _beyond(column: Any, value: Any, greater: bool) -> ColumnElement[bool]:
    return column > value if greater else column < value


def _key_beyond(column: Any, value: Any, greater: bool, forward: bool) -> ColumnElement[bool]:
    # NULLs sit at the end of the forward order: beyond every value going forward, before none going back.
    if value is None:
        return false() if forward else column.is_not(None)
    compared = _beyond(column, value, greater)
    return or_(column.is_(None), compared) if forward else and_(column.is_not(None), compared)


def _key_equal(column: Any, value: Any) -> ColumnElement[bool]:
    return column.is_(None) if value is None else column == value
