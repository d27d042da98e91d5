"""Search parameter expressions, compiled once into small evaluators over resource JSON.

Nearly all of FHIR R4's search parameter expressions are paths with a few
decorations: ``(X.value as Quantity)``, ``X.onset.as(Age)``,
``X.subject.where(resolve() is Patient)``, ``X.telecom.where(system='email')``
and ``X.entry[0].resource``.  Those compile into a list of steps run directly
over the stored JSON dicts, which is many times faster than a general FHIRPath
engine and, unlike one, knows each value's FHIR type (from fhirpathpy's R4
model tables), which the indexer needs to tell an Identifier from a
ContactPoint.  The handful of other expressions go through fhirpathpy.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from fhirpathpy import compile as fhirpath_compile
from fhirpathpy.models import models

_MODEL = models["r4"]
_PATH2TYPE: dict[str, str] = _MODEL["path2Type"]
_CHOICES: dict[str, list[str]] = _MODEL["choiceTypePaths"]
_ELSEWHERE: dict[str, str] = _MODEL["pathsDefinedElsewhere"]
# Backbone elements have no entry of their own in path2Type, only their children do.
_BACKBONES = {path.rsplit(".", 1)[0] for path in [*_PATH2TYPE, *_CHOICES] if path.count(".") > 1}

PRIMITIVES = {
    "boolean",
    "integer",
    "string",
    "decimal",
    "uri",
    "url",
    "canonical",
    "base64Binary",
    "instant",
    "date",
    "dateTime",
    "time",
    "code",
    "oid",
    "id",
    "markdown",
    "unsignedInt",
    "positiveInt",
    "uuid",
    "xhtml",
}
_PRIMITIVE_BY_LOWER = {p.lower(): p for p in PRIMITIVES}

Typed = tuple[Any, str | None]  # a value and its FHIR type name (None when unknown)


def type_name(suffix: str) -> str:
    """``DateTime`` -> ``dateTime``; complex type names are kept."""
    return _PRIMITIVE_BY_LOWER.get(suffix.lower(), suffix)


@dataclass(frozen=True)
class _Field:
    name: str
    static_type: str | None  # None for a choice element
    choices: tuple[str, ...]  # choice suffixes, e.g. ("DateTime", "Period")
    # ``value[x]`` -> (``valueQuantity``, ``Quantity``), ...: worked out once, not for every resource.
    choice_keys: tuple[tuple[str, str], ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        keys = tuple((self.name + suffix, type_name(suffix)) for suffix in self.choices)
        object.__setattr__(self, "choice_keys", keys)


@dataclass(frozen=True)
class _Cast:
    type: str


@dataclass(frozen=True)
class _ResolveIs:
    type: str


@dataclass(frozen=True)
class _WhereEq:
    field: str
    value: str


@dataclass(frozen=True)
class _Index:
    n: int


_Step = _Field | _Cast | _ResolveIs | _WhereEq | _Index


class _Unsupported(Exception):
    pass


_CAST_PAREN = re.compile(r"^\((?P<inner>[^()]+?) as (?P<type>\w+)\)(?P<rest>.*)$")
_TOKEN = re.compile(
    r"\.as\((?P<as>\w+)\)"
    r"|\.where\(resolve\(\) is (?P<resolve>\w+)\)"
    r"|\.where\((?P<wf>\w+)\s*=\s*'(?P<wv>[^']*)'\)"
    r"|\[(?P<idx>\d+)\]"
    r"|\.(?P<field>\w+)"
)


class _TypeCursor:
    """Follows element definitions through fhirpathpy's R4 model tables."""

    def __init__(self, root: str) -> None:
        self.path: str | None = root

    def field(self, name: str) -> _Field:
        if self.path is None:
            return _Field(name, None, ())
        full = _ELSEWHERE.get(f"{self.path}.{name}", f"{self.path}.{name}")
        if full in _CHOICES:
            self.path = None
            return _Field(name, None, tuple(_CHOICES[full]))
        declared = _PATH2TYPE.get(full)
        if declared is None and full in _BACKBONES:
            declared = "BackboneElement"
        if declared is None:
            self.path = None
            return _Field(name, None, ())
        if declared in ("BackboneElement", "Element"):
            self.path = full
            return _Field(name, declared, ())
        declared = "string" if declared.startswith("System.") else declared
        self.path = declared
        return _Field(name, declared, ())

    def cast(self, type_: str) -> None:
        self.path = type_name(type_) if type_name(type_) not in PRIMITIVES else None


