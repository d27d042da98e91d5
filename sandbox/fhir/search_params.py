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
    CompositeEvaluator,
    Evaluator,
    compile_composite,
    compile_expression,
    composite_root_elements,
    root_elements,
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
    def evaluate(self) -> Evaluator:
        return compile_expression(self.expression, self.resource_type)

    @cached_property
    def evaluate_composite(self) -> CompositeEvaluator:
        return compile_composite(self.expression, self.resource_type, [c.expression for c in self.components])

    @cached_property
    def roots(self) -> frozenset[str] | None:
        """The top-level elements the expression reads (None: unknown, always evaluate)."""
        if self.type == "composite" and self.components:
            return composite_root_elements(self.expression, self.resource_type, self.components[0].expression)
        return root_elements(self.expression, self.resource_type)

    @property
    def indexed(self) -> bool:
        """False for parameters with no expression (e.g. ``_text``): nothing is indexed for them."""
        return bool(self.expression) and self.code not in UNSUPPORTED_COMMON | FROM_RESOURCE_TABLE


class IndexPlan:
    """A type's indexed parameters, found by the top-level elements they read.

    The indexer runs only the parameters whose elements a resource holds (a few of a type's forty
    or so), in registry order, so the rows come out as if every parameter had been run.
    """

    def __init__(self, params: list[SearchParam]) -> None:
        self.params = params
        self._always = tuple(n for n, p in enumerate(params) if p.roots is None)
        by_root: dict[str, list[int]] = {}
        for n, param in enumerate(params):
            for root in param.roots or ():
                by_root.setdefault(root, []).append(n)
        self._by_root = {root: tuple(found) for root, found in by_root.items()}

    def relevant(self, resource: dict) -> list[SearchParam]:
        wanted = set(self._always)
        by_root = self._by_root
        for key in resource:
            found = by_root.get(key)
            if found is not None:
                wanted.update(found)
        params = self.params
        return [params[n] for n in sorted(wanted)]


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
