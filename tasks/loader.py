"""Task packs from YAML, validated on load: every error names the file, the line and the field at fault.

Searches are parsed by the same search-plan parser the FHIR API uses (strictly:
an unknown parameter is an error here, not a warning), with sample values in
place of the placeholders; FHIRPath is compiled once and tried on an empty
resource of the searched type, which catches unknown functions and wrong arity.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import fhirpathpy
from fhirpathpy.models import models

from sandbox.fhir.outcome import FhirError
from sandbox.fhir.search_params import registry
from sandbox.fhir.search_plan import parse as parse_search
from sandbox.hl7v2.log import STATUSES as HL7_STATUSES
from tasks.located_yaml import LocatedDict, LocatedList, YamlSyntaxError, load_located
from tasks.model import (
    BUILTIN_PLACEHOLDERS,
    CDS_OUTCOMES,
    HL7_DIRECTIONS,
    RETRY_SCOPES,
    ROLES,
    CdsCriteria,
    Check,
    FhirPath,
    Hint,
    Hl7Criteria,
    Hl7Field,
    Pack,
    Refers,
    Search,
    Task,
)
from tasks.timing import MAX_TIME_LIMIT_MINUTES

R4 = models["r4"]
PACKS_DIR = Path(__file__).parent / "packs"
_ID = re.compile(r"^[a-z0-9][a-z0-9\-]{0,63}$")
_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.\-]+)\}")
_SAMPLES = {"patient": "Patient/sample", "encounter": "Encounter/sample", "task.started": "2026-01-01T00:00:00Z"}

_PACK_FIELDS = {"pack", "title", "description", "threshold", "tasks"}
_TASK_FIELDS = {
    "id", "title", "role", "competencies", "case", "instructions", "hints", "time_limit", "retry", "checks",
}  # fmt: skip
_CHECK_FIELDS = {
    "id", "title", "points", "feedback", "search", "forbid", "where", "refers", "by_trainee", "count", "when",
    "after", "critical", "as", "cds", "hl7",
}  # fmt: skip
# A check on CDS Hooks cards has ``cds`` instead of ``search`` and none of the fields that judge resources.
_CDS_CHECK_FIELDS = {"id", "title", "points", "feedback", "cds", "forbid", "count", "when", "after", "critical"}
_CDS_FIELDS = {"service", "outcome", "indicator", "reason", "reason_code"}
# A check on HL7 v2 messages likewise has ``hl7`` instead of ``search``.
_HL7_CHECK_FIELDS = {
    "id", "title", "points", "feedback", "hl7", "forbid", "count", "when", "after", "critical", "by_trainee",
}  # fmt: skip
_HL7_FIELDS = {"direction", "type", "status", "ack", "fields"}
_HL7_TYPE = re.compile(r"^[A-Z][A-Z0-9]{2}\^[A-Z][A-Z0-9]{2}$")
_HL7_PATH = re.compile(r"^([A-Z][A-Z0-9]{2})-([1-9][0-9]{0,2})(?:\.([1-9][0-9]?))?(?:\.([1-9][0-9]?))?$")
_ACK_CODES = ("AA", "AE", "AR", "CA", "CE", "CR")
_INDICATORS = ("info", "warning", "critical")


class PackError(ValueError):
    """A pack that cannot be used, and where: ``file:line: field: message``."""

    def __init__(self, source: str, line: int, field: str, message: str) -> None:
        super().__init__(f"{source}:{line}: {field}: {message}")
        self.source = source
        self.line = line
        self.field = field
        self.message = message


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, line: int, field: str, message: str) -> PackError:
        return PackError(self.source, line, field, message)

    def mapping(self, value: Any, line: int, field: str, allowed: set[str]) -> LocatedDict:
        if not isinstance(value, LocatedDict):
            raise self.fail(line, field, "expected a mapping of fields")
        for key in value:
            if key not in allowed:
                raise self.fail(
                    value.key_lines[key], f"{field}.{key}", f"unknown field (allowed: {', '.join(sorted(allowed))})"
                )
        return value

    def get(
        self, data: LocatedDict, key: str, field: str, kind: type | tuple[type, ...], *, required: bool = True
    ) -> Any:
        if key not in data:
            if required:
                raise self.fail(data.line, f"{field}.{key}", "is required")
            return None
        value = data[key]
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            raise self.fail(data.key_lines[key], f"{field}.{key}", "expected a number, not true/false")
        if not isinstance(value, kind):
            name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.fail(data.key_lines[key], f"{field}.{key}", f"expected {_article(name)}, got {value!r}")
        if isinstance(value, str) and not value.strip():
            raise self.fail(data.key_lines[key], f"{field}.{key}", "must not be empty")
        return value

    def line_of(self, data: LocatedDict, key: str) -> int:
        return data.key_lines.get(key, data.line)


def _article(name: str) -> str:
    names = {"str": "a string", "int": "a whole number", "float": "a number", "bool": "true or false"}
    names |= {"LocatedList": "a list", "LocatedDict": "a mapping", "int or float": "a number"}
    return names.get(name, name)


def load_pack_file(path: Path) -> Pack:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PackError(str(path), 0, "file", exc.strerror or str(exc)) from None
    except UnicodeDecodeError:
        raise PackError(str(path), 0, "file", "is not UTF-8 text") from None
    return load_pack(text, str(path), path=path)


def load_pack(text: str, source: str = "pack", *, path: Path | None = None) -> Pack:
    r = _Reader(source)
    try:
        data = load_located(text)
    except YamlSyntaxError as exc:
        raise r.fail(exc.line, "yaml", str(exc)) from None
    data = r.mapping(data, 1, "pack", _PACK_FIELDS)
    pack_id = _ident(r, data, "pack", "pack")
    title = r.get(data, "title", "pack", str)
    threshold = r.get(data, "threshold", "pack", (int, float))
    if not 0 < threshold <= 1:
        raise r.fail(
            r.line_of(data, "threshold"), "pack.threshold", "must be a share of the points, above 0 and at most 1"
        )
    description = r.get(data, "description", "pack", str, required=False) or ""
    items = r.get(data, "tasks", "pack", LocatedList)
    if not items:
        raise r.fail(r.line_of(data, "tasks"), "pack.tasks", "a pack needs at least one task")
    tasks: list[Task] = []
    seen: set[str] = set()
    for n, item in enumerate(items):
        task = _task(r, item, items.item_lines[n], f"tasks[{n}]", pack_id)
        if task.id in seen:
            raise r.fail(task.line, f"tasks[{n}].id", f"the task id '{task.id}' is used twice in this pack")
        seen.add(task.id)
        tasks.append(task)
    return Pack(pack_id, title, float(threshold), tuple(tasks), path, description)


def _ident(r: _Reader, data: LocatedDict, key: str, field: str) -> str:
    value = r.get(data, key, field, str)
    if not _ID.match(value):
        raise r.fail(r.line_of(data, key), f"{field}.{key}", f"'{value}' is not an id (lower-case letters, digits, -)")
    return value


def _task(r: _Reader, item: Any, line: int, field: str, pack_id: str) -> Task:
    data = r.mapping(item, line, field, _TASK_FIELDS)
    task_id = _ident(r, data, "id", field)
    field = f"tasks[{task_id}]"
    role = r.get(data, "role", field, str)
    if role not in ROLES:
        raise r.fail(r.line_of(data, "role"), f"{field}.role", f"'{role}' is not a role ({', '.join(ROLES)})")
    competencies = r.get(data, "competencies", field, LocatedList)
    if not competencies or not all(isinstance(c, str) and c.strip() for c in competencies):
        raise r.fail(r.line_of(data, "competencies"), f"{field}.competencies", "a list of one or more tags")
    case = _ident(r, data, "case", field)
    hints = []
    for n, hint in enumerate(r.get(data, "hints", field, LocatedList, required=False) or []):
        hline = data["hints"].item_lines[n]
        if isinstance(hint, str):
            hints.append(Hint(hint))
            continue
        h = r.mapping(hint, hline, f"{field}.hints[{n}]", {"text", "cost"})
        cost = r.get(h, "cost", f"{field}.hints[{n}]", (int, float), required=False) or 0
        if cost < 0:
            raise r.fail(r.line_of(h, "cost"), f"{field}.hints[{n}].cost", "a hint's cost is not negative")
        hints.append(Hint(r.get(h, "text", f"{field}.hints[{n}]", str), float(cost)))
    time_limit = r.get(data, "time_limit", field, int, required=False)
    if time_limit is not None and not 0 < time_limit <= MAX_TIME_LIMIT_MINUTES:
        raise r.fail(
            r.line_of(data, "time_limit"),
            f"{field}.time_limit",
            f"whole minutes, above 0 and at most {MAX_TIME_LIMIT_MINUTES} (a day)",
        )
    retry = r.get(data, "retry", field, str, required=False) or "task"
    if retry not in RETRY_SCOPES:
        raise r.fail(r.line_of(data, "retry"), f"{field}.retry", f"'{retry}' is not one of {', '.join(RETRY_SCOPES)}")
    items = r.get(data, "checks", field, LocatedList)
    if not items:
        raise r.fail(r.line_of(data, "checks"), f"{field}.checks", "a task needs at least one check")
    checks: list[Check] = []
    names: set[str] = set(BUILTIN_PLACEHOLDERS)
    for n, raw in enumerate(items):
        check = _check(r, raw, items.item_lines[n], f"{field}.checks[{n}]", names, {c.id for c in checks})
        checks.append(check)
        if check.name:
            names.add(check.name)
    return Task(
        id=task_id,
        title=r.get(data, "title", field, str),
        role=role,
        competencies=tuple(c.strip() for c in competencies),
        case=case,
        instructions=r.get(data, "instructions", field, str).strip(),
        checks=tuple(checks),
        hints=tuple(hints),
        time_limit_minutes=time_limit,
        retry=retry,
        pack_id=pack_id,
        line=line,
    )


def _check(r: _Reader, raw: Any, line: int, field: str, names: set[str], earlier: set[str]) -> Check:
    data = r.mapping(raw, line, field, _CHECK_FIELDS)
    check_id = _ident(r, data, "id", field)
    if check_id in earlier:
        raise r.fail(r.line_of(data, "id"), f"{field}.id", f"the check id '{check_id}' is used twice in this task")
    field = f"{field.rsplit('.', 1)[0]}.checks[{check_id}]"
    points = r.get(data, "points", field, (int, float))
    if points <= 0:
        raise r.fail(r.line_of(data, "points"), f"{field}.points", "must be above 0")
    cds = hl7 = None
    if "cds" in data and "hl7" in data:
        both = "a check judges CDS Hooks cards or HL7 v2 messages, not both"
        raise r.fail(r.line_of(data, "hl7"), f"{field}.hl7", both)
    if "cds" in data:
        r.mapping(data, line, field, _CDS_CHECK_FIELDS)  # a cds check judges cards, not resources
        cds = _cds(r, data["cds"], r.line_of(data, "cds"), f"{field}.cds")
        search = None
    elif "hl7" in data:
        r.mapping(data, line, field, _HL7_CHECK_FIELDS)  # an hl7 check judges logged messages, not resources
        hl7 = _hl7(r, data["hl7"], r.line_of(data, "hl7"), f"{field}.hl7")
        search = None
    else:
        search = _search(r, r.get(data, "search", field, str), r.line_of(data, "search"), f"{field}.search", names)
    where_raw = data.get("where")
    if isinstance(where_raw, str):
        where_raw = [where_raw]
    if where_raw is not None and not (isinstance(where_raw, list) and all(isinstance(w, str) for w in where_raw)):
        raise r.fail(r.line_of(data, "where"), f"{field}.where", "a FHIRPath expression or a list of them")
    where = tuple(
        _fhirpath(r, w, r.line_of(data, "where"), f"{field}.where", search.rtype, names)  # type: ignore[union-attr]
        for w in where_raw or []
    )
    refers = []
    for n, item in enumerate(r.get(data, "refers", field, LocatedList, required=False) or []):
        rfield = f"{field}.refers[{n}]"
        ref = r.mapping(item, data["refers"].item_lines[n], rfield, {"path", "target"})
        path = _fhirpath(
            r,
            r.get(ref, "path", rfield, str),
            r.line_of(ref, "path"),
            f"{rfield}.path",
            search.rtype,
            names,  # type: ignore[union-attr]
        )
        target = _search(r, r.get(ref, "target", rfield, str), r.line_of(ref, "target"), f"{rfield}.target", names)
        refers.append(Refers(path, target))
    min_count, max_count = 1, None
    if "count" in data:
        count = r.mapping(data["count"], r.line_of(data, "count"), f"{field}.count", {"min", "max"})
        min_count = r.get(count, "min", f"{field}.count", int, required=False)
        max_count = r.get(count, "max", f"{field}.count", int, required=False)
        min_count = 1 if min_count is None else min_count
        if min_count < 0 or (max_count is not None and max_count < min_count):
            raise r.fail(r.line_of(data, "count"), f"{field}.count", "needs 0 <= min <= max")
    forbid = r.get(data, "forbid", field, bool, required=False) or False
    if forbid and "count" in data:
        raise r.fail(r.line_of(data, "count"), f"{field}.count", "a forbid check allows no match: count does not apply")
    when_text = r.get(data, "when", field, str, required=False)
    when = _search(r, when_text, r.line_of(data, "when"), f"{field}.when", names) if when_text else None
    after = r.get(data, "after", field, LocatedList, required=False) or []
    for name in after:
        if name not in earlier:
            raise r.fail(r.line_of(data, "after"), f"{field}.after", f"'{name}' is not an earlier check of this task")
    name = r.get(data, "as", field, str, required=False)
    if name is not None and (name in names or not re.match(r"^[a-z][a-z0-9\-]*$", name)):
        raise r.fail(r.line_of(data, "as"), f"{field}.as", f"'{name}' is taken or not a name (a-z, 0-9, -)")
    return Check(
        id=check_id,
        title=r.get(data, "title", field, str),
        points=float(points),
        feedback=r.get(data, "feedback", field, str).strip(),
        kind="forbid" if forbid else "require",
        search=search,
        where=where,
        refers=tuple(refers),
        by_trainee=_by_trainee(r, data, field, hl7),
        min_count=0 if forbid else min_count,
        max_count=0 if forbid else max_count,
        when=when,
        after=tuple(after),
        critical=r.get(data, "critical", field, bool, required=False) or False,
        name=name,
        cds=cds,
        hl7=hl7,
        line=line,
    )


def _cds(r: _Reader, raw: Any, line: int, field: str) -> CdsCriteria:
    data = r.mapping(raw, line, field, _CDS_FIELDS)
    service = data.get("service")
    services = [service] if isinstance(service, str) else service
    if not isinstance(services, list) or not services or not all(_service_ref(s) for s in services):
        raise r.fail(
            r.line_of(data, "service"), f"{field}.service", "a CDS service id (or registration/id), or a list of them"
        )
    outcome = r.get(data, "outcome", field, str, required=False) or "shown"
    if outcome not in CDS_OUTCOMES:
        raise r.fail(
            r.line_of(data, "outcome"), f"{field}.outcome", f"'{outcome}' is not one of {', '.join(CDS_OUTCOMES)}"
        )
    indicator = r.get(data, "indicator", field, str, required=False)
    if indicator is not None and indicator not in _INDICATORS:
        raise r.fail(
            r.line_of(data, "indicator"), f"{field}.indicator", f"'{indicator}' is not one of {', '.join(_INDICATORS)}"
        )
    reason = r.get(data, "reason", field, bool, required=False)
    reason_code = r.get(data, "reason_code", field, str, required=False)
    if (reason is not None or reason_code is not None) and outcome != "overridden":
        key = "reason" if reason is not None else "reason_code"
        raise r.fail(r.line_of(data, key), f"{field}.{key}", "only an overridden card has a reason")
    if reason is False and reason_code is not None:
        raise r.fail(r.line_of(data, "reason_code"), f"{field}.reason_code", "contradicts reason: false")
    return CdsCriteria(tuple(services), outcome, indicator, reason, reason_code)


def _hl7(r: _Reader, raw: Any, line: int, field: str) -> Hl7Criteria:
    data = r.mapping(raw, line, field, _HL7_FIELDS)
    direction = r.get(data, "direction", field, str, required=False) or "outbound"
    if direction not in HL7_DIRECTIONS:
        known = ", ".join(HL7_DIRECTIONS)
        raise r.fail(r.line_of(data, "direction"), f"{field}.direction", f"'{direction}' is not one of {known}")
    message_type = r.get(data, "type", field, str, required=False)
    if message_type is not None and not _HL7_TYPE.match(message_type):
        wanted = "is not a message type (MSH-9.1^MSH-9.2, e.g. ORM^O01)"
        raise r.fail(r.line_of(data, "type"), f"{field}.type", f"'{message_type}' {wanted}")
    status = r.get(data, "status", field, str, required=False)
    if status is not None and status not in HL7_STATUSES[direction]:
        allowed = ", ".join(HL7_STATUSES[direction])
        wanted = f"is not a status of {direction} messages ({allowed})"
        raise r.fail(r.line_of(data, "status"), f"{field}.status", f"'{status}' {wanted}")
    ack = r.get(data, "ack", field, str, required=False)
    if ack is not None and ack not in _ACK_CODES:
        raise r.fail(r.line_of(data, "ack"), f"{field}.ack", f"'{ack}' is not an ACK code ({', '.join(_ACK_CODES)})")
    fields = []
    raw_fields = r.get(data, "fields", field, LocatedDict, required=False)
    if raw_fields is not None and not raw_fields:
        raise r.fail(r.line_of(data, "fields"), f"{field}.fields", "name at least one field, or leave fields out")
    for path, value in (raw_fields or {}).items():
        where = raw_fields.key_lines.get(path, raw_fields.line)  # type: ignore[union-attr]
        match = _HL7_PATH.match(str(path))
        if match is None:
            raise r.fail(
                where, f"{field}.fields.{path}", "not a field path (SEG-field[.component[.subcomponent]]: OBR-4.1)"
            )
        if match.group(1) == "MSH" and int(match.group(2)) <= 2:
            raise r.fail(where, f"{field}.fields.{path}", "MSH-1 and MSH-2 are the separators, not data")
        if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
            # A YAML number such as 7.90 would be compared as 7.9: the message holds text, so quote it.
            raise r.fail(where, f"{field}.fields.{path}", f"expected the value as text (quote it), got {value!r}")
        segment, number, component, sub = match.groups()
        fields.append(Hl7Field(str(path), segment, int(number), int(component or 1), int(sub or 1), str(value).strip()))
    return Hl7Criteria(direction, message_type, status, ack, tuple(fields))


def _by_trainee(r: _Reader, data: LocatedDict, field: str, hl7: Hl7Criteria | None) -> bool:
    """Default true; an inbound message is no trainee's write, so an inbound hl7 check cannot ask for one."""
    given = r.get(data, "by_trainee", field, bool, required=False)
    if hl7 is not None and hl7.direction == "inbound":
        if given:
            raise r.fail(
                r.line_of(data, "by_trainee"), f"{field}.by_trainee", "an inbound message is not written by a trainee"
            )
        return False
    return given is not False


