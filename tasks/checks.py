"""Running a task's checks against a trainee's sandbox.

A check searches the sandbox with the FHIR API's own search engine, keeps what
this trainee wrote since the task started (``resource_versions`` records the
actor and time of every version), filters with FHIRPath, follows references to
what another search finds, and judges the count.  A ``cds`` check instead counts
CDS Hooks cards shown to the trainee, or accepted or overridden by them, from the
CDS Hooks log of the sandbox, and an ``hl7`` check counts HL7 v2 messages in the
sandbox's message log (parsed with the listener's own ER7 parser).  One run caches its searches:
the same ``when`` or ``refers`` target is searched once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select

from sandbox.cdshooks import log as cds_log
from sandbox.fhir.interactions import Interactions
from sandbox.fhir.outcome import FhirError
from sandbox.fhir.validation import parse_json
from sandbox.hl7v2 import destinations as hl7_destinations
from sandbox.hl7v2 import log as hl7_log
from sandbox.hl7v2.er7 import Message, V2Error
from sandbox.hl7v2.er7 import parse as parse_er7
from sandbox.store.layers import View
from sandbox.store.schema import resource_versions
from tasks.model import CdsCriteria, Check, FhirPath, Hl7Criteria, Hl7Field, Search, Task

PASS, FAIL, NOT_APPLICABLE = "pass", "fail", "not-applicable"
_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.\-]+)\}")
_SEARCH_LIMIT = "1000"


@dataclass(frozen=True)
class CheckResult:
    check_id: str
    title: str
    status: str  # pass, fail, not-applicable
    points: float  # earned
    max_points: float  # what it is worth; 0 when it does not apply to this case
    message: str  # what the engine found, for the trainer and the trainee
    feedback: str = ""  # the pack's words for the trainee, when it failed
    critical: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check_id,
            "title": self.title,
            "status": self.status,
            "points": self.points,
            "max_points": self.max_points,
            "message": self.message,
            "feedback": self.feedback,
            "critical": self.critical,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckResult:
        return cls(
            data["check"],
            data["title"],
            data["status"],
            data["points"],
            data["max_points"],
            data["message"],
            data.get("feedback", ""),
            data.get("critical", False),
        )


@dataclass
class Scope:
    """One check run: the sandbox, the trainee, when the attempt started, the placeholders' values."""

    conn: Connection
    fhir: Interactions
    view: View
    actor_id: str  # the trainee as recorded on writes: "user:<id>"
    started: str  # index form (YYYY-MM-DDTHH:MM:SS.ffffff), as resource_versions.last_updated
    values: dict[str, str]  # placeholder -> value: patient, encounter, task.started, trainee, and named matches
    _searches: dict[tuple[str, tuple[tuple[str, str], ...]], list[dict[str, Any]]] = field(default_factory=dict)
    _authored: set[tuple[str, str]] | None = None

    @property
    def started_instant(self) -> str:
        """The start as a FHIR instant to the microsecond (the index compares at that precision)."""
        return self.started + "Z"

    def authored(self) -> set[tuple[str, str]]:
        """(type, id) of everything this trainee wrote in the sandbox since the attempt started."""
        if self._authored is None:
            v = resource_versions.c
            rows = self.conn.execute(
                select(v.resource_type, v.id)
                .where(v.layer_id == self.view.overlay, v.actor == self.actor_id, v.last_updated >= self.started)
                .distinct()
            ).all()
            self._authored = {(row.resource_type, row.id) for row in rows}
        return self._authored

    def search(self, search: Search, *, since_start: bool = False) -> list[dict[str, Any]]:
        """The search's matches; ``since_start`` keeps only resources last changed since the attempt started,
        in the index (the baseline's history of a case is most of what a patient search would return)."""
        query = tuple((name, self.fill(value)) for name, value in search.query)
        if since_start:
            query += (("_lastUpdated", f"ge{self.started_instant}"),)
        if not any(name == "_count" for name, _ in query):
            query += (("_count", _SEARCH_LIMIT),)
        key = (search.rtype, query)
        found = self._searches.get(key)
        if found is None:
            result = self.fhir.search(self.conn, self.view, search.rtype, list(query))
            found = [parse_json(s.content) for s in result.matches if s.content is not None]
            self._searches[key] = found
        return found

    def fill(self, text: str) -> str:
        return _PLACEHOLDER.sub(lambda m: self.values[m.group(1)], text)

    def missing(self, search: Search) -> list[str]:
        return [m.group(1) for m in _PLACEHOLDER.finditer(search.text) if not self.values.get(m.group(1))]

    def env(self) -> dict[str, Any]:
        env = {k.replace(".", "_"): v for k, v in self.values.items()}
        env["started"] = self.values.get("task.started", "")
        return env


