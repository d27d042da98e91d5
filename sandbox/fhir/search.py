"""Run a search: plan -> SQL -> a page of stored resources (+ includes) -> the pieces of a searchset Bundle.

Pages are read by keyset: the matches are ordered by the sort keys and then
``(resource_type, id)``, and a page is "the next N rows after this position"
(``search_cursor.Cursor``), never "skip M rows".  A client paging while
others write therefore sees every resource that matched throughout exactly
once: creations and deletions elsewhere in the order do not shift the pages.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Connection, Dialect, and_, func, select

from sandbox.concurrency import run_in_threadpool
from sandbox.fhir.outcome import Issue
from sandbox.fhir.search_cursor import Cursor
from sandbox.fhir.search_plan import Include, SearchPlan
from sandbox.fhir.search_sql import (
    Binds,
    keyset_condition,
    order_by,
    plan_conditions,
    quiet_probe,
    quiet_types,
    sort_expression,
    sort_label,
    visible,
)
from sandbox.fhir.search_values import cursor_shape, cursor_values, plan_shape_and_values
from sandbox.store.database import Database, DriverStatement, driver_rows, driver_statement
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
    """Run a search in ``conn``'s unit of work (the thread pool's)."""
    check_index_rows(conn)
    steps = search_steps(view, plan, id(conn.engine.pool))
    try:
        query = next(steps)
        while True:
            query = steps.send(query.rows(conn))
    except StopIteration as done:
        result: SearchResult = done.value
    result.included = resolve_includes(conn, repo, view, result.matches, plan.includes)
    return result


async def run_search_on_loop(db: Database, view: View, plan: SearchPlan) -> SearchResult:
    """``run_search`` awaited on the event loop, each statement a unit of work of its own (``Database.loop_rows``).

    Without ``_include``s, which the caller leaves to the pool.  A statement of a shape not yet built and compiled
    goes to the pool too, which does that there (milliseconds of Python, that would hold up every request on the
    loop) and keeps it for the next search of its shape, as does one with a list of values, which SQLAlchemy
    expands per call.  For PostgreSQL, where the statements are awaited; on SQLite they would run inline.
    """
    assert not plan.includes
    steps = search_steps(view, plan, id(db.engine.pool))
    dialect = db.engine.dialect
    try:
        query = next(steps)
        while True:
            driver = query.ready(dialect)
            if driver is None:
                rows = await run_in_threadpool(_pool_rows, db, query)
            else:
                rows = await db.loop_rows(driver.sql, driver.args(query.values), search=True)
            query = steps.send(rows)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def _pool_rows(db: Database, query: Query) -> list[tuple[Any, ...]]:
    with db.read(snapshot=False) as conn:
        return query.rows(conn)


# A row of a page, as _Statements.page selects it: then the sort values, then the total when windowed.
_LAYER, _TYPE, _ID, _VERSION, _UPDATED, _CONTENT, _SORTS = range(7)


def search_steps(view: View, plan: SearchPlan, database: int) -> Generator[Query, list[tuple[Any, ...]], SearchResult]:
    """The search, as the statements it needs run one after another: each ``Query`` yielded is sent back its rows
    (as tuples).  The runner decides where they run, so the thread pool (``run_search``) and the event loop
    (``run_search_on_loop``) share this one engine.  Includes are the runner's.  ``database`` tells apart the
    databases a process uses (``search_sql.quiet_probe``)."""
    if view.layered and plan.resource_type is not None:
        probe = quiet_probe(database, view, _types_searched(plan))
        quiet: frozenset[str] = frozenset()
        if probe is not None:
            types, statement = probe
            found = yield Query(("quiet", types), lambda: statement, {"overlay": view.overlay})
            quiet = quiet_types(database, view, types, found[0])
        view = replace(view, quiet=quiet)
    shape, values = plan_shape_and_values(view, plan)
    statements = _Statements(view, plan, shape, values)
    if plan.summary == "count" or plan.count == 0:
        # _summary=count asks for nothing but the count, so it counts whatever _total says.
        total = None
        if plan.total != "none" or plan.summary == "count":
            total = (yield statements.count())[0][0]
        return SearchResult([], total=total, issues=plan.ignored)
    cursor = plan.cursor
    forward = cursor is None or cursor.forward
    # With a _sort, the page query has to see every match anyway, so the total rides along as a
    # window count over all matches (before the cursor narrows them).  Without one, the page can be
    # read straight off the primary key, and a separate count is far cheaper than a window over all.
    windowed = bool(plan.sort) and plan.total != "none"
    rows = yield statements.page(windowed)
    more = len(rows) > plan.count
    total = None
    if windowed and rows:
        total = rows[0][_SORTS + len(plan.sort)]
    elif plan.total != "none":
        # The first page holding every match needs no counting.
        total = len(rows) if cursor is None and not more else (yield statements.count())[0][0]
    rows = rows[: plan.count]
    if not forward:
        rows.reverse()
    matches = [
        Stored(row[_TYPE], row[_ID], row[_VERSION], row[_UPDATED], False, row[_CONTENT], row[_LAYER]) for row in rows
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
            previous_cursor = before if (yield statements.any_beyond(before)) else None
        else:
            previous_cursor = before if more else None
            next_cursor = after if (yield statements.any_beyond(after)) else None
    else:
        # An empty page (everything past the position went away): offer the way back, including
        # the position itself when this page excluded it.
        back = Cursor(
            not cursor.forward, not cursor.inclusive, cursor.sort, cursor.values, cursor.resource_type, cursor.id
        )
        if (yield statements.any_beyond(back)):
            if back.forward:
                next_cursor = back
            else:
                previous_cursor = back
    return SearchResult(matches, [], total, next_cursor, previous_cursor, plan.ignored)


# Built statements by role and shape.  Building one costs a few milliseconds of Python, several times what
# running it costs; a server sees few shapes (its clients' searches differ in values).  Each is compiled
# once per dialect too, into the driver's SQL: executing the statement through SQLAlchemy cost a search
# more Python than everything else it did.  Bounded: a client inventing shapes empties them now and then.
_BUILT: dict[tuple[Any, ...], Any] = {}
_DRIVER: dict[tuple[Any, ...], DriverStatement | None] = {}
_MAX_BUILT = 2000
_UNCOMPILED: Any = object()


@dataclass
class Query:
    """One statement a search needs run: ``key`` (its role and the search's shape) names it in the caches,
    ``build`` makes it the first time, ``values`` are this search's bind values."""

    key: tuple[Any, ...]
    build: Callable[[], Any]
    values: dict[str, Any]

    def statement(self) -> Any:
        statement = _BUILT.get(self.key)
        if statement is None:
            if len(_BUILT) >= _MAX_BUILT:
                _BUILT.clear()
                _DRIVER.clear()
            statement = _BUILT[self.key] = self.build()
        return statement

    def rows(self, conn: Connection) -> list[tuple[Any, ...]]:
        """Run it in ``conn``'s unit of work, compiling it first if this is the first of its shape."""
        key = (self.key, conn.dialect.name, tuple(self.values))
        driver = _DRIVER.get(key, _UNCOMPILED)
        if driver is _UNCOMPILED:
            driver = driver_statement(conn.dialect, self.statement(), key[2])
            if len(_DRIVER) >= _MAX_BUILT:
                _DRIVER.clear()
            _DRIVER[key] = driver
        if driver is None:  # a list of values (_id=a,b; _type): SQLAlchemy writes its SQL out each time
            return [tuple(row) for row in conn.execute(self.statement(), self.values)]
        return driver_rows(conn, driver.sql, driver.args(self.values))

    def ready(self, dialect: Dialect) -> DriverStatement | None:
        """Its driver SQL if compiled already (by ``rows``), and if it compiles to that at all."""
        return _DRIVER.get((self.key, dialect.name, tuple(self.values)))


class _Statements:
    """The statements of one search, each a ``Query``: from the cache by shape, or built on the first of it."""

    def __init__(self, view: View, plan: SearchPlan, shape: tuple[Any, ...], values: dict[str, Any]) -> None:
        self.view, self.plan, self.shape, self.values = view, plan, shape, values
        self.binds = Binds(values)
        self._where: list[Any] | None = None

    def count(self) -> Query:
        return Query(
            ("count", self.shape), lambda: select(func.count()).select_from(resources).where(*self.where), self.values
        )

    def page(self, windowed: bool) -> Query:
        return Query(("page", windowed, self.shape), lambda: self._page(windowed), self.values)

    def any_beyond(self, cursor: Cursor) -> Query:
        """Whether any match lies beyond ``cursor`` (for deciding on a next or previous link): a row if so."""
        values = {**self.values, **cursor_values("a", cursor)}

        def build() -> Any:
            page = self._matching().subquery("page")
            beyond = keyset_condition(self.plan, page, cursor, Binds(values), "a")
            return select(page.c.id).where(beyond).limit(1)

        return Query(("any", cursor_shape(cursor), self.shape), build, values)

    @property
    def where(self) -> list[Any]:
        if self._where is None:
            self._where = plan_conditions(self.view, self.plan, self.binds)
        return self._where

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


def _position(plan: SearchPlan, row: tuple[Any, ...]) -> tuple[tuple[Any, ...], str, str]:
    return row[_SORTS : _SORTS + len(plan.sort)], row[_TYPE], row[_ID]


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
