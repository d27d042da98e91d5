"""Prefetch: fill a service's templates with this call's tokens and answer them from the sandbox itself.

Templates are relative FHIR reads (``Patient/{{context.patientId}}``) or searches
(``Condition?patient={{context.patientId}}&clinical-status=active``).  They are answered through the
sandbox's own ``Interactions`` (the search engine the FHIR API uses), not over HTTP, so a prefetched
value is what the service would get from the FHIR server.  Following the spec:

- a template whose tokens this call cannot fill, or whose query fails, is left out (the key is omitted);
- a read of nothing, or a search that finds nothing, is ``null``;
- a search is one searchset Bundle holding every match (no next page: up to the server's page limit).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson
from sqlalchemy import Connection

from sandbox.fhir.interactions import Interactions
from sandbox.fhir.outcome import FhirError
from sandbox.fhir.resource_types import is_resource_type
from sandbox.fhir.responses import searchset
from sandbox.store.layers import View

_log = logging.getLogger("ehr_sandbox.cdshooks")
_TOKEN = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")


@dataclass
class Prefetched:
    values: dict[str, Any] = field(default_factory=dict)  # key -> resource, Bundle or None
    skipped: dict[str, str] = field(default_factory=dict)  # key -> why it was left out


def fill(template: str, tokens: dict[str, str]) -> str:
    """The template with every token replaced; ``KeyError`` names a token this call has no value for."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in tokens:
            raise KeyError(name)
        return tokens[name]

    return _TOKEN.sub(value, template)


def run_prefetch(
    conn: Connection, fhir: Interactions, view: View, base: str, templates: dict[str, str], tokens: dict[str, str]
) -> Prefetched:
    out = Prefetched()
    for key, template in templates.items():
        try:
            url = fill(template, tokens)
        except KeyError as exc:
            out.skipped[key] = f"no value for the token {{{{{exc.args[0]}}}}}"
            continue
        try:
            out.values[key] = _answer(conn, fhir, view, base, url)
        except FhirError as exc:
            out.skipped[key] = "; ".join(i.diagnostics for i in exc.issues) or str(exc)
        except ValueError as exc:
            out.skipped[key] = str(exc)
        except Exception as exc:  # a vendor's template must not break the hook call for every service
            _log.exception("prefetch template %r", template)
            out.skipped[key] = f"the query failed ({type(exc).__name__})"
    return out


def _answer(conn: Connection, fhir: Interactions, view: View, base: str, url: str) -> Any:
    path, _, query_text = url.strip().lstrip("/").partition("?")
    parts = [p for p in path.split("/") if p]
    if not parts or not is_resource_type(parts[0]):
        raise ValueError(f"'{url}' is not a relative FHIR read or search")
    rtype = parts[0]
    if len(parts) == 2 and not query_text:
        stored = fhir.repo.current(conn, view, rtype, parts[1])
        if stored is None or stored.deleted or stored.content is None:
            return None
        return orjson.loads(stored.content)
    if len(parts) != 1:
        raise ValueError(f"'{url}' is neither Type/id nor Type?query")
    query = parse_qsl(query_text, keep_blank_values=True)
    if not any(name == "_count" for name, _ in query):
        query.append(("_count", str(fhir.max_count)))
    result = fhir.search(conn, view, rtype, query)
    if not result.matches:
        return None
    result.next_cursor = result.previous_cursor = None  # one page, all of it: the service cannot page
    return orjson.loads(searchset(result, base, query, f"{base}/{rtype}"))
