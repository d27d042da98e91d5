"""Run a search: plan -> SQL -> a page of stored resources (+ includes) -> the pieces of a searchset Bundle.

Pages are read by keyset: the matches are ordered by the sort keys and then
``(resource_type, id)``, and a page is "the next N rows after this position"
(``search_cursor.Cursor``), never "skip M rows".  A client paging while
others write therefore sees every resource that matched throughout exactly
once: creations and deletions elsewhere in the order do not shift the pages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from sqlalchemy import Connection, and_, func, select

from sandbox.fhir.outcome import Issue
from sandbox.fhir.search_cursor import Cursor
from sandbox.fhir.search_plan import Include, SearchPlan
from sandbox.fhir.search_sql import (
    Binds,
    keyset_condition,
    order_by,
    plan_conditions,
    quiet_types,
    sort_expression,
    sort_label,
    visible,
)
from sandbox.fhir.search_values import cursor_shape, cursor_values, plan_shape_and_values
from sandbox.store.database import driver_rows
from sandbox.store.layers import View
from sandbox.store.repository import Repository, Stored, check_index_rows
from sandbox.store.schema import resources, sp_reference


@dataclass
class SearchResult:
    matches: list[Stored]
    included: list[Stored] = field(default_factory=list)
    total: int | None = None
    next_cursor: Cursor | None = None
    previous_cursor: Cursor | None = None
    issues: list[Issue] = field(default_factory=list)

    @property
    def has_next(self) -> bool:
        return self.next_cursor is not None


def run_search(conn: Connection, repo: Repository, view: View, plan: SearchPlan) -> SearchResult:
    check_index_rows(conn)
    if view.layered and plan.resource_type is not None:
        view = replace(view, quiet=quiet_types(conn, view, _types_searched(plan)))
    shape, values = plan_shape_and_values(view, plan)
    statements = _Statements(view, plan, shape, values)
    if plan.summary == "count" or plan.count == 0:
        # _summary=count asks for nothing but the count, so it counts whatever _total says.
        total = None if plan.total == "none" and plan.summary != "count" else statements.count(conn)
        return SearchResult([], total=total, issues=plan.ignored)
    cursor = plan.cursor
    forward = cursor is None or cursor.forward
    # With a _sort, the page query has to see every match anyway, so the total rides along as a
    # window count over all matches (before the cursor narrows them).  Without one, the page can be
    # read straight off the primary key, and a separate count is far cheaper than a window over all.
    windowed = bool(plan.sort) and plan.total != "none"
    rows = statements.page(conn, windowed)
    more = len(rows) > plan.count
    total = None
    if windowed and rows:
        total = rows[0].total
    elif plan.total != "none":
        # The first page holding every match needs no counting.
        total = len(rows) if cursor is None and not more else statements.count(conn)
    rows = rows[: plan.count]
    if not forward:
        rows.reverse()
    matches = [
        Stored(row.resource_type, row.id, row.version_id, row.last_updated, False, row.content, row.layer_id)
        for row in rows
    ]
    first, last = (_position(plan, rows[0]), _position(plan, rows[-1])) if rows else (None, None)
    next_cursor = previous_cursor = None
    if cursor is None:
        if more:
            next_cursor = _cursor(plan, last, forward=True, inclusive=False)
    elif rows:
        before = _cursor(plan, first, forward=False, inclusive=False)
        after = _cursor(plan, last, forward=True, inclusive=False)
        if forward:
            next_cursor = after if more else None
            previous_cursor = before if statements.any_beyond(conn, before) else None
        else:
            previous_cursor = before if more else None
            next_cursor = after if statements.any_beyond(conn, after) else None
    else:
        # An empty page (everything past the position went away): offer the way back, including
        # the position itself when this page excluded it.
        back = Cursor(
            not cursor.forward, not cursor.inclusive, cursor.sort, cursor.values, cursor.resource_type, cursor.id
        )
        if statements.any_beyond(conn, back):
            if back.forward:
                next_cursor = back
            else:
                previous_cursor = back
    included = resolve_includes(conn, repo, view, matches, plan.includes)
    return SearchResult(matches, included, total, next_cursor, previous_cursor, plan.ignored)


# Built statements by shape.  Building one costs a few milliseconds of Python, several times what
# running it costs; a server sees few shapes (its clients' searches differ in values), and SQLAlchemy
# keeps each statement's compiled SQL too.  Bounded: a client inventing shapes empties it now and then.
_BUILT: dict[tuple[Any, ...], Any] = {}
_MAX_BUILT = 2000
# The unsorted page statement's SQL in each driver's dialect by shape (``_Statements._driver_sql``).
_DRIVER_SQL: dict[tuple[Any, ...], tuple[str, tuple[str, ...] | None, dict[str, Any]] | None] = {}
_PLAIN = (str, int, bool)  # values the drivers bind as SQLAlchemy would


class _PageRow(NamedTuple):
    """A row of an unsorted page, read at the driver: the columns ``_Statements._page`` selects."""

    layer_id: str
    resource_type: str
    id: str
    version_id: int
    last_updated: str
    content: bytes | None


class _Statements:
    """The statements of one search, from the cache by shape or built on the first of their shape."""

    def __init__(self, view: View, plan: SearchPlan, shape: tuple[Any, ...], values: dict[str, Any]) -> None:
        self.view, self.plan, self.shape, self.values = view, plan, shape, values
        self.binds = Binds(values)
        self._where: list[Any] | None = None

    def count(self, conn: Connection) -> int:
        statement = self._built(("count",), lambda: select(func.count()).select_from(resources).where(*self.where))
        return conn.execute(statement, self.values).scalar_one()

    def page(self, conn: Connection, windowed: bool) -> list[Any]:
        statement = self._built(("page", windowed), lambda: self._page(windowed))
        plain = not windowed and not self.plan.sort and all(type(v) in _PLAIN for v in self.values.values())
        driver = self._driver_sql(conn, statement) if plain else None
        if driver is None:
            return list(conn.execute(statement, self.values).all())
        # Columns and values the driver takes and gives as SQLAlchemy would (no sort keys, no lists to expand,
        # nothing to convert): run at the driver.  Through SQLAlchemy's execution, a conditional update's
        # search by identifier (two an HL7 v2 ADT message) cost more than the query.
        sql, order, fixed = driver
        values = {**fixed, **self.values} if fixed else self.values
        params = tuple(values[name] for name in order) if order is not None else values
        return [_PageRow(*row) for row in driver_rows(conn, sql, params)]

    def _driver_sql(
        self, conn: Connection, statement: Any
    ) -> tuple[str, tuple[str, ...] | None, dict[str, Any]] | None:
        """The page statement's SQL for the driver, its parameters' order if positional, and the values the
        statement holds of its own (its literals, the same for every search of its shape); None if a literal
        is not a plain value (a list of types, expanded by SQLAlchemy as it runs the statement)."""
        key = (conn.dialect.name, self.shape)
        if key in _DRIVER_SQL:
            return _DRIVER_SQL[key]
        compiled = statement.compile(dialect=conn.dialect)
        binds = {compiled.bind_names[bind]: bind for bind in compiled.binds.values()}
        fixed = {name: bind.effective_value for name, bind in binds.items() if name not in self.values}
        order = tuple(compiled.positiontup or ()) if compiled.positional else None
        plain = all(type(v) in _PLAIN for v in fixed.values()) and "POSTCOMPILE" not in str(compiled)
        if len(_DRIVER_SQL) >= _MAX_BUILT:
            _DRIVER_SQL.clear()
        found = _DRIVER_SQL[key] = (str(compiled), order, fixed) if plain else None
        return found

    def any_beyond(self, conn: Connection, cursor: Cursor) -> bool:
        """Whether any match lies beyond ``cursor`` (for deciding on a next or previous link)."""
        self.values.update(cursor_values("a", cursor))

        def build() -> Any:
            page = self._matching().subquery("page")
            beyond = keyset_condition(self.plan, page, cursor, self.binds, "a")
            return select(page.c.id).where(beyond).limit(1)

        statement = self._built(("any", cursor_shape(cursor)), build)
        return conn.execute(statement, self.values).first() is not None

    @property
    def where(self) -> list[Any]:
        if self._where is None:
            self._where = plan_conditions(self.view, self.plan, self.binds)
        return self._where

    def _built(self, role: tuple[Any, ...], build: Callable[[], Any]) -> Any:
        key = (*role, self.shape)
        statement = _BUILT.get(key)
        if statement is None:
            if len(_BUILT) >= _MAX_BUILT:
                _BUILT.clear()
            statement = _BUILT[key] = build()
        return statement

    def _matching(self) -> Any:
        """The matches with their sort values, once each; paging and ordering work on this."""
        r = resources
        sort = [sort_expression(key, r).label(sort_label(n)) for n, key in enumerate(self.plan.sort)]
        return select(r.c.layer_id, r.c.resource_type, r.c.id, *sort).where(*self.where)

    def _page(self, windowed: bool) -> Any:
        plan, cursor = self.plan, self.plan.cursor
        forward = cursor is None or cursor.forward
        matching = self._matching()
        if windowed:
            matching = matching.add_columns(func.count().over().label("total"))
        page = matching.subquery("page")
        keys = select(page).order_by(*order_by(plan, page, forward=forward)).limit(self.binds("limit"))
        if cursor is not None:
            keys = keys.where(keyset_condition(plan, page, cursor, self.binds))
        keyed = keys.subquery("keyed")
        r = resources
        return (
            select(
                r.c.layer_id,
                r.c.resource_type,
                r.c.id,
                r.c.version_id,
                r.c.last_updated,
                r.c.content,
                *[keyed.c[sort_label(n)] for n in range(len(plan.sort))],
                *([keyed.c.total] if windowed else []),
            )
            .join(
                keyed,
                and_(
                    r.c.layer_id == keyed.c.layer_id, r.c.resource_type == keyed.c.resource_type, r.c.id == keyed.c.id
                ),
            )
            .order_by(*order_by(plan, keyed, forward=forward))
        )


def _types_searched(plan: SearchPlan) -> set[str]:
    """The resource types whose visible rows a (type-level) search reads: its own, chained to, _has from."""
    assert plan.resource_type is not None
    types = {plan.resource_type}
    for clause in plan.clauses:
        for link in clause.chain:
            types.update(link.target_types)
        types.update(has.source_type for has in clause.has)
    return types


def _position(plan: SearchPlan, row: Any) -> tuple[tuple[Any, ...], str, str]:
    return tuple(row._mapping[sort_label(n)] for n in range(len(plan.sort))), row.resource_type, row.id


def _cursor(plan: SearchPlan, position: Any, *, forward: bool, inclusive: bool) -> Cursor:
    values, rtype, rid = position
    return Cursor(forward, inclusive, plan.sort_spec, values, rtype, rid)


def resolve_includes(
    conn: Connection, repo: Repository, view: View, matches: list[Stored], includes: list[Include]
) -> list[Stored]:
    """_include and _revinclude, with :iterate followed until nothing new turns up."""
    if not includes or not matches:
        return []
    seen = {(m.resource_type, m.id) for m in matches}
    found: list[Stored] = []
    frontier = list(matches)
    first = True
    while frontier:
        new: list[Stored] = []
        for inc in includes:
            if not first and not inc.iterate:
                continue
            keys = (
                _revinclude_keys(conn, view, inc, frontier) if inc.reverse else _include_keys(conn, view, inc, frontier)
            )
            for key, stored in repo.current_many(conn, view, [k for k in keys if k not in seen]).items():
                seen.add(key)
                new.append(stored)
        found.extend(new)
        frontier = new
        first = False
    return found


def _include_keys(conn: Connection, view: View, inc: Include, sources: list[Stored]) -> list[tuple[str, str]]:
    """Targets of the sources' references, read from the index rows of the version the sandbox sees."""
    ref = sp_reference
    ids: dict[tuple[str, str], list[str]] = {}
    for s in sources:
        if inc.source_type in ("*", s.resource_type):
            ids.setdefault((s.resource_type, s.layer_id), []).append(s.id)
    keys: list[tuple[str, str]] = []
    for (rtype, layer_id), chunk in ids.items():
        query = select(ref.c.target_type, ref.c.target_id).where(
            ref.c.layer_id == layer_id,
            ref.c.resource_type == rtype,
            ref.c.resource_id.in_(chunk),
            ref.c.target_id.is_not(None),
            ref.c.target_type.is_not(None),
        )
        if inc.param is not None:
            query = query.where(ref.c.param == inc.param.code)
        if inc.target_type:
            query = query.where(ref.c.target_type == inc.target_type)
        keys.extend((row.target_type, row.target_id) for row in conn.execute(query))
    return keys


