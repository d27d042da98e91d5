"""What a Subscription must say to be accepted (checked on every write, with the other validation rules).

R4 Subscriptions name their criteria as a search (``Observation?code=http://loinc.org|8867-4``), so the
criteria are checked by the search planner itself, strictly: a parameter the search engine would not
understand is refused now, rather than silently matching everything later.  Only rest-hook channels are
delivered, with an empty body or a JSON payload.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sandbox.fhir.outcome import FhirError, Issue
from sandbox.fhir.resource_types import is_resource_type
from sandbox.fhir.search_params import registry
from sandbox.fhir.search_plan import parse

PAYLOADS = ("application/fhir+json", "application/json")
LIVE = ("requested", "active")  # statuses a delivering channel must be valid for


def split_criteria(criteria: str) -> tuple[str, list[tuple[str, str]]]:
    """``Type?a=1&b=2`` -> (``Type``, [(a, 1), (b, 2)]), checked by the search planner; FhirError if not valid."""
    rtype, _, query = criteria.strip().partition("?")
    if not is_resource_type(rtype):
        raise FhirError.of(400, "invalid", f"'{rtype}' is not a resource type; criteria look like Observation?code=...")
    pairs = parse_qsl(query, keep_blank_values=True)
    parse(registry(), rtype, pairs, strict=True)
    return rtype, pairs


def check_subscription(resource: dict[str, Any]) -> list[Issue]:
    """The problems with a Subscription that this server would not be able to serve, as 422 issues."""
    issues: list[Issue] = []
    criteria = resource.get("criteria")
    if isinstance(criteria, str):
        try:
            split_criteria(criteria)
        except FhirError as error:
            issues.extend(
                Issue("invalid", f"Subscription.criteria: {i.diagnostics}", expression="Subscription.criteria")
                for i in error.issues
            )
    channel = resource.get("channel")
    if resource.get("status") not in LIVE or not isinstance(channel, dict):
        return issues
    if channel.get("type") != "rest-hook":
        issues.append(
            Issue(
                "not-supported",
                f"Channel type '{channel.get('type')}' is not supported; this server delivers rest-hook channels",
                expression="Subscription.channel.type",
            )
        )
        return issues
    endpoint = channel.get("endpoint")
    parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        message = "A rest-hook channel needs an http(s) endpoint"
        issues.append(Issue("required", message, expression="Subscription.channel.endpoint"))
    payload = channel.get("payload")
    if payload is not None and payload not in PAYLOADS:
        issues.append(
            Issue(
                "not-supported",
                f"Payload '{payload}' is not supported; leave it out (empty notifications) or use "
                + " or ".join(PAYLOADS),
                expression="Subscription.channel.payload",
            )
        )
    for n, header in enumerate(channel.get("header", [])):
        name, colon, _value = str(header).partition(":")
        if not colon or not name.strip() or any(c.isspace() for c in name.strip()):
            issues.append(
                Issue(
                    "invalid",
                    f"Header '{header}' is not 'Name: value'",
                    expression=f"Subscription.channel.header[{n}]",
                )
            )
    return issues