def run_checks(task: Task, scope: Scope) -> list[CheckResult]:
    results: list[CheckResult] = []
    by_id: dict[str, CheckResult] = {}
    for check in task.checks:
        result = _run(check, scope, by_id)
        results.append(result)
        by_id[check.id] = result
    return results


def _run(check: Check, scope: Scope, earlier: dict[str, CheckResult]) -> CheckResult:
    blocked = [name for name in check.after if earlier[name].status != PASS]
    if blocked:
        return _na(check, f"Judged once {', '.join(blocked)} passes", counts=True)
    searches = [*([check.search] if check.search else []), *(r.target for r in check.refers)]
    searches += [check.when] if check.when else []
    missing = sorted({name for s in searches for name in scope.missing(s)})
    if missing:
        return _na(check, f"Needs {', '.join('{' + m + '}' for m in missing)}, not available yet", counts=True)
    try:
        if check.when is not None and not scope.search(check.when):
            return _na(check, "Does not apply to this patient", counts=False)
        if check.cds is not None:
            return _judge_cds(check, check.cds, scope)
        if check.hl7 is not None:
            return _judge_hl7(check, check.hl7, scope)
        assert check.search is not None
        found = scope.search(check.search, since_start=check.by_trainee)
    except FhirError as exc:  # a placeholder value the search refuses (e.g. a malformed id)
        return _judged(check, False, f"The search could not run: {exc}")
    if check.by_trainee:
        authored = scope.authored()
        found = [r for r in found if (r["resourceType"], r["id"]) in authored]
    env = scope.env()
    matching = [r for r in found if all(w.true_for(r, env) for w in check.where)]
    for refers in check.refers:
        targets = {f"{t['resourceType']}/{t['id']}" for t in scope.search(refers.target)}
        matching = [r for r in matching if _points_to(_values(refers.path, r, env), targets)]
    if check.name and matching:
        scope.values[check.name] = f"{matching[0]['resourceType']}/{matching[0]['id']}"
    n = len(matching)
    what = f"{check.search.rtype}" + (" written by you since the task started" if check.by_trainee else "")
    if check.kind == "forbid":
        ids = ", ".join(f"{r['resourceType']}/{r['id']}" for r in matching[:3])
        return _judged(check, n == 0, f"No matching {what}" if n == 0 else f"Found {n} that should not exist: {ids}")
    ok = n >= check.min_count and (check.max_count is None or n <= check.max_count)
    if ok:
        return _judged(check, True, f"Found {n} matching {what}")
    wanted = f"at least {check.min_count}" if check.max_count is None else f"{check.min_count} to {check.max_count}"
    if check.max_count == check.min_count:
        wanted = f"exactly {check.min_count}"
    near = f" ({len(found)} {check.search.rtype} found, {n} meeting every condition)" if found else ""
    return _judged(check, False, f"Expected {wanted} matching {what}, found {n}{near}")


def _judge_cds(check: Check, cds: CdsCriteria, scope: Scope) -> CheckResult:
    """Count what the trainee did with CDS Hooks cards for the task's patient since the attempt started."""
    found = cds_matches(scope, cds)
    n = len(found)
    what = cds.describe() + " since the task started"
    if check.kind == "forbid":
        return _judged(check, n == 0, f"No {what}" if n == 0 else f"Found {n} {what}, which should not happen")
    ok = n >= check.min_count and (check.max_count is None or n <= check.max_count)
    return _judged(check, ok, f"Found {n} {what}" if ok else f"Expected at least {check.min_count} {what}, found {n}")


def cds_matches(scope: Scope, cds: CdsCriteria) -> list[str]:
    """The cards (``call/key``) that meet the criteria: shown to this trainee, or decided by them as asked."""
    patient = scope.values.get("patient", "").removeprefix("Patient/") or None
    layer = scope.view.overlay

    def service_matches(registration: str | None, service: str | None) -> bool:
        return any(s == service or s == f"{registration}/{service}" for s in cds.services)

    def indicator_matches(indicator: str) -> bool:
        return cds.indicator is None or indicator == cds.indicator

    if cds.outcome == "shown":
        calls = cds_log.hook_calls_since(
            scope.conn, layer, actor=scope.actor_id, since=scope.started, patient_id=patient
        )
        return [
            f"{c.id}/{card['key']}"
            for c in calls
            if service_matches(c.registration_id, c.service_id)
            for card in c.cards
            if indicator_matches(card["indicator"])
        ]
    decided = cds_log.decisions(scope.conn, layer, actor=scope.actor_id, since=scope.started, patient_id=patient)
    return [
        f"{d.call_id}/{d.card_key}"
        for d in decided
        if d.outcome == cds.outcome
        and service_matches(d.registration_id, d.service_id)
        and indicator_matches(d.indicator)
        and (cds.reason is None or d.has_reason == cds.reason)
        and (cds.reason_code is None or ((d.override_reason or {}).get("reason") or {}).get("code") == cds.reason_code)
    ]


