"""Value normalization shared by the indexer (on write) and the search planner (on read).

Both sides must agree exactly, so the rules live here once: how strings fold,
how a FHIR date of any precision becomes a closed UTC range, how a number's
implicit precision becomes a range.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache

MIN_DATE = "0001-01-01T00:00:00.000000"
MAX_DATE = "9999-12-31T23:59:59.999999"
_FMT = "%Y-%m-%dT%H:%M:%S.%f"

_DATE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d+)?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def fold(text: str) -> str:
    """Case- and accent-insensitive form for string search (``Müller`` matches ``muller``)."""
    if text.isascii():  # NFKD leaves ASCII as it is and casefold is lower there: most indexed text skips the work
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


# Kept because equal dates come in runs: a visit's Observations share effective and issued times, and a Bundle
# indexes each several times (date, and every composite with a date component).  Worked out, a date took 10 to
# 20 us, a quarter of the index rows' cost for a Bundle of vital signs.
@lru_cache(maxsize=4096)
def date_range(text: str) -> tuple[str, str] | None:
    """A FHIR date/dateTime/instant as the closed UTC range it denotes, or None if malformed.

    ``2020`` is all of 2020; ``2020-03-04T10:00`` is that minute.  Times without
    a zone are taken as UTC (FHIR requires a zone whenever there is a time).
    """
    m = _DATE.match(text.strip())
    if not m:
        return None
    try:
        year = int(m["y"])
        if m["m"] is None:
            low = datetime(year, 1, 1)
            high = datetime(year, 12, 31, 23, 59, 59, 999999)
        elif m["d"] is None:
            month = int(m["m"])
            last = calendar.monthrange(year, month)[1]
            low = datetime(year, month, 1)
            high = datetime(year, month, last, 23, 59, 59, 999999)
        elif m["H"] is None:
            low = datetime(year, int(m["m"]), int(m["d"]))
            high = low + timedelta(days=1, microseconds=-1)
        else:
            low = datetime(year, int(m["m"]), int(m["d"]), int(m["H"]), int(m["M"]), int(m["S"] or 0))
            if m["f"]:
                digits = m["f"][1:7]
                low = low.replace(microsecond=int(digits.ljust(6, "0")))
                step = timedelta(microseconds=10 ** (6 - len(digits)) - 1) if len(m["f"]) - 1 <= 6 else timedelta(0)
            elif m["S"] is not None:
                step = timedelta(seconds=1, microseconds=-1)
            else:
                step = timedelta(minutes=1, microseconds=-1)
            high = low + step
            if m["tz"] and m["tz"] != "Z":
                sign = 1 if m["tz"][0] == "+" else -1
                offset = sign * timedelta(hours=int(m["tz"][1:3]), minutes=int(m["tz"][4:6]))
                return _utc(low, offset), _utc(high, offset)
    except ValueError:
        return None
    return _fmt(low), _fmt(high)


def _utc(local: datetime, offset: timedelta) -> str:
    """``local`` at ``offset`` from UTC, in UTC; a moment past either end of time is that end
    (``0001-01-01T00:00+05:00`` is before the first moment a datetime holds)."""
    try:
        return _fmt(local - offset)
    except OverflowError:
        return MIN_DATE if offset > timedelta(0) else MAX_DATE


def _fmt(value: datetime) -> str:
    """``_FMT`` with the year always four digits (strftime's ``%Y`` drops the zeros of a year below 1000)."""
    if value.year < 1:
        return MIN_DATE
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T"
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}"
    )


def instant_now() -> tuple[str, str]:
    """The current time as a FHIR instant (for meta.lastUpdated) and as an index string."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z", now.strftime(_FMT)


def number_range(text: str) -> tuple[float, float] | None:
    """A search number with its implicit precision: ``100`` is [99.5, 100.5), ``1e2`` is [50, 150)."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    half = Decimal(5) * Decimal(10) ** (exponent - 1)
    return float(value - half), float(value + half)