def _service_ref(value: Any) -> bool:
    return isinstance(value, str) and 0 < value.count("/") + 1 <= 2 and all(p.strip() for p in value.split("/"))


def _search(r: _Reader, text: str, line: int, field: str, names: set[str]) -> Search:
    rtype, _, query_text = text.strip().partition("?")
    query = tuple(parse_qsl(query_text, keep_blank_values=True))
    for used in _placeholders(text):
        if used not in names:
            raise r.fail(line, field, f"unknown placeholder {{{used}}} (known here: {', '.join(sorted(names))})")
    sample = [(k, _PLACEHOLDER.sub(lambda m: _SAMPLES.get(m.group(1), "Basic/sample"), v)) for k, v in query]
    try:
        parse_search(registry(), rtype, sample, strict=True)
    except FhirError as exc:
        raise r.fail(line, field, f"'{text}': {_fhir_message(exc)}") from None
    return Search(text.strip(), rtype, query)


def _fhir_message(exc: FhirError) -> str:
    return "; ".join(issue.diagnostics for issue in exc.issues) or str(exc)


def _placeholders(text: str) -> Iterator[str]:
    for match in _PLACEHOLDER.finditer(text):
        yield match.group(1)


def _fhirpath(r: _Reader, text: str, line: int, field: str, rtype: str, names: set[str]) -> FhirPath:
    env = {name.replace(".", "_"): _SAMPLES.get(name, "Basic/sample") for name in names}
    env["started"] = _SAMPLES["task.started"]
    try:
        compiled = fhirpathpy.compile(text, R4)
        compiled({"resourceType": rtype}, env)
    except Exception as exc:  # fhirpathpy raises bare Exceptions for syntax and arity
        raise r.fail(line, field, f"FHIRPath '{text}' does not work: {exc}") from None
    return FhirPath(text, compiled)


def builtin_pack_paths() -> list[Path]:
    return sorted(PACKS_DIR.glob("*.yaml"))


def builtin_packs() -> list[Pack]:
    return [load_pack_file(path) for path in builtin_pack_paths()]
