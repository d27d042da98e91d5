"""Running one bulk export: read what the job asks for through the sandbox's View, store NDJSON parts.

What is read, by level:

- system: every resource the sandbox sees (``sandboxes.visible_contents``, as the admin export reads);
- patient: the Patient compartment of every patient the sandbox sees, or of the ``patient`` parameter's;
- group: the compartments of the Group's member patients.

Compartments come from the search index (``fhir.compartment``, as ``$everything`` reads them).  Every
read keeps resources last changed after ``_since`` and at or before the job's transaction time, so a
write that lands while the export runs is in the next export, not half in this one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, Connection, and_, bindparam, or_, select

from sandbox.bulk import jobs
from sandbox.bulk.jobs import Job, OutputFile
from sandbox.fhir.compartment import compartment_members
from sandbox.fhir.criteria import criteria_plan
from sandbox.fhir.outcome import FhirError, Issue, operation_outcome
from sandbox.fhir.search_sql import plan_conditions, visible
from sandbox.fhir.validation import dump_json, parse_json
from sandbox.store.database import Database
from sandbox.store.layers import UnknownSandbox, View, resolve_view
from sandbox.store.repository import Repository
from sandbox.store.sandboxes import ndjson_line, visible_contents
from sandbox.store.schema import resources

_log = logging.getLogger("ehr_sandbox.bulk")

PART_LINES = 500  # resources per stored part: one small write transaction each
PATIENT_CHUNK = 200  # patients per compartment query (the list is bound once in each compartment branch)


@dataclass
class _Output:
    """The NDJSON files being written: one per resource type, in parts."""

    db: Database
    job: Job
    worker_id: str
    part_lines: int
    files: dict[str, OutputFile] = field(default_factory=dict)
    buffers: dict[str, list[bytes]] = field(default_factory=dict)
    parts: dict[str, int] = field(default_factory=dict)
    written: int = 0

    def add(self, rtype: str, line: bytes) -> None:
        buffer = self.buffers.setdefault(rtype, [])
        buffer.append(line)
        if len(buffer) >= self.part_lines:
            self.flush(rtype)

    def flush(self, rtype: str) -> None:
        lines = self.buffers.pop(rtype, [])
        if not lines:
            return
        found = self.files.get(rtype)
        if found is None:
            found = OutputFile(len(self.files) + 1, rtype, 0)
        part_no = self.parts.get(rtype, 0)
        self.written += len(lines)
        with self.db.write() as conn:
            jobs.renew(conn, self.job, self.worker_id, f"{self.written} resources written")
            jobs.store_part(conn, self.job, found.file_no, part_no, b"".join(lines))
        self.parts[rtype] = part_no + 1
        self.files[rtype] = OutputFile(found.file_no, rtype, found.count + len(lines))

    def close(self) -> list[OutputFile]:
        for rtype in list(self.buffers):
            self.flush(rtype)
        return sorted(self.files.values(), key=lambda f: f.file_no)


def run(db: Database, repo: Repository, job: Job, worker_id: str, *, part_lines: int = PART_LINES) -> None:
    """Run a claimed job to completion (or failure); ``jobs.Cancelled`` ends it quietly."""
    output = _Output(db, job, worker_id, part_lines)
    try:
        issues = _export(db, repo, job, output)
        if issues:
            # The manifest's `error` files hold OperationOutcomes: one per problem that did not stop the export.
            for issue in issues:
                output.add("OperationOutcome", dump_json(operation_outcome([issue])) + b"\n")
        jobs.complete(db, job, worker_id, output.close())
    except jobs.Cancelled:
        _log.info("bulk export %s/%s was cancelled or taken over", job.sandbox_id, job.id)
    except FhirError as error:  # the request cannot be answered (its Group is gone, ...): no point retrying
        jobs.fail(db, job, worker_id, "; ".join(i.diagnostics for i in error.issues))
    except Exception as exc:  # a bug or a database hiccup: try again, a few times
        _log.exception("bulk export %s/%s", job.sandbox_id, job.id)
        jobs.fail(db, job, worker_id, f"The export failed: {type(exc).__name__}: {exc}", final=False)


def _export(db: Database, repo: Repository, job: Job, output: _Output) -> list[Issue]:
    assert job.transaction_time is not None
    with db.read() as conn:
        try:
            view = resolve_view(conn, job.sandbox_id)
        except UnknownSandbox:
            raise jobs.Cancelled(job.id) from None
        condition = _type_filters(view, job.type_filters)
        if job.level == "system":
            rows: Iterator[tuple[str, str, bytes]] = visible_contents(
                conn, view, types=job.types, since=job.since, until=job.transaction_time, condition=condition
            )
            for rtype, _rid, content in rows:
                output.add(rtype, ndjson_line(content))
            return []
        issues: list[Issue] = []
        if job.level == "group":
            assert job.group_id is not None
            patients, issues = _group_members(conn, repo, view, job.group_id)
            if job.patients is not None:
                patients = [p for p in patients if p in set(job.patients)]
        elif job.patients is not None:
            patients = list(job.patients)
        else:
            p = resources
            patients = list(conn.execute(select(p.c.id).where(visible(view, "Patient", p)).order_by(p.c.id)).scalars())
        if job.level == "group" or job.patients is not None:
            known = set(repo.current_many(conn, view, [("Patient", p) for p in patients]))
            for pid in patients:
                if ("Patient", pid) not in known:
                    issues.append(Issue("not-found", f"Patient/{pid} is not known; it is left out", "warning"))
            patients = [p for p in patients if ("Patient", p) in known]
        _compartments(conn, view, job, patients, condition, output)
        return issues


def _type_filters(view: View, searches: tuple[str, ...] | None) -> ColumnElement[bool] | None:
    """``_typeFilter``: a resource of a filtered type must match one of its type's searches (the search
    engine's own conditions, on ``resources``); types without a filter pass as they are."""
    if not searches:
        return None
    r = resources
    plans: dict[str, list[ColumnElement[bool]]] = {}
    for search in searches:
        rtype, plan = criteria_plan(search)
        plans.setdefault(rtype, []).append(and_(*plan_conditions(view, plan, r=r)))
    matching = [condition for conditions in plans.values() for condition in conditions]
    return or_(r.c.resource_type.not_in(list(plans)), *matching)


