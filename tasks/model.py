"""What a task pack is, once loaded and validated: packs, tasks, checks, hints.

Checks hold their FHIRPath compiled (fhirpathpy ``compile`` once per expression,
with the R4 model, or choice elements such as ``value[x]`` evaluate to nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROLES = ("nurse", "physician", "registrar", "pharmacist", "medical-assistant", "any")
RETRY_SCOPES = ("task", "sandbox")
# Placeholders every task offers; checks add their own names (``as:``) for later checks.
BUILTIN_PLACEHOLDERS = ("patient", "encounter", "task.started", "trainee")


@dataclass(frozen=True)
class FhirPath:
    """One FHIRPath expression: its text (for messages) and the compiled function."""

    text: str
    run: Callable[..., list[Any]] = field(compare=False, repr=False)

    def true_for(self, resource: dict[str, Any], env: dict[str, Any]) -> bool:
        """True when the expression gives true (or only trues); an expression that cannot be evaluated on this
        resource (fhirpathpy raises on type mismatches, e.g. a string compared with a number) does not hold."""
        try:
            result = self.run(resource, env)
        except Exception:  # fhirpathpy raises bare Exceptions
            return False
        return bool(result) and all(r is True for r in result)


@dataclass(frozen=True)
class Search:
    """``Type?param=value&...``; values may hold placeholders, filled in per attempt."""

    text: str
    rtype: str
    query: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Refers:
    """The reference(s) at ``path`` in a found resource must point at something ``target`` finds."""

    path: FhirPath
    target: Search


CDS_OUTCOMES = ("shown", "accepted", "overridden")


@dataclass(frozen=True)
class CdsCriteria:
    """What the trainee did with CDS Hooks cards: cards of ``services`` shown to them, or accepted, or
    overridden (with or without a reason, or with one reason code), since the task started, for its patient."""

    services: tuple[str, ...]  # a service id ("ai-risk-model") or registration/id ("builtin/ai-risk-model")
    outcome: str = "shown"
    indicator: str | None = None  # info, warning, critical
    reason: bool | None = None  # overridden: True with a reason (a coded one or a comment), False without
    reason_code: str | None = None

    def describe(self) -> str:
        what = f"{self.indicator + ' ' if self.indicator else ''}card from {' or '.join(self.services)}"
        if self.outcome == "shown":
            return f"{what} shown to you"
        how = {True: " with a reason", False: " without a reason", None: ""}[self.reason]
        if self.reason_code:
            how = f" with the reason '{self.reason_code}'"
        return f"{what} {self.outcome} by you{how}"


HL7_DIRECTIONS = ("inbound", "outbound")


@dataclass(frozen=True)
class Hl7Field:
    """``OBR-4.1 = 58410-2``: segment, field, component and subcomponent (1-based), and the value wanted."""

    path: str
    segment: str
    field: int
    component: int
    subcomponent: int
    value: str


@dataclass(frozen=True)
class Hl7Criteria:
    """HL7 v2 messages in the sandbox's message log since the task started: their direction, type, log status and
    ACK code, and fields that must hold given values (in any repetition of the field, any segment of that name)."""

    direction: str = "outbound"
    message_type: str | None = None  # MSH-9.1^MSH-9.2, e.g. ORM^O01
    status: str | None = None  # a log status (sandbox.hl7v2.log.STATUSES)
    ack_code: str | None = None  # AA, AE, AR, CA, CE, CR
    fields: tuple[Hl7Field, ...] = ()

    def describe(self) -> str:
        what = f"{self.direction} {self.message_type or 'HL7 v2'} message"
        how = [f"status {self.status}"] if self.status else []
        how += [f"ACK {self.ack_code}"] if self.ack_code else []
        how += [f"{f.path} = {f.value}" for f in self.fields]
        return what + (f" with {', '.join(how)}" if how else "")


@dataclass(frozen=True)
class Check:
    id: str
    title: str
    points: float
    feedback: str
    kind: str  # "require": something matching must exist; "forbid": nothing matching may exist
    search: Search | None  # None for a check on CDS Hooks cards (``cds``) or HL7 v2 messages (``hl7``)
    where: tuple[FhirPath, ...] = ()
    refers: tuple[Refers, ...] = ()
    by_trainee: bool = True  # only resources this trainee wrote after the task started
    min_count: int = 1
    max_count: int | None = None
    when: Search | None = None  # the check applies only if this finds something
    after: tuple[str, ...] = ()  # checks that must pass before this one can be judged
    critical: bool = False  # failing it fails the task whatever the score
    name: str | None = None  # ``as``: later checks may use {name} for the first match ("Type/id")
    cds: CdsCriteria | None = None  # instead of ``search``: what the trainee did with CDS Hooks cards
    hl7: Hl7Criteria | None = None  # instead of ``search``: messages in the sandbox's HL7 v2 message log
    line: int = 0


@dataclass(frozen=True)
class Hint:
    text: str
    cost: float = 0.0


@dataclass(frozen=True)
class Task:
    id: str
    title: str
    role: str
    competencies: tuple[str, ...]
    case: str  # a synthetic training case id; its Patient has that id
    instructions: str
    checks: tuple[Check, ...]
    hints: tuple[Hint, ...] = ()
    time_limit_minutes: int | None = None
    retry: str = "task"
    pack_id: str = ""
    line: int = 0

    @property
    def max_points(self) -> float:
        return sum(c.points for c in self.checks)


@dataclass(frozen=True)
class Pack:
    id: str
    title: str
    threshold: float  # share of the points needed to pass, 0..1
    tasks: tuple[Task, ...]
    path: Path | None = None
    description: str = ""

    def task(self, task_id: str) -> Task | None:
        return next((t for t in self.tasks if t.id == task_id), None)