def _revinclude_keys(conn: Connection, view: View, inc: Include, targets: list[Stored]) -> list[tuple[str, str]]:
    ref = sp_reference
    keys: list[tuple[str, str]] = []
    by_type: dict[str, list[str]] = {}
    for t in targets:
        by_type.setdefault(t.resource_type, []).append(t.id)
    for target_type, ids in by_type.items():
        if inc.target_type and inc.target_type != target_type:
            continue
        r = resources
        query = select(ref.c.resource_type, ref.c.resource_id).where(
            ref.c.layer_id.in_(view.layers),
            ref.c.target_type == target_type,
            ref.c.target_id.in_(ids),
        )
        if inc.source_type != "*":
            query = query.where(ref.c.resource_type == inc.source_type)
        if inc.param is not None:
            query = query.where(ref.c.param == inc.param.code)
        # Only references from the version of the source the sandbox sees (not a shadowed baseline row);
        # a correlated check per reference row, since listing every visible source would read them all.
        query = query.where(
            select(r.c.id)
            .where(
                visible(view, None, r),
                r.c.layer_id == ref.c.layer_id,
                r.c.resource_type == ref.c.resource_type,
                r.c.id == ref.c.resource_id,
            )
            .exists()
        )
        keys.extend((row.resource_type, row.resource_id) for row in conn.execute(query))
    return keys
