"""Parse a search query string into a typed plan, checked against the registry.

``Observation?patient=123&code=http://loinc.org|8867-4&_sort=-date`` becomes a
``SearchPlan`` of ``Clause``s (one per parameter occurrence; the values of one
occurrence are ORed, occurrences are ANDed) plus the result controls.  Nothing
here touches the database; ``search_sql.py`` turns a plan into SQL.

Errors follow the spec's split: a parameter the server does not know or
support is reported back and ignored (an error only under
``Prefer: handling=strict``); a value that cannot mean anything (a bad date,
number, prefix or ``:missing=maybe``) is a 400 whatever the handling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sandbox.fhir.outcome import FhirError, Issue
from sandbox.fhir.resource_types import is_resource_type
from sandbox.fhir.search_cursor import Cursor, decode
from sandbox.fhir.search_params import Registry, SearchParam
from sandbox.fhir.values import date_range, number_range

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
# Parameters every resource type has, so the only ones a search across all types can use.
COMMON_PARAMS = ("_id", "_lastUpdated", "_tag", "_profile", "_security", "_source")
MODIFIERS = {
    "string": {"exact", "contains", "missing"},
    "token": {"missing", "not", "text", "above", "below", "in", "not-in", "of-type"},
    "reference": {"missing", "identifier"},  # plus :[Type]
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "uri": {"missing", "above", "below"},
    "composite": {"missing"},
}
SUPPORTED_TOKEN_MODIFIERS = {"missing", "not", "text"}


@dataclass(frozen=True)
class Chain:
    """One link of a chained parameter: follow ``param`` (a reference) to any of ``target_types``."""

    param: SearchParam
    target_types: tuple[str, ...]


@dataclass(frozen=True)
class Has:
    """``_has:Observation:patient:code=1234``: resources that ``source_type.param`` references."""

    source_type: str
    reference_param: SearchParam


@dataclass(frozen=True)
class Clause:
    param: SearchParam
    values: tuple[str, ...]
    modifier: str | None = None
    chain: tuple[Chain, ...] = ()  # followed left to right before param applies
    has: tuple[Has, ...] = ()  # reverse chain, outermost first


@dataclass(frozen=True)
class Include:
    source_type: str
    param: SearchParam | None  # None for the wildcard "*"
    target_type: str | None
    iterate: bool
    reverse: bool


@dataclass(frozen=True)
class SortKey:
    param: SearchParam | None  # None for _id / _lastUpdated handled on the resources table
    code: str
    descending: bool


@dataclass(frozen=True)
class Allowed:
    """One way a restricted caller (a SMART token) may see resources of a type.

    In ``patient``'s compartment (a resource naming the patient through one of the ``compartment``
    reference parameters, or the patient itself) when ``patient`` is set, and matching every clause.
    """

    patient: str | None
    compartment: tuple[SearchParam, ...]
    clauses: tuple[Clause, ...]


@dataclass
class SearchPlan:
    resource_type: str | None  # None for a system-level search
    clauses: list[Clause] = field(default_factory=list)
    ids: tuple[str, ...] | None = None
    last_updated: list[tuple[str, ...]] = field(default_factory=list)  # values of each _lastUpdated occurrence
    sort: list[SortKey] = field(default_factory=list)
    types: tuple[str, ...] = ()  # _type of a system-level search
    count: int = 20
    sort_spec: str = ""  # the _sort as written, which a cursor must have been made for
    cursor: Cursor | None = None
    total: str = "accurate"  # none, estimate, accurate
    summary: str | None = None  # true, text, data, count, false
    elements: tuple[str, ...] = ()
    includes: list[Include] = field(default_factory=list)
    ignored: list[Issue] = field(default_factory=list)  # unknown parameters, reported back to the client
    # Set for a restricted caller: type -> the ways its resources may be seen (a type not listed: none).
    restriction: dict[str, tuple[Allowed, ...]] | None = None


def split_values(raw: str) -> tuple[str, ...]:
    """Split on unescaped commas; ``\\,`` is a literal comma."""
    parts = re.split(r"(?<!\\),", raw)
    return tuple(p.replace("\\,", ",") for p in parts)


def parse(
    registry: Registry,
    resource_type: str | None,
    query: list[tuple[str, str]],
    *,
    strict: bool = False,
    default_count: int = 20,
    max_count: int = 1000,
) -> SearchPlan:
    plan = SearchPlan(resource_type, count=default_count)
    # _type decides which parameters a system-level search may use, wherever it stands in the query.
    ordered = sorted(query, key=lambda item: item[0] != "_type")
    cursor: str | None = None
    for name, raw in ordered:
        try:
            if name == "_cursor":
                cursor = raw
            elif raw == "" and name not in ("_elements", "_sort"):
                raise _Unknown(f"Parameter '{name}' has no value")
            else:
                _parse_one(registry, plan, name, raw, max_count)
        except _Unknown as unknown:
            issue = Issue("not-supported", str(unknown), severity="error" if strict else "warning")
            if strict:
                raise FhirError(400, [issue]) from None
            plan.ignored.append(issue)
    if cursor is not None:
        plan.cursor = decode(cursor, plan.sort_spec, len(plan.sort))
    return plan


class _Unknown(Exception):
    pass


def _bad(message: str) -> FhirError:
    return FhirError.of(400, "invalid", message)


def _parse_one(registry: Registry, plan: SearchPlan, name: str, raw: str, max_count: int) -> None:
    rtype = plan.resource_type
    if name == "_count":
        if not raw.isdigit():
            raise _bad(f"_count must be a non-negative integer, not '{raw}'")
        plan.count = min(int(raw), max_count)
    elif name == "_type":
        if rtype is not None:
            raise _Unknown("_type applies only to a search across all types (GET [base]?_type=...)")
        types = tuple(t.strip() for t in raw.split(",") if t.strip())
        unknown = [t for t in types if not is_resource_type(t)]
        if unknown:
            raise _bad(f"_type names unknown resource types: {', '.join(unknown)}")
        plan.types = tuple(t for t in types if not plan.types or t in plan.types)
    elif name == "_total":
        if raw not in ("none", "estimate", "accurate"):
            raise _bad("_total must be none, estimate or accurate")
        plan.total = raw
    elif name == "_summary":
        if raw not in ("true", "false", "text", "data", "count"):
            raise _bad("_summary must be true, false, text, data or count")
        plan.summary = raw
    elif name == "_elements":
        plan.elements = tuple(e.strip() for e in raw.split(",") if e.strip())
    elif name == "_sort":
        _parse_sort(registry, plan, raw)
    elif name in ("_include", "_revinclude") or name.startswith(("_include:", "_revinclude:")):
        plan.includes.append(_parse_include(registry, name, raw))
    elif name in ("_format", "_pretty", "_contained", "_containedType"):
        return
    elif name == "_id":
        values = split_values(raw)
        plan.ids = values if plan.ids is None else tuple(v for v in plan.ids if v in values)
    elif name == "_lastUpdated":
        values = split_values(raw)
        for value in values:
            check_date(value)
        plan.last_updated.append(values)
    elif name.startswith("_has:"):
        if rtype is None:
            raise _Unknown("_has is not supported in a search across all types")
        plan.clauses.append(_parse_has(registry, rtype, name, raw))
    elif name.split(":")[0] in ("_id", "_lastUpdated"):
        raise _Unknown(f"Modifier on '{name.split(':')[0]}' is not supported")
    elif rtype is None:
        plan.clauses.append(_parse_system_clause(registry, plan.types, name, raw))
    else:
        plan.clauses.append(_parse_clause(registry, rtype, name, raw))


def _parse_sort(registry: Registry, plan: SearchPlan, raw: str) -> None:
    keys: list[SortKey] = []
    for key in (k.strip() for k in raw.split(",")):
        if not key:
            continue
        descending = key.startswith("-")
        code = key.removeprefix("-")
        if code in ("_id", "_lastUpdated"):
            keys.append(SortKey(None, code, descending))
            continue
        param = _common_param(registry, plan.types, code) if plan.resource_type is None else None
        if plan.resource_type is not None:
            param = registry.get(plan.resource_type, code)
        if param is None or param.type == "composite":
            raise _Unknown(f"Cannot sort by '{code}'")
        keys.append(SortKey(param, code, descending))
    plan.sort = keys
    plan.sort_spec = ",".join(("-" if k.descending else "") + k.code for k in keys)


def _common_param(registry: Registry, types: tuple[str, ...], code: str) -> SearchParam | None:
    """A parameter every type of a system-level search defines alike (the common ones when _type is absent)."""
    if not types:
        return registry.get("Basic", code) if code in COMMON_PARAMS else None
    found = [registry.get(t, code) for t in types]
    first = found[0]
    if first is None or any(p is None or p.type != first.type for p in found):
        return None
    return first


def _parse_system_clause(registry: Registry, types: tuple[str, ...], name: str, raw: str) -> Clause:
    code, _, modifier = name.partition(":")
    if "." in code:
        raise _Unknown(f"Chained parameter '{name}' is not supported in a search across all types")
    param = _common_param(registry, types, code)
    if param is None:
        scope = f"all of {', '.join(types)}" if types else "every resource type (name them with _type)"
        raise _Unknown(f"Parameter '{code}' is not defined for {scope}")
    return _clause(param, modifier, raw, ())


def _parse_include(registry: Registry, name: str, raw: str) -> Include:
    reverse = name.startswith("_revinclude")
    iterate = name.endswith(":iterate") or name.endswith(":recurse")
    parts = raw.split(":")
    if raw == "*":
        return Include("*", None, None, iterate, reverse)
    if len(parts) not in (2, 3):
        raise _bad(f"{name} must be Type:param or Type:param:TargetType, not '{raw}'")
    source, code = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if not is_resource_type(source):
        raise _Unknown(f"Unknown resource type '{source}' in {name}")
    if code == "*":
        return Include(source, None, target, iterate, reverse)
    param = registry.get(source, code)
    if param is None or param.type != "reference":
        raise _Unknown(f"'{code}' is not a reference parameter of {source} ({name})")
    return Include(source, param, target, iterate, reverse)


def _parse_has(registry: Registry, rtype: str | None, name: str, raw: str) -> Clause:
    """``_has:Type:ref:param`` and nested ``_has:T1:r1:_has:T2:r2:param``."""
    parts = name.split(":")
    has: list[Has] = []
    i = 0
    current = rtype
    while i < len(parts) and parts[i] == "_has":
        if i + 3 >= len(parts):
            raise _bad(f"_has needs Type:reference:parameter, not '{name}'")
        source_type, ref_code = parts[i + 1], parts[i + 2]
        if not is_resource_type(source_type):
            raise _Unknown(f"Unknown resource type '{source_type}' in {name}")
        ref = registry.get(source_type, ref_code)
        if ref is None or ref.type != "reference":
            raise _Unknown(f"'{ref_code}' is not a reference parameter of {source_type} ({name})")
        if current and ref.targets and current not in ref.targets:
            raise _bad(f"{source_type}.{ref_code} cannot refer to {current} ({name})")
        has.append(Has(source_type, ref))
        current = source_type
        i += 3
    rest = ":".join(parts[i:])
    if not rest:
        raise _bad(f"_has needs a parameter to test at the end: '{name}'")
    inner = _parse_clause(registry, current or "", rest, raw)
    return Clause(inner.param, inner.values, inner.modifier, inner.chain, tuple(has))


def _parse_clause(registry: Registry, rtype: str, name: str, raw: str) -> Clause:
    """A parameter, possibly chained: ``subject:Patient.organization.name``.

    A link without ``:Type`` follows the reference to every type it may point at
    that has the next parameter (``encounter.status`` reaches Encounter and
    EpisodeOfCare), as the spec allows; ``:Type`` narrows it to one.
    """
    links = name.split(".")
    chain: list[Chain] = []
    current: tuple[str, ...] = (rtype,)
    for n, link in enumerate(links[:-1]):
        code, _, type_mod = link.partition(":")
        params = [registry.get(t, code) for t in current]
        if any(p is None or p.type != "reference" for p in params):
            raise _Unknown(f"'{code}' is not a reference parameter of {' or '.join(current)}, so it cannot be chained")
        targets = tuple(dict.fromkeys(t for p in params if p is not None for t in p.targets))
        following = links[n + 1].partition(":")[0]
        if type_mod:
            if not is_resource_type(type_mod) or (targets and type_mod not in targets):
                raise _bad(f"'{code}' cannot refer to a {type_mod} (it refers to {', '.join(targets)})")
            chosen: tuple[str, ...] = (type_mod,)
        else:
            chosen = tuple(t for t in targets if registry.get(t, following) is not None)
            if not chosen:
                raise _Unknown(f"No type that '{code}' refers to ({', '.join(targets)}) has a parameter '{following}'")
        first = params[0]
        assert first is not None
        chain.append(Chain(first, chosen))
        current = chosen
    code, _, modifier = links[-1].partition(":")
    found = [registry.get(t, code) for t in current]
    param = found[0]
    if param is None or any(p is None for p in found):
        raise _Unknown(f"Unknown search parameter '{code}' for {' or '.join(current)}")
    if any(p is not None and p.type != param.type for p in found):
        raise _bad(f"'{code}' has a different type on {', '.join(current)}; name the type in the chain (:Type)")
    return _clause(param, modifier, raw, tuple(chain))


def _clause(param: SearchParam, modifier: str, raw: str, chain: tuple[Chain, ...]) -> Clause:
    code = param.code
    mod: str | None = modifier or None
    if mod is not None:
        allowed = MODIFIERS.get(param.type, set())
        is_type_modifier = param.type == "reference" and is_resource_type(mod)
        if not is_type_modifier and mod not in allowed:
            raise _bad(f"Modifier ':{mod}' is not valid for {param.type} parameter '{code}'")
        if param.type == "token" and mod not in SUPPORTED_TOKEN_MODIFIERS:
            why = "is not supported" if mod == "of-type" else "needs a terminology service, which this server lacks"
            raise _Unknown(f"Modifier ':{mod}' on '{code}' {why}")
        if is_type_modifier and param.targets and mod not in param.targets:
            raise _bad(f"'{code}' cannot refer to a {mod}")
    if mod == "missing":
        if raw not in ("true", "false"):
            raise _bad(f":missing takes true or false, not '{raw}'")
        return Clause(param, (raw,), mod, chain)
    values = split_values(raw)
    for value in values:
        _check_value(param, value)
    return Clause(param, values, mod, chain)


def _check_value(param: SearchParam, value: str) -> None:
    """Reject values that cannot mean anything for the parameter's type, before any SQL is built."""
    if param.type == "date":
        check_date(value)
    elif param.type == "number":
        check_number(value)
    elif param.type == "quantity":
        check_number(value.split("|")[0])
    elif param.type == "composite":
        parts = value.split("$")
        if len(parts) != len(param.components):
            raise _bad(f"'{param.code}' takes {len(param.components)} values joined by '$', not '{value}'")
        for component, part in zip(param.components, parts, strict=True):
            _check_value(SearchParam(param.resource_type, component.code, component.type, ""), part)


def split_prefix(value: str) -> tuple[str, str]:
    """``ge2020`` -> (``ge``, ``2020``); no prefix means ``eq``.  An unknown two-letter prefix stays in the value."""
    if len(value) > 2 and value[:2].isalpha() and value[:2].islower():
        return value[:2], value[2:]
    return "eq", value


def check_date(value: str) -> tuple[str, tuple[str, str]]:
    prefix, text = split_prefix(value)
    if prefix not in PREFIXES:
        raise _bad(f"'{prefix}' in '{value}' is not a search prefix (eq ne gt lt ge le sa eb ap)")
    bounds = date_range(text)
    if bounds is None:
        raise _bad(f"'{text}' is not a valid date, dateTime or instant (e.g. 2020, 2020-03-04, 2020-03-04T10:00:00Z)")
    return prefix, bounds


def check_number(value: str) -> tuple[str, tuple[float, float], float]:
    prefix, text = split_prefix(value)
    if prefix not in PREFIXES:
        raise _bad(f"'{prefix}' in '{value}' is not a search prefix (eq ne gt lt ge le sa eb ap)")
    bounds = number_range(text)
    if bounds is None:
        raise _bad(f"'{text}' is not a number")
    return prefix, bounds, float(text)
