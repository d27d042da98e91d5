"""What a Subscription must say to be accepted (checked on every write, with the other validation rules).

R4 Subscriptions name their criteria as a search (``Observation?code=http://loinc.org|8867-4``), so the
criteria are checked by the search planner itself, strictly: a parameter the search engine would not
understand is refused now, rather than silently matching everything later.  Only rest-hook channels are
delivered, with an empty body or a JSON payload.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sandbox.fhir.criteria import split_criteria
from sandbox.fhir.outcome import FhirError, Issue

PAYLOADS = ("application/fhir+json", "application/json")
LIVE = ("requested", "active")  # statuses a delivering channel must be valid for


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
