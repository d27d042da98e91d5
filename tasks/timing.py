"""Time limits: an attempt's deadline (its start plus the task's ``time_limit``) and the time left before it.

The deadline is derived, not stored: ``task_attempts`` keeps only ``started_at``, so databases made before
time limits were enforced work as they are, and the deadline follows the pack's limit as it is now.  Times
are the store's index form, naive UTC to the microsecond (``YYYY-MM-DDTHH:MM:SS.ffffff``), which sorts as
it reads: comparing two of them as strings compares the instants.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

INDEX_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"
# A timed assessment longer than a day is no timed assessment; the bound also keeps deadlines representable.
MAX_TIME_LIMIT_MINUTES = 24 * 60


def utc_now() -> datetime:
    return datetime.now(UTC)


def index_form(moment: datetime) -> str:
    """A timezone-aware instant as the store's index form (UTC)."""
    return moment.astimezone(UTC).strftime(INDEX_FORMAT)


def deadline(started_at: str, limit_minutes: int | None) -> str | None:
    """When an attempt started at ``started_at`` runs out of time, or ``None`` for an untimed task."""
    if limit_minutes is None:
        return None
    return (datetime.fromisoformat(started_at) + timedelta(minutes=limit_minutes)).strftime(INDEX_FORMAT)


def cutoff(now: str, limit_minutes: int) -> str:
    """The latest start whose deadline has passed at ``now``: an attempt started at or before it is out of time."""
    return (datetime.fromisoformat(now) - timedelta(minutes=limit_minutes)).strftime(INDEX_FORMAT)


def time_is_up(started_at: str, limit_minutes: int | None, now: str) -> bool:
    """At the deadline itself the time is up (a 15-minute task started at 10:00 is closed at 10:15:00)."""
    end = deadline(started_at, limit_minutes)
    return end is not None and end <= now


def seconds_left(started_at: str, limit_minutes: int | None, now: str) -> float | None:
    """Seconds before the deadline (0 once it has passed), or ``None`` for an untimed task."""
    end = deadline(started_at, limit_minutes)
    if end is None:
        return None
    return max(0.0, (datetime.fromisoformat(end) - datetime.fromisoformat(now)).total_seconds())
