"""Bulk export jobs in the database: created at kick-off, claimed by a worker, polled, served, cancelled.

Everything about a job lives in three tables (``schema.bulk_export_*``), so any
worker on any host answers a status request or serves a file, whoever ran the
export.  A worker claims a job with a lease and renews it each time it stores a
part of the output; the renewal is a conditional UPDATE on the job row, so a
job cancelled (deleted) or reset away under a running export makes the next
renewal find nothing, and that export stops and rolls its part back.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, insert, or_, select, update

from sandbox.store.database import Database
from sandbox.store.schema import bulk_export_files, bulk_export_jobs, bulk_export_parts

RETENTION = timedelta(hours=24)  # a finished job and its files are deleted this long after it finished
LEASE = timedelta(minutes=5)  # renewed at every stored part; a dead worker's job is taken over after this
MAX_ATTEMPTS = 3  # runs that crashed (not a bad request) before the job is marked failed
_FMT = "%Y-%m-%dT%H:%M:%S.%f"


def now() -> str:
    return datetime.now(UTC).replace(tzinfo=None).strftime(_FMT)


def _later(delta: timedelta) -> str:
    return (datetime.now(UTC).replace(tzinfo=None) + delta).strftime(_FMT)


@dataclass(frozen=True)
class Job:
    sandbox_id: str
    id: str
    level: str  # system, patient, group
    group_id: str | None
    patients: tuple[str, ...] | None  # the `patient` parameter's ids
    types: tuple[str, ...] | None
    type_filters: tuple[str, ...] | None  # _typeFilter searches, Type?query
    since: str | None  # index form
    output_format: str
    request_url: str
    actor: str
    requires_token: bool
    status: str  # queued, running, completed, failed
    transaction_time: str | None
    finished_at: str | None
    progress: str | None
    error: str | None
    attempts: int
    created_at: str


@dataclass(frozen=True)
class OutputFile:
    file_no: int
    resource_type: str
    count: int


class Cancelled(Exception):
    """The job is gone (cancelled, or its sandbox reset or deleted) or another worker took it over."""


def create(
    conn: Connection,
    sandbox_id: str,
    *,
    level: str,
    group_id: str | None,
    patients: list[str] | None,
    types: list[str] | None,
    since: str | None,
    output_format: str,
    type_filters: list[str] | None = None,
    request_url: str,
    actor: str,
    requires_token: bool,
) -> str:
    job_id = uuid.uuid4().hex
    conn.execute(
        insert(bulk_export_jobs).values(
            layer_id=sandbox_id,
            id=job_id,
            level=level,
            group_id=group_id,
            patients=json.dumps(patients) if patients is not None else None,
            types=",".join(types) if types else None,
            type_filters=json.dumps(type_filters) if type_filters else None,
            since=since,
            output_format=output_format,
            request_url=request_url,
            actor=actor,
            requires_token=requires_token,
            status="queued",
            attempts=0,
            created_at=now(),
        )
    )
    return job_id


def get(conn: Connection, sandbox_id: str, job_id: str) -> Job | None:
    j = bulk_export_jobs.c
    row = conn.execute(select(bulk_export_jobs).where(j.layer_id == sandbox_id, j.id == job_id)).first()
    return _job(row) if row is not None else None


def files(conn: Connection, sandbox_id: str, job_id: str) -> list[OutputFile]:
    f = bulk_export_files.c
    rows = conn.execute(
        select(bulk_export_files).where(f.layer_id == sandbox_id, f.job_id == job_id).order_by(f.file_no)
    )
    return [OutputFile(row.file_no, row.resource_type, row.count) for row in rows]


def file_parts(db: Database, sandbox_id: str, job_id: str, file_no: int) -> Iterator[bytes]:
    """A file's content, part by part (one short read per part: a slow download holds no transaction open)."""
    p = bulk_export_parts.c
    part_no = -1
    while True:
        with db.read(snapshot=False) as conn:
            row = conn.execute(
                select(p.part_no, p.content)
                .where(p.layer_id == sandbox_id, p.job_id == job_id, p.file_no == file_no, p.part_no > part_no)
                .order_by(p.part_no)
                .limit(1)
            ).first()
        if row is None:
            return
        part_no = row.part_no
        yield bytes(row.content)


def cancel(conn: Connection, sandbox_id: str, job_id: str) -> bool:
    """Delete the job and its output; False if there was no such job."""
    for table in (bulk_export_parts, bulk_export_files):
        conn.execute(delete(table).where(table.c.layer_id == sandbox_id, table.c.job_id == job_id))
    j = bulk_export_jobs.c
    return conn.execute(delete(bulk_export_jobs).where(j.layer_id == sandbox_id, j.id == job_id)).rowcount == 1


def expires(job: Job) -> datetime | None:
    """When a finished job and its files go (``purge_expired``): the status response's ``Expires``."""
    if job.finished_at is None:
        return None
    return datetime.strptime(job.finished_at, _FMT).replace(tzinfo=UTC) + RETENTION