def _compile_steps(branch: str, resource_type: str) -> list[_Step]:
    branch = branch.strip()
    cursor = _TypeCursor(resource_type)
    steps: list[_Step] = []

    def walk(path: str) -> None:
        pos = 0
        if steps == [] and path.startswith(resource_type):
            pos = len(resource_type)
        while pos < len(path):
            m = _TOKEN.match(path, pos)
            if not m:
                raise _Unsupported(branch)
            if m["field"]:
                steps.append(cursor.field(m["field"]))
            elif m["as"]:
                steps.append(_Cast(type_name(m["as"])))
                cursor.cast(m["as"])
            elif m["resolve"]:
                steps.append(_ResolveIs(m["resolve"]))
            elif m["wf"]:
                steps.append(_WhereEq(m["wf"], m["wv"]))
            else:
                steps.append(_Index(int(m["idx"])))
            pos = m.end()

    cast = _CAST_PAREN.match(branch)
    if cast:
        walk(cast["inner"])
        steps.append(_Cast(type_name(cast["type"])))
        cursor.cast(cast["type"])
        walk(cast["rest"])
    else:
        walk(branch)
    return _narrowed(steps)


def _narrowed(steps: list[_Step]) -> list[_Step]:
    """A choice element followed by a cast to one of its types reads only that type's key: ``value.as(Quantity)``
    reads ``valueQuantity`` alone.  The same values come out (the cast stays, and drops the other types'),
    and the keys the branch can start from (``Branch.roots``) narrow to the one that can give any."""
    out: list[_Step] = []
    for n, step in enumerate(steps):
        after = steps[n + 1] if n + 1 < len(steps) else None
        if isinstance(step, _Field) and step.choices and isinstance(after, _Cast):
            kept = tuple(suffix for suffix in step.choices if type_name(suffix) == after.type)
            if kept:
                step = _Field(step.name, None, kept)
        out.append(step)
    return out


def _run(steps: list[_Step], resource: dict) -> list[Typed]:
    current: list[Typed] = [(resource, resource.get("resourceType"))]
    for step in steps:
        out: list[Typed] = []
        if type(step) is _Field:
            if step.choices:
                for node, _ in current:
                    if isinstance(node, dict):
                        for key, choice_type in step.choice_keys:
                            value = node.get(key)
                            if value is not None:
                                _extend(out, value, choice_type)
            else:
                name, static_type = step.name, step.static_type
                for node, _ in current:
                    if isinstance(node, dict):
                        value = node.get(name)
                        if value is not None:
                            _extend(out, value, static_type)
        elif isinstance(step, _Cast):
            out = [(v, t) for v, t in current if t == step.type or (t is None and _looks_like(v, step.type))]
        elif isinstance(step, _ResolveIs):
            out = [(v, t) for v, t in current if reference_type(v) == step.type]
        elif isinstance(step, _WhereEq):
            out = [(v, t) for v, t in current if isinstance(v, dict) and v.get(step.field) == step.value]
        else:
            out = current[step.n : step.n + 1]
        if not out:
            return out  # nothing flows on through the later steps
        current = out
    return current


def _extend(out: list[Typed], value: Any, type_: str | None) -> None:
    if isinstance(value, list):
        out.extend([(v, type_) for v in value if v is not None])
    else:
        out.append((value, type_))


def _looks_like(value: Any, type_: str) -> bool:
    if type_ in ("string", "uri", "canonical", "code", "dateTime", "date"):
        return isinstance(value, str)
    if type_ == "boolean":
        return isinstance(value, bool)
    if type_ == "Reference":
        return isinstance(value, dict) and ("reference" in value or "identifier" in value)
    if type_ == "CodeableConcept":
        return isinstance(value, dict) and ("coding" in value or "text" in value)
    return isinstance(value, dict)


def reference_type(value: Any) -> str | None:
    """The resource type a Reference points at, from ``reference`` or ``type``."""
    if not isinstance(value, dict):
        return None
    ref = value.get("reference")
    if isinstance(ref, str):
        parts = ref.split("/_history/")[0].split("/")
        if len(parts) >= 2:
            return parts[-2]
    t = value.get("type")
    return t if isinstance(t, str) else None


class Branch:
    """One ``|``-separated branch of an expression, compiled to steps over the resource JSON.

    Equal branches share one ``key`` (``Observation.code`` of the ``code`` parameter, of ``combo-code`` and
    of every ``code-value-*`` composite's ``code`` component), so the indexer can work out each once per
    resource and reuse it (``sandbox.store.indexer``).
    """

    __slots__ = ("steps", "key", "roots")

    def __init__(self, steps: list[_Step]) -> None:
        self.steps = tuple(steps)
        self.key: int | None = _BRANCH_KEYS.setdefault(self.steps, next(_NEW_KEYS))
        # The keys of its focus it can start from (``valueQuantity`` for ``value.as(Quantity)``; every
        # ``value[x]`` key for ``value``): a focus holding none of them gives it nothing, so the indexer
        # need not run it.  None: any focus may give it something.
        first = self.steps[0] if self.steps else None
        self.roots: frozenset[str] | None = None
        if isinstance(first, _Field):
            self.roots = frozenset(key for key, _ in first.choice_keys) if first.choices else frozenset([first.name])

    def run(self, focus: dict) -> list[Typed]:
        """The values the branch reaches from ``focus`` (a resource, or an element of one); callers must
        not change the list."""
        return _run(self.steps, focus)


