"""HTTP responses of the FHIR API: resource bodies from stored bytes, headers, and response Bundles."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote_plus, urlencode

import orjson
from starlette.responses import Response

from sandbox.fhir.outcome import Issue, operation_outcome
from sandbox.fhir.search import SearchResult
from sandbox.fhir.subsetting import subset
from sandbox.fhir.validation import dump_json
from sandbox.store.repository import Stored

FHIR_JSON = "application/fhir+json; charset=utf-8"


def fhir_response(
    body: bytes | dict[str, Any] | None, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    if isinstance(body, dict):
        body = dump_json(body)
    return Response(content=body or b"", status_code=status, headers=headers, media_type=FHIR_JSON if body else None)


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(stored: Stored) -> str:
    """Last-Modified's IMF-fixdate (RFC 9110), e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``.  Formatted here rather
    than by ``email.utils.format_datetime``, which cost 2% of a read by id on PostgreSQL."""
    when = datetime.fromisoformat(stored.last_updated[:19])  # the index string is UTC
    return (
        f"{_DAYS[when.weekday()]}, {when.day:02d} {_MONTHS[when.month - 1]} {when.year:04d} "
        f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} GMT"
    )


def resource_headers(stored: Stored, base: str | None = None) -> dict[str, str]:
    headers = {"ETag": stored.etag, "Last-Modified": http_date(stored)}
    if base is not None:
        headers["Location"] = f"{base}/{stored.resource_type}/{stored.id}/_history/{stored.version_id}"
    return headers


def write_response(
    stored: Stored, status: int, base: str, prefer: str | None, issues: list[Issue] | None = None
) -> Response:
    """Answer a create/update/patch as ``Prefer: return=`` asks (representation by default)."""
    headers = resource_headers(stored, base)
    if prefer == "minimal":
        return fhir_response(None, status, headers)
    if prefer == "OperationOutcome":
        outcome = operation_outcome(
            issues
            or [
                Issue(
                    "informational",
                    f"{stored.resource_type}/{stored.id} version {stored.version_id} stored",
                    "information",
                )
            ]
        )
        return fhir_response(outcome, status, headers)
    return fhir_response(stored.content, status, headers)


def prefer_return(header: str | None) -> str | None:
    for part in (header or "").split(";"):
        key, _, value = part.strip().partition("=")
        if key.strip() == "return":
            return value.strip().strip('"')
    return None


def prefer_strict(header: str | None) -> bool:
    for part in (header or "").replace(",", ";").split(";"):
        key, _, value = part.strip().partition("=")
        if key.strip() == "handling":
            return value.strip() == "strict"
    return False


def searchset(
    result: SearchResult,
    base: str,
    self_query: list[tuple[str, str]],
    page_url: str,
    *,
    summary: str | None = None,
    elements: tuple[str, ...] = (),
    offset: int = 0,
    count: int | None = None,
) -> bytes:
    """Build the searchset Bundle around the stored bytes of each match (no re-parse unless subsetting).

    ``self`` is the request as made; ``next`` and ``previous`` carry the result's
    ``_cursor``s in place of any the request had.  (``offset`` and ``count`` are
    ignored: paging is by cursor now; they remain for callers written before.)
    """
    del offset, count
    # The paging links are the request's parameters with a _cursor in place of any it had: encoded once, and
    # once more for the self link only when the request had a _cursor (urlencode was a tenth of a search's CPU).
    paged = [(k, v) for k, v in self_query if k not in ("_cursor", "_offset")]
    kept = urlencode(paged)
    if len(paged) == len(self_query):
        self_url = f"{page_url}?{kept}" if kept else page_url
    else:
        self_url = f"{page_url}?{urlencode(self_query)}"
    paging_url = f"{page_url}?{kept}&_cursor=" if kept else f"{page_url}?_cursor="
    links = [{"relation": "self", "url": self_url}]
    if result.next_cursor is not None:
        links.append({"relation": "next", "url": paging_url + quote_plus(result.next_cursor.encode())})
    if result.previous_cursor is not None:
        links.append({"relation": "previous", "url": paging_url + quote_plus(result.previous_cursor.encode())})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if result.total is not None:
        bundle["total"] = result.total
    bundle["link"] = links
    entries = [_entry(base, s, "match", summary, elements) for s in result.matches]
    entries.extend(_entry(base, s, "include", summary, elements) for s in result.included)
    if result.issues:
        entries.append({"resource": operation_outcome(result.issues), "search": {"mode": "outcome"}})
    if entries:
        bundle["entry"] = entries
    return orjson.dumps(bundle)


def _entry(base: str, stored: Stored, mode: str, summary: str | None, elements: tuple[str, ...]) -> dict[str, Any]:
    content = subset(stored.content or b"{}", summary, elements)
    return {
        "fullUrl": f"{base}/{stored.resource_type}/{stored.id}",
        "resource": orjson.Fragment(content),
        "search": {"mode": mode},
    }


def _url(page_url: str, query: list[tuple[str, str]], offset: int) -> str:
    params = [(k, v) for k, v in query if k != "_offset"]
    if offset:
        params.append(("_offset", str(offset)))
    return f"{page_url}?{urlencode(params)}" if params else page_url


def history_bundle(
    versions: list[Stored],
    total: int,
    base: str,
    page_url: str,
    self_query: list[tuple[str, str]],
    link_query: list[tuple[str, str]],
    *,
    offset: int,
    count: int,
) -> bytes:
    """A history Bundle: one entry per version, a deletion as a DELETE entry without a resource.

    ``link_query`` is the request's query pinned to the first page's snapshot, for next and previous.
    """
    links = [{"relation": "self", "url": _url(page_url, self_query, offset)}]
    if count and offset + count < total:
        links.append({"relation": "next", "url": _url(page_url, link_query, offset + count)})
    if offset > 0:
        links.append({"relation": "previous", "url": _url(page_url, link_query, max(0, offset - (count or offset)))})
    entries = []
    for v in versions:
        entry: dict[str, Any] = {"fullUrl": f"{base}/{v.resource_type}/{v.id}"}
        if v.content is not None and not v.deleted:
            entry["resource"] = orjson.Fragment(v.content)
        method = "DELETE" if v.deleted else (v.method or "PUT")
        # A patch is stored as the whole resulting resource, which is what a PUT carries.
        method = "PUT" if method == "PATCH" else method
        url = v.resource_type if method == "POST" else f"{v.resource_type}/{v.id}"
        entry["request"] = {"method": method, "url": url}
        if v.deleted:
            status = "204 No Content"
        elif method == "POST" or v.version_id == 1:
            status = "201 Created"
        else:
            status = "200 OK"
        entry["response"] = {"status": status, "etag": v.etag, "lastModified": v.instant}
        entries.append(entry)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "history", "total": total, "link": links}
    if entries:
        bundle["entry"] = entries
    return orjson.dumps(bundle)