def _group_members(conn: Connection, repo: Repository, view: View, group_id: str) -> tuple[list[str], list[Issue]]:
    """The Group's member patients (``member.entity``), as the sandbox sees the Group now; inactive ones left out."""
    stored = repo.current(conn, view, "Group", group_id)
    if stored is None or stored.deleted or stored.content is None:
        raise FhirError.of(404, "not-found", f"Group/{group_id} is not known (deleted since the kick-off?)")
    members: list[str] = []
    issues: list[Issue] = []
    for n, member in enumerate(parse_json(stored.content).get("member", [])):
        if member.get("inactive") is True:
            continue
        reference = str(member.get("entity", {}).get("reference", ""))
        rtype, _, rid = reference.rpartition("/")
        if rtype.rpartition("/")[2] != "Patient" or not rid:
            issues.append(
                Issue(
                    "not-supported",
                    f"Group/{group_id} member '{reference}' is not a Patient reference; it is left out",
                    "warning",
                    f"Group.member[{n}].entity",
                )
            )
            continue
        if rid not in members:
            members.append(rid)
    return members, issues


def _compartments(
    conn: Connection,
    view: View,
    job: Job,
    patients: list[str],
    condition: ColumnElement[bool] | None,
    output: _Output,
) -> None:
    """The compartments of ``patients``, each resource once, a chunk of patients per query.

    Naming the patients beat a subquery of every visible patient inside each compartment branch
    four times over on SQLite (``bench/bulk_export.py``).
    """
    types = frozenset(job.types) if job.types else None
    chunks = [patients[i : i + PATIENT_CHUNK] for i in range(0, len(patients), PATIENT_CHUNK)]
    members = compartment_members(view, types, bindparam("pids", expanding=True))
    if members is None:
        return
    m = members.subquery("members")
    r = resources
    where = [visible(view, None, r), r.c.last_updated <= job.transaction_time]
    if job.since is not None:
        where.append(r.c.last_updated > job.since)
    if condition is not None:
        where.append(condition)
    query = (
        select(r.c.resource_type, r.c.id, r.c.content)
        .select_from(
            r.join(m, and_(r.c.layer_id == m.c.layer_id, r.c.resource_type == m.c.resource_type, r.c.id == m.c.id))
        )
        .where(*where)
        .order_by(r.c.resource_type, r.c.id)
    )
    seen: set[tuple[str, str]] = set()  # a resource in two members' compartments goes out once
    for chunk in chunks:
        for row in conn.execute(query.execution_options(yield_per=500), {"pids": chunk}):
            key = (row.resource_type, row.id)
            if key in seen:
                continue
            if len(chunks) > 1:
                seen.add(key)
            output.add(row.resource_type, ndjson_line(row.content))