_BRANCH_KEYS: dict[tuple[_Step, ...], int] = {}
# Atomic under threads (a server compiles parameters as requests first need them): two different branches
# must never get one key, and setdefault keeps the first key of equal ones.
_NEW_KEYS = itertools.count()


class _FhirpathBranch(Branch):
    """An expression the steps cannot express, run by fhirpathpy (no ``key``: nothing to share)."""

    __slots__ = ("_fn",)

    def __init__(self, expression: str) -> None:
        # resolve() is not implemented by fhirpathpy; the few expressions using it are handled by steps.
        self.steps = ()
        self.key = None
        self.roots = None
        self._fn = fhirpath_compile(expression, _MODEL)

    def run(self, focus: dict) -> list[Typed]:
        return [(v, None) for v in self._fn(focus) if v is not None]


class _PresentAndNotFalse(Branch):
    """``X.exists() and X != false`` (Patient's ``deceased``: true for a deceasedDateTime or deceasedBoolean
    true, false otherwise, absent included), over the steps of ``X``: 0.5 µs a Patient, 30 µs through fhirpathpy."""

    __slots__ = ()

    def __init__(self, steps: list[_Step]) -> None:
        super().__init__(steps)
        self.key = None  # its values are not X's: nothing to share with a branch of the same steps
        self.roots = None  # a focus without X still gives a value (false)

    def run(self, focus: dict) -> list[Typed]:
        values = _run(self.steps, focus)
        # FHIRPath's ``!=`` on a one-item collection; more than one item (not in R4's uses) compares unequal.
        present = bool(values) and not (len(values) == 1 and values[0][0] is False)
        return [(present, None)]


_PRESENT_AND_NOT_FALSE = re.compile(r"^(?P<path>[\w.]+)\.exists\(\) and (?P=path) != false$")


def compile_expression(expression: str, resource_type: str) -> tuple[Branch, ...]:
    """Compile a search parameter expression (narrowed to ``resource_type``): its branches, whose values,
    in order, are the expression's."""
    branches = [b for b in expression.split(" | ") if b.strip()]
    try:
        if len(branches) == 1 and (m := _PRESENT_AND_NOT_FALSE.match(branches[0].strip())):
            return (_PresentAndNotFalse(_compile_steps(m["path"], resource_type)),)
        return tuple(Branch(_compile_steps(b, resource_type)) for b in branches)
    except _Unsupported:
        return (_FhirpathBranch(expression),)


# Per branch of the focus: the branch, and each component's branches (relative to a focus element).
Composite = tuple[tuple[Branch, tuple[tuple[Branch, ...], ...]], ...]


def compile_composite(expression: str, resource_type: str, components: list[str]) -> Composite:
    """A composite parameter: the branches that find each focus element, and for each component the
    branches that find its values within a focus.

    Component expressions are relative to the focus (``code``, ``value.as(Quantity)``),
    so each is compiled against the element definition the focus branch ends on.
    """
    compiled = []
    for branch in (b.strip() for b in expression.split(" | ") if b.strip()):
        focus_path = _focus_path(branch, resource_type)
        parts = tuple(tuple(Branch(_compile_relative(c, focus_path)) for c in comp.split(" | ")) for comp in components)
        compiled.append((Branch(_compile_steps(branch, resource_type)), parts))
    return tuple(compiled)


def _focus_path(branch: str, resource_type: str) -> str | None:
    cursor = _TypeCursor(resource_type)
    for name in branch[len(resource_type) :].split("."):
        if name:
            cursor.field(name)
    return cursor.path


def _compile_relative(expression: str, context_path: str | None) -> list[_Step]:
    try:
        steps = _compile_steps("." + expression.strip(), "")
    except _Unsupported:
        # Only MolecularSequence's coordinates reach outside the focus (%resource); they match nothing.
        return [_Cast("%unsupported")]
    cursor = _TypeCursor(context_path) if context_path else None
    typed: list[_Step] = []
    for step in steps:
        if isinstance(step, _Field) and cursor is not None:
            step = cursor.field(step.name)
        elif isinstance(step, _Cast) and cursor is not None:
            cursor.cast(step.type)
        typed.append(step)
    return _narrowed(typed)