def _judge_hl7(check: Check, hl7: Hl7Criteria, scope: Scope) -> CheckResult:
    """Count the messages in the sandbox's HL7 v2 log since the attempt started that meet the criteria."""
    found = hl7_matches(scope, hl7, by_trainee=check.by_trainee)
    n = len(found)
    what = hl7.describe() + (" sent for your writes" if check.by_trainee else "") + " since the task started"
    if check.kind == "forbid":
        ids = ", ".join(found[:3])
        return _judged(check, n == 0, f"No {what}" if n == 0 else f"Found {n} {what}, which should not happen: {ids}")
    ok = n >= check.min_count and (check.max_count is None or n <= check.max_count)
    if ok:
        return _judged(check, True, f"Found {n} {what}")
    wanted = f"at least {check.min_count}" if check.max_count is None else f"{check.min_count} to {check.max_count}"
    return _judged(check, False, f"Expected {wanted} {what}, found {n}" + _undeliverable(scope, hl7))


def _undeliverable(scope: Scope, hl7: Hl7Criteria) -> str:
    """Why an outbound message cannot have been sent, when that is why: no enabled destination of the sandbox
    takes its type.  Nothing the trainee does in the chart mends that, so the check says who can."""
    if hl7.direction != "outbound":
        return ""
    sandbox_id = scope.view.overlay
    for d in hl7_destinations.listing(scope.conn, sandbox_id):
        if d.enabled and (hl7.message_type is None or hl7.message_type in d.message_types):
            return ""
    return (
        f"; this sandbox has no HL7 v2 destination that takes {hl7.message_type or 'outbound messages'}, so nothing"
        f" is sent: your trainer adds one with PUT /sandboxes/{sandbox_id}/hl7v2/destinations/{{name}}"
    )


def hl7_matches(scope: Scope, hl7: Hl7Criteria, *, by_trainee: bool = False) -> list[str]:
    """The control ids (MSH-10) of the logged messages that meet the criteria.  The log is the sandbox's own
    (its overlay layer), so another sandbox's messages never count; a message logged before the attempt
    started does not either.  ``by_trainee`` keeps the outbound messages sent for a resource this trainee wrote
    since the attempt started (the log names the version a message was built from): in a sandbox a cohort
    shares, another trainee's order is not yours."""
    entries = hl7_log.since(
        scope.conn, scope.view.overlay, scope.started, direction=hl7.direction, message_type=hl7.message_type
    )
    authored = scope.authored() if by_trainee else set()
    matched = []
    for entry in entries:
        if by_trainee and not any(_source(r) in authored for r in entry.resources):
            continue
        if hl7.status is not None and entry.status != hl7.status:
            continue
        if hl7.ack_code is not None and entry.ack_code != hl7.ack_code:
            continue
        if hl7.fields:
            try:
                message = parse_er7(entry.content)
            except V2Error:  # garbage logged as it came in holds no fields
                continue
            if not all(_holds(message, f) for f in hl7.fields):
                continue
        matched.append(entry.control_id or entry.id)
    return matched


def _source(reference: str) -> tuple[str, str]:
    """``ServiceRequest/1/_history/2`` -> ``("ServiceRequest", "1")``."""
    rtype, _, rest = reference.partition("/")
    return rtype, rest.split("/", 1)[0]


def _holds(message: Message, wanted: Hl7Field) -> bool:
    """Some segment of that name has the value in some repetition of the field."""
    for segment in message.all(wanted.segment):
        repetitions = max(1, len(segment.repetitions(wanted.field)))
        for n in range(repetitions):
            if segment.get(wanted.field, wanted.component, wanted.subcomponent, n) == wanted.value:
                return True
    return False


def _values(path: FhirPath, resource: dict[str, Any], env: dict[str, Any]) -> list[Any]:
    try:
        return path.run(resource, env)
    except Exception:  # fhirpathpy raises bare Exceptions on what it cannot evaluate
        return []


def _points_to(values: list[Any], targets: set[str]) -> bool:
    for value in values:
        reference = value.get("reference") if isinstance(value, dict) else value
        if isinstance(reference, str) and _local(reference) in targets:
            return True
    return False


def _local(reference: str) -> str:
    """``http://host/fhir/Condition/1/_history/2`` -> ``Condition/1``."""
    parts = reference.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    return "/".join(parts[-2:])


def _judged(check: Check, ok: bool, message: str) -> CheckResult:
    return CheckResult(
        check.id,
        check.title,
        PASS if ok else FAIL,
        check.points if ok else 0.0,
        check.points,
        message,
        "" if ok else check.feedback,
        check.critical,
    )


def _na(check: Check, message: str, *, counts: bool) -> CheckResult:
    return CheckResult(
        check.id, check.title, NOT_APPLICABLE, 0.0, check.points if counts else 0.0, message, "", check.critical
    )
