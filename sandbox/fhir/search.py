"""Run a search: plan -> SQL -> a page of stored resources (+ includes) -> the pieces of a searchset Bundle."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, func, select

from sandbox.fhir.outcome import Issue
from sandbox.fhir.search_plan import Include, SearchPlan
from sandbox.fhir.search_sql import order_by, plan_conditions, visible
from sandbox.store.layers import View
from sandbox.store.repository import Repository, Stored
from sandbox.store.schema import resources, sp_reference


@dataclass
class SearchResult:
    matches: list[Stored]
    included: list[Stored] = field(default_factory=list)
    total: int | None = None
    has_next: bool = False
    issues: list[Issue] = field(default_factory=list)


def run_search(conn: Connection, repo: Repository, view: View, plan: SearchPlan) -> SearchResult:
    r = resources
    where = plan_conditions(view, plan, r)
    total = None
    if plan.total != "none" or plan.summary == "count":
        total = conn.execute(select(func.count()).select_from(r).where(*where)).scalar_one()
    if plan.summary == "count" or plan.count == 0:
        return SearchResult([], total=total, issues=plan.ignored)
    rows = conn.execute(
        select(r.c.layer_id, r.c.resource_type, r.c.id, r.c.version_id, r.c.last_updated, r.c.deleted, r.c.content)
        .where(*where)
        .order_by(*order_by(view, plan, r))
        .limit(plan.count + 1)
        .offset(plan.offset)
    ).all()
    has_next = len(rows) > plan.count
    matches = [
        Stored(row.resource_type, row.id, row.version_id, row.last_updated, False, row.content, row.layer_id)
        for row in rows[: plan.count]
    ]
    included = resolve_includes(conn, repo, view, matches, plan.includes)
    return SearchResult(matches, included, total, has_next, plan.ignored)


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
    ref = sp_reference
    ids_by_type: dict[str, list[str]] = {}
    for s in sources:
        if inc.source_type in ("*", s.resource_type):
            ids_by_type.setdefault(s.resource_type, []).append(s.id)
    keys: list[tuple[str, str]] = []
    for rtype, ids in ids_by_type.items():
        query = select(ref.c.target_type, ref.c.target_id).where(
            ref.c.layer_id.in_(view.layers),
            ref.c.resource_type == rtype,
            ref.c.resource_id.in_(ids),
            ref.c.target_id.is_not(None),
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
        # Only references from resources the sandbox still sees in that layer.
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
