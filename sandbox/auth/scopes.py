"""SMART scopes (App Launch 2.0, scopes-and-launch-context): parsing, what a client may ask for, what a token allows.

Resource scopes are ``context/Type.permissions[?query]``: context ``patient``, ``user`` or ``system``; ``Type``
a resource type or ``*``; permissions v2 ``cruds`` (a subset, in that order) or v1 ``read`` (= ``rs``),
``write`` (= ``cud``) and ``*`` (= ``cruds``); an optional search query narrows the scope
(``patient/Observation.rs?category=vital-signs``).  Other scopes (``openid``, ``fhirUser``, ``launch``,
``launch/patient``, ``offline_access``, ...) carry no data access.  Scopes add up: a resource is reachable
when any granted scope reaches it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from sandbox.fhir.resource_types import is_resource_type

PERMISSIONS = "cruds"
V1 = {"read": "rs", "write": "cud", "*": "cruds"}
CONTEXTS = ("patient", "user", "system")
# The scopes that are not about resources, which a server may grant.
NON_RESOURCE = frozenset(
    {
        "openid",
        "fhirUser",
        "profile",
        "launch",
        "launch/patient",
        "launch/encounter",
        "offline_access",
        "online_access",
    }
)
_RESOURCE = re.compile(r"^(patient|user|system)/([A-Za-z]+|\*)\.([a-z*]+)(\?.*)?$")


class InvalidScope(ValueError):
    pass


@dataclass(frozen=True)
class ResourceScope:
    context: str  # patient, user, system
    resource_type: str  # a type, or "*"
    permissions: frozenset[str]  # of c r u d s
    query: tuple[tuple[str, str], ...]  # the search that narrows it; () for none
    text: str

    def covers(self, other: ResourceScope) -> bool:
        """Whether granting this scope would also allow everything ``other`` allows."""
        return (
            self.context == other.context
            and self.resource_type in ("*", other.resource_type)
            and other.permissions <= self.permissions
            and (not self.query or self.query == other.query)
        )


def parse_scope(text: str) -> ResourceScope | None:
    """A resource scope, or None for the other known scopes; ``InvalidScope`` for anything else."""
    if text in NON_RESOURCE:
        return None
    match = _RESOURCE.match(text)
    if match is None:
        raise InvalidScope(f"'{text}' is not a SMART scope")
    context, rtype, raw_permissions, query = match.groups()
    if rtype != "*" and not is_resource_type(rtype):
        raise InvalidScope(f"'{text}' names an unknown resource type '{rtype}'")
    if raw_permissions in V1:
        permissions = V1[raw_permissions]
    else:
        permissions = raw_permissions
        # v2: a non-empty subset of c r u d s, each once, in that order.
        if not permissions or "".join(p for p in PERMISSIONS if p in permissions) != permissions:
            raise InvalidScope(f"'{text}': permissions are read, write, * or a subset of 'cruds' in that order")
    pairs = tuple(parse_qsl(query[1:], keep_blank_values=True)) if query else ()
    if query and (not pairs or any(not k or not v for k, v in pairs)):
        raise InvalidScope(f"'{text}': the query after '?' must be name=value pairs")
    return ResourceScope(context, rtype, frozenset(permissions), pairs, text)


def split_scopes(raw: str | None) -> list[str]:
    """A space-separated scope string as a list, without repeats, in order."""
    seen: dict[str, None] = {}
    for scope in (raw or "").split():
        seen.setdefault(scope, None)
    return list(seen)


def check_scopes(scopes: list[str]) -> list[ResourceScope]:
    """Parse every scope (``InvalidScope`` on the first bad one); the resource scopes among them."""
    return [parsed for parsed in (parse_scope(s) for s in scopes) if parsed is not None]


def disallowed(requested: list[str], allowed: list[str]) -> list[str]:
    """The requested scopes that the client's registered scopes do not cover."""
    allowed_resource = [parsed for parsed in (parse_scope(s) for s in allowed) if parsed is not None]
    out = []
    for scope in requested:
        parsed = parse_scope(scope)
        if parsed is None:
            if scope not in allowed:
                out.append(scope)
        elif not any(a.covers(parsed) for a in allowed_resource):
            out.append(scope)
    return out


# ---- what a token allows ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Way:
    """One way a resource may be reached: within a patient's compartment (``patient``) and/or matching ``query``."""

    patient: str | None
    query: tuple[tuple[str, str], ...]

    @property
    def unrestricted(self) -> bool:
        return self.patient is None and not self.query


@dataclass(frozen=True)
class Access:
    """What a SMART token may do: its resource scopes, and the patient its ``patient/`` scopes are bound to."""

    scopes: tuple[ResourceScope, ...]
    patient: str | None

    @classmethod
    def of(cls, scopes: list[str], patient: str | None) -> Access:
        return cls(tuple(check_scopes(scopes)), patient)

    def ways(self, rtype: str, permission: str) -> tuple[Way, ...] | None:
        """How ``permission`` on ``rtype`` may be used: None for without restriction, () for not at all."""
        found: list[Way] = []
        for scope in self.scopes:
            if scope.resource_type not in ("*", rtype) or permission not in scope.permissions:
                continue
            if scope.context == "patient":
                if self.patient is None:
                    continue  # a patient scope without a patient in context reaches nothing
                way = Way(self.patient, scope.query)
            else:
                way = Way(None, scope.query)
            if way.unrestricted:
                return None
            if way not in found:
                found.append(way)
        return tuple(found)

    def may(self, rtype: str, permission: str) -> bool:
        return self.ways(rtype, permission) != ()
