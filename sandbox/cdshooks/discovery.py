"""Discovery: read a CDS service's ``{baseUrl}/cds-services`` document and check it (CDS Hooks 2.0).

Each service needs ``id`` (a path segment), ``hook`` and ``description``; ``title`` and ``prefetch``
(an object of key -> template string) are optional.  A document that breaks a rule is refused whole,
with the reason: registering half of a vendor's services would hide the mistake from them.
"""

from __future__ import annotations

from typing import Any

from sandbox.cdshooks.services import ServiceDef
from sandbox.store.admin_errors import AdminError


class DiscoveryError(AdminError):
    """The discovery endpoint could not be read or did not answer a valid document (502 Bad Gateway)."""

    status = 502


def parse_discovery(data: Any) -> list[ServiceDef]:
    if not isinstance(data, dict) or not isinstance(data.get("services"), list):
        raise DiscoveryError('The discovery response is not a JSON object with a "services" array')
    found: list[ServiceDef] = []
    seen: set[str] = set()
    for n, item in enumerate(data["services"]):
        where = f"services[{n}]"
        if not isinstance(item, dict):
            raise DiscoveryError(f"{where} is not an object")
        for name in ("id", "hook", "description"):
            if not isinstance(item.get(name), str) or not item[name].strip():
                raise DiscoveryError(f"{where}.{name} is required (a non-empty string)")
        service_id = item["id"]
        if "/" in service_id or len(service_id) > 200:
            raise DiscoveryError(f"{where}.id '{service_id[:60]}' must be one URL path segment (no '/')")
        if service_id in seen:
            raise DiscoveryError(f"{where}.id '{service_id}' is listed twice")
        seen.add(service_id)
        title = item.get("title")
        if title is not None and not isinstance(title, str):
            raise DiscoveryError(f"{where}.title must be a string")
        prefetch = item.get("prefetch")
        if prefetch is not None and (
            not isinstance(prefetch, dict) or not all(isinstance(v, str) and v for v in prefetch.values())
        ):
            raise DiscoveryError(f"{where}.prefetch must be an object of key -> FHIR query template")
        found.append(ServiceDef(service_id, item["hook"], item["description"], title, prefetch or None))
    return found
