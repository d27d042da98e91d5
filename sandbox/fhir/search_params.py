"""The search parameter registry: every parameter FHIR R4 defines, per resource type.

Built from ``data/search_parameters.json`` (see ``tools/build_search_registry.py``).
The indexer and the search planner both read it, so what is indexed on write is
exactly what can be searched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path

from sandbox.fhir.expressions import (
    Branch,
    Composite,
    compile_composite,
    compile_expression,
)
from sandbox.fhir.resource_types import resource_types

_DATA = Path(__file__).parent / "data"

# Parameters every resource has that the spec types as "special" or that need
# a full-text engine; the planner reports them as unsupported.
UNSUPPORTED_COMMON = {"_text", "_content", "_query", "_filter", "_list", "_has"}
# Answered from the resources table itself, so not copied into the index.
FROM_RESOURCE_TABLE = {"_id", "_lastUpdated"}


@dataclass(frozen=True)
class Component:
    code: str
    type: str
    expression: str


@dataclass(frozen=True)
class SearchParam:
    resource_type: str
    code: str
    type: str
    expression: str
    targets: tuple[str, ...] = ()
    components: tuple[Component, ...] = field(default=())

    @cached_property
    def branches(self) -> tuple[Branch, ...]:
        """The expression, compiled: its values are those of each branch in turn."""
        return compile_expression(self.expression, self.resource_type)

    @cached_property
    def composite(self) -> Composite:
        """A composite parameter's focus and components, compiled."""
        return compile_composite(self.expression, self.resource_type, [c.expression for c in self.components])

    @cached_property
    def component_codes(self) -> tuple[str, ...]:
        """The ``param`` a composite's index rows carry per component: ``code-value-quantity$0``, ``...$1``."""
        return tuple(f"{self.code}${n}" for n in range(len(self.components)))

    @property
    def indexed(self) -> bool:
        """False for parameters with no expression (e.g. ``_text``): nothing is indexed for them."""
        return bool(self.expression) and self.code not in UNSUPPORTED_COMMON | FROM_RESOURCE_TABLE


# What the indexer runs for one resource: per parameter, the branches of its expression that can find
# something there (a composite's: each focus branch with its components' branches).
Planned = tuple[tuple[SearchParam, tuple[Branch, ...] | Composite], ...]


class IndexPlan:
    """A type's indexed parameters, narrowed to what can find anything in a resource of a given shape.

    A resource's top-level keys say which branches can give anything (``Branch.roots``): of a type's forty
    or so parameters a few, and of ``combo-value-quantity``'s four branches one.  The narrowed plan is
    worked out once per shape (the keys, in order) and kept; parameters stay in registry order and
    branches in expression order, so the rows come out as if everything had been run.
    """

    # Shapes kept per type; beyond it (clients sending resources of ever new shapes) plans are not kept.
    MAX_SHAPES = 4096

    def __init__(self, params: list[SearchParam]) -> None:
        self.params = params
        self._shapes: dict[tuple[str, ...], Planned] = {}

    def for_shape(self, keys: tuple[str, ...]) -> Planned:
        """The plan for a resource with these top-level keys."""
        planned = self._shapes.get(keys)
        if planned is None:
            planned = self._narrowed(frozenset(keys))
            if len(self._shapes) < self.MAX_SHAPES:
                self._shapes[keys] = planned
        return planned

    def _narrowed(self, keys: frozenset[str]) -> Planned:
        out: list[tuple[SearchParam, tuple[Branch, ...] | Composite]] = []
        for param in self.params:
            if param.type != "composite":
                branches = tuple(b for b in param.branches if _may_find(b, keys))
                if branches:
                    out.append((param, branches))
                continue
            foci = []
            for focus, components in param.composite:
                if not _may_find(focus, keys):
                    continue
                if not focus.steps and focus.key is not None:
                    # The focus is the resource itself: its components start from its top-level keys too,
                    # and a composite value needs every component.
                    components = tuple(tuple(b for b in branches if _may_find(b, keys)) for branches in components)
                    if not all(components):
                        continue
                foci.append((focus, components))
            if foci:
                out.append((param, tuple(foci)))
        return tuple(out)


def _may_find(branch: Branch, keys: frozenset[str]) -> bool:
    return branch.roots is None or not branch.roots.isdisjoint(keys)


class Registry:
    def __init__(self, raw: dict[str, dict[str, dict]]) -> None:
        common = {**raw.get("Resource", {}), **raw.get("DomainResource", {})}
        self._by_type: dict[str, dict[str, SearchParam]] = {}
        self._plans: dict[str, IndexPlan] = {}
        for rtype in resource_types():
            merged = {**common, **raw.get(rtype, {})}
            self._by_type[rtype] = {
                code: _param(rtype, code, item) for code, item in merged.items() if code not in UNSUPPORTED_COMMON
            }

    def params(self, resource_type: str) -> dict[str, SearchParam]:
        return self._by_type.get(resource_type, {})

    def get(self, resource_type: str, code: str) -> SearchParam | None:
        return self._by_type.get(resource_type, {}).get(code)

    def indexed_params(self, resource_type: str) -> list[SearchParam]:
        return [p for p in self.params(resource_type).values() if p.indexed]

    def index_plan(self, resource_type: str) -> IndexPlan:
        plan = self._plans.get(resource_type)
        if plan is None:
            plan = self._plans[resource_type] = IndexPlan(self.indexed_params(resource_type))
        return plan


def _param(rtype: str, code: str, item: dict) -> SearchParam:
    expression = item["expression"]
    # Common parameters are written against Resource; evaluate them from the concrete type.
    if expression.startswith("Resource.") or expression.startswith("DomainResource."):
        expression = rtype + expression[expression.index(".") :]
    return SearchParam(
        resource_type=rtype,
        code=code,
        type=item["type"],
        expression=expression,
        targets=tuple(item.get("target", ())),
        components=tuple(Component(c["code"], c["type"], c["expression"]) for c in item.get("components", ())),
    )


@cache
def registry() -> Registry:
    return Registry(json.loads((_DATA / "search_parameters.json").read_text()))


@cache
def patient_compartment() -> dict[str, list[str]]:
    """Resource type -> the parameters that place a resource in a Patient's compartment."""
    return json.loads((_DATA / "patient_compartment.json").read_text())