def purge_expired(db: Database, *, retention: timedelta = RETENTION) -> int:
    """Delete jobs that finished more than ``retention`` ago, with their files; returns how many."""
    j = bulk_export_jobs.c
    cutoff = _later(-retention)
    old = and_(j.status.in_(("completed", "failed")), j.finished_at < cutoff)
    with db.read(snapshot=False) as conn:  # idle polls must not take SQLite's write lock
        found = conn.execute(select(j.layer_id, j.id).where(old).limit(100)).all()
    if not found:
        return 0
    with db.write() as conn:
        return sum(cancel(conn, row.layer_id, row.id) for row in found)


# ---- the worker's side ------------------------------------------------------------------------------------


def _due() -> Any:
    j = bulk_export_jobs.c
    stamp = now()
    return or_(j.status == "queued", and_(j.status == "running", or_(j.lease_until.is_(None), j.lease_until < stamp)))


def has_due(db: Database) -> bool:
    with db.read(snapshot=False) as conn:  # idle polls must not take SQLite's write lock
        return conn.execute(select(bulk_export_jobs.c.id).where(_due()).limit(1)).first() is not None


def claim(db: Database, worker_id: str, *, lease: timedelta = LEASE) -> Job | None:
    """Take the oldest queued job, or a running one whose worker let its lease lapse; start it afresh.

    The transaction time is set here, when the run starts: what the export reads is as of then.
    """
    j = bulk_export_jobs.c
    with db.write() as conn:
        query = select(j.layer_id, j.id).where(_due()).order_by(j.created_at).limit(1)
        if not db.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        row = conn.execute(query).first()
        if row is None:
            return None
        for table in (bulk_export_parts, bulk_export_files):  # what a dead worker left half-written
            conn.execute(delete(table).where(table.c.layer_id == row.layer_id, table.c.job_id == row.id))
        conn.execute(
            update(bulk_export_jobs)
            .where(j.layer_id == row.layer_id, j.id == row.id)
            .values(
                status="running",
                claimed_by=worker_id,
                lease_until=_later(lease),
                transaction_time=now(),
                attempts=j.attempts + 1,
                progress="started",
            )
        )
        job = get(conn, row.layer_id, row.id)
    assert job is not None
    return job


def renew(conn: Connection, job: Job, worker_id: str, progress: str, *, lease: timedelta = LEASE) -> None:
    """Extend the lease and record progress, in the caller's transaction; ``Cancelled`` if the job is not ours."""
    j = bulk_export_jobs.c
    result = conn.execute(
        update(bulk_export_jobs)
        .where(j.layer_id == job.sandbox_id, j.id == job.id, j.claimed_by == worker_id, j.status == "running")
        .values(lease_until=_later(lease), progress=progress[:200])
    )
    if result.rowcount != 1:
        raise Cancelled(job.id)


def store_part(conn: Connection, job: Job, file_no: int, part_no: int, content: bytes) -> None:
    conn.execute(
        insert(bulk_export_parts).values(
            layer_id=job.sandbox_id, job_id=job.id, file_no=file_no, part_no=part_no, content=content
        )
    )


def complete(db: Database, job: Job, worker_id: str, outputs: list[OutputFile]) -> None:
    with db.write() as conn:
        renew(conn, job, worker_id, "done")
        if outputs:
            conn.execute(
                insert(bulk_export_files),
                [
                    {
                        "layer_id": job.sandbox_id,
                        "job_id": job.id,
                        "file_no": f.file_no,
                        "resource_type": f.resource_type,
                        "count": f.count,
                    }
                    for f in outputs
                ],
            )
        _finish(conn, job, worker_id, status="completed", error=None)


def fail(db: Database, job: Job, worker_id: str, error: str, *, final: bool = True) -> None:
    """A failed run: ``final`` marks the job failed; otherwise it is queued again unless out of attempts."""
    status = "failed" if final or job.attempts >= MAX_ATTEMPTS else "queued"
    with db.write() as conn:
        _finish(conn, job, worker_id, status=status, error=error)


def _finish(conn: Connection, job: Job, worker_id: str, *, status: str, error: str | None) -> None:
    j = bulk_export_jobs.c
    conn.execute(
        update(bulk_export_jobs)
        .where(j.layer_id == job.sandbox_id, j.id == job.id, j.claimed_by == worker_id)
        .values(
            status=status,
            error=error,
            claimed_by=None,
            lease_until=None,
            finished_at=now() if status in ("completed", "failed") else None,
        )
    )


def _job(row: Any) -> Job:
    return Job(
        sandbox_id=row.layer_id,
        id=row.id,
        level=row.level,
        group_id=row.group_id,
        patients=tuple(json.loads(row.patients)) if row.patients else None,
        types=tuple(row.types.split(",")) if row.types else None,
        type_filters=tuple(json.loads(row.type_filters)) if row.type_filters else None,
        since=row.since,
        output_format=row.output_format,
        request_url=row.request_url,
        actor=row.actor,
        requires_token=bool(row.requires_token),
        status=row.status,
        transaction_time=row.transaction_time,
        finished_at=row.finished_at,
        progress=row.progress,
        error=row.error,
        attempts=row.attempts,
        created_at=row.created_at,
    )
