"""The opaque ``_cursor`` of searchset paging links: a position in the sort order, not an offset.

A cursor names the sort-key values and the ``(resource_type, id)`` of the
row a page ended (or began) at, and the direction to read from there.  The
next page is "rows after this position", so resources created or deleted
between page requests neither shift nor duplicate what follows, as an
``_offset`` would.  The position need not still exist: it is a point in the
order, and comparing against it works whether or not the row is still there.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

import orjson

from sandbox.fhir.outcome import FhirError

SortValue = str | float | int | bool | None


@dataclass(frozen=True)
class Cursor:
    forward: bool  # True: rows after the position (next); False: rows before it (previous)
    inclusive: bool  # also the row at the position itself (when paging back from an empty page)
    sort: str  # the _sort the cursor was made for; a cursor is meaningless under another order
    values: tuple[SortValue, ...]  # one per sort key
    resource_type: str
    id: str

    def encode(self) -> str:
        # orjson: a third of the cost of json.dumps (each paging link encodes one).  decode() reads either.
        raw = orjson.dumps(
            [int(self.forward), int(self.inclusive), self.sort, list(self.values), self.resource_type, self.id]
        )
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, sort: str, keys: int) -> Cursor:
    """The cursor in ``token``; 400 if it is not one of ours or was made for a different ``_sort``."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        forward, inclusive, made_for, values, rtype, rid = json.loads(raw)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise _invalid(token) from None
    if (
        forward not in (0, 1)
        or inclusive not in (0, 1)
        or not isinstance(made_for, str)
        or not isinstance(values, list)
        or not all(_is_sort_value(v) for v in values)
        or not isinstance(rtype, str)
        or not isinstance(rid, str)
    ):
        raise _invalid(token)
    if made_for != sort or len(values) != keys:
        raise FhirError.of(400, "invalid", "This _cursor belongs to a search with a different _sort; start again")
    return Cursor(bool(forward), bool(inclusive), made_for, tuple(values), rtype, rid)


def _is_sort_value(value: Any) -> bool:
    return value is None or isinstance(value, str | float | int | bool)


def _invalid(token: str) -> FhirError:
    shown = token if len(token) <= 40 else token[:40] + "..."
    return FhirError.of(400, "invalid", f"_cursor '{shown}' is not a paging cursor from this server")
