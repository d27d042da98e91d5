"""A CDS service's response, checked against CDS Hooks 2.0 before anything of it reaches the chart.

A response that is not ``{"cards": [...]}`` gives no cards.  Each card is checked on its own: a card that
breaks a rule (summary missing or over 140 characters, an unknown indicator, no source label, a suggestion
without a label or with an action that is not create/update/delete with what that type needs, an override
reason without a display, a link that is neither absolute nor smart...) is dropped, and why is recorded in
the call log.  A kept card gets a ``key`` of ours: cards need not carry a ``uuid``, and accepting or
overriding one must name it.  ``systemActions`` are checked and logged, never applied: a sandbox applies
nothing a user did not choose.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

INDICATORS = ("info", "warning", "critical")
SELECTION_BEHAVIORS = ("at-most-one", "any")
ACTION_TYPES = ("create", "update", "delete")
LINK_TYPES = ("absolute", "smart")
MAX_SUMMARY = 140
_INDICATOR_ORDER = {name: n for n, name in enumerate(INDICATORS)}


class CardError(ValueError):
    pass


@dataclass
class Checked:
    cards: list[dict[str, Any]] = field(default_factory=list)
    system_actions: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def check_response(data: Any) -> Checked:
    out = Checked()
    if not isinstance(data, dict) or not isinstance(data.get("cards"), list):
        out.problems.append('The response is not a JSON object with a "cards" array')
        return out
    for n, card in enumerate(data["cards"]):
        try:
            out.cards.append({"key": str(uuid.uuid4()), **check_card(card)})
        except CardError as exc:
            out.problems.append(f"cards[{n}] dropped: {exc}")
    actions = data.get("systemActions")
    if actions is not None:
        if not isinstance(actions, list):
            out.problems.append("systemActions is not an array; ignored")
        else:
            for n, action in enumerate(actions):
                try:
                    out.system_actions.append(check_action(action, f"systemActions[{n}]", description=False))
                except CardError as exc:
                    out.problems.append(str(exc))
    out.cards.sort(key=lambda c: -_INDICATOR_ORDER[c["indicator"]])  # critical first, as a chart shows them
    return out


def check_card(card: Any) -> dict[str, Any]:
    if not isinstance(card, dict):
        raise CardError("a card is a JSON object")
    summary = card.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        raise CardError("summary is required")
    if len(summary) > MAX_SUMMARY:
        raise CardError(f"summary is {len(summary)} characters; at most {MAX_SUMMARY}")
    if card.get("indicator") not in INDICATORS:
        raise CardError(f"indicator must be one of {', '.join(INDICATORS)}, not {card.get('indicator')!r}")
    _optional_str(card, "detail", "detail")
    _optional_str(card, "uuid", "uuid")
    _source(card.get("source"))
    suggestions = card.get("suggestions")
    if suggestions is not None:
        if not isinstance(suggestions, list) or not suggestions:
            raise CardError("suggestions, when present, is a non-empty array")
        if card.get("selectionBehavior") not in SELECTION_BEHAVIORS:
            raise CardError(f"a card with suggestions needs selectionBehavior ({', '.join(SELECTION_BEHAVIORS)})")
        seen: set[str] = set()
        for n, suggestion in enumerate(suggestions):
            _suggestion(suggestion, f"suggestions[{n}]")
            if "uuid" in suggestion:
                if suggestion["uuid"] in seen:
                    raise CardError(f"suggestions[{n}].uuid repeats another suggestion's")
                seen.add(suggestion["uuid"])
    reasons = card.get("overrideReasons")
    if reasons is not None:
        if not isinstance(reasons, list) or not reasons:
            raise CardError("overrideReasons, when present, is a non-empty array of Codings")
        for n, reason in enumerate(reasons):
            _coding(reason, f"overrideReasons[{n}]", display=True)
    links = card.get("links")
    if links is not None:
        if not isinstance(links, list) or not links:
            raise CardError("links, when present, is a non-empty array")
        for n, link in enumerate(links):
            _link(link, f"links[{n}]")
    return card


def check_action(action: Any, where: str, *, description: bool = True) -> dict[str, Any]:
    if not isinstance(action, dict):
        raise CardError(f"{where} is not an object")
    kind = action.get("type")
    if kind not in ACTION_TYPES:
        raise CardError(f"{where}.type must be create, update or delete, not {kind!r}")
    if description or "description" in action:
        _required_str(action, "description", where)
    if kind in ("create", "update"):
        resource = action.get("resource")
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise CardError(f"{where}: a {kind} action needs a FHIR resource")
        if kind == "update" and not isinstance(resource.get("id"), str):
            raise CardError(f"{where}: an update action's resource needs its id")
    else:
        target = action.get("resourceId", action.get("resource"))  # ``resource`` as an id string is deprecated
        if not isinstance(target, str) or target.count("/") != 1 or not all(target.split("/")):
            raise CardError(f"{where}: a delete action needs resourceId as Type/id")
    return action


def delete_target(action: dict[str, Any]) -> tuple[str, str]:
    rtype, _, rid = str(action.get("resourceId", action.get("resource"))).partition("/")
    return rtype, rid


def find_suggestion(card: dict[str, Any], ref: str) -> tuple[int, dict[str, Any]]:
    """A suggestion of the card by its uuid, or by its position (``"0"``) when it has none."""
    for n, suggestion in enumerate(card.get("suggestions") or []):
        if suggestion.get("uuid") == ref or ("uuid" not in suggestion and ref == str(n)):
            return n, suggestion
    raise CardError(f"The card has no suggestion '{ref}'")


def _suggestion(suggestion: Any, where: str) -> None:
    if not isinstance(suggestion, dict):
        raise CardError(f"{where} is not an object")
    _required_str(suggestion, "label", where)
    _optional_str(suggestion, "uuid", f"{where}.uuid")
    if "isRecommended" in suggestion and not isinstance(suggestion["isRecommended"], bool):
        raise CardError(f"{where}.isRecommended is true or false")
    actions = suggestion.get("actions")
    if actions is not None:
        if not isinstance(actions, list) or not actions:
            raise CardError(f"{where}.actions, when present, is a non-empty array")
        for n, action in enumerate(actions):
            check_action(action, f"{where}.actions[{n}]")


def _source(source: Any) -> None:
    if not isinstance(source, dict):
        raise CardError("source is required: an object with a label")
    _required_str(source, "label", "source")
    for name in ("url", "icon"):
        if name in source and not _absolute_url(source[name]):
            raise CardError(f"source.{name} must be an absolute http(s) URL")
    if "topic" in source:
        _coding(source["topic"], "source.topic", display=False)


def _link(link: Any, where: str) -> None:
    if not isinstance(link, dict):
        raise CardError(f"{where} is not an object")
    _required_str(link, "label", where)
    if not _absolute_url(link.get("url")):
        raise CardError(f"{where}.url must be an absolute http(s) URL")
    if link.get("type") not in LINK_TYPES:
        raise CardError(f"{where}.type must be absolute or smart, not {link.get('type')!r}")
    if "appContext" in link:
        if link["type"] != "smart":
            raise CardError(f"{where}.appContext is only for smart links")
        _required_str(link, "appContext", where)


def _coding(coding: Any, where: str, *, display: bool) -> None:
    if not isinstance(coding, dict) or not any(isinstance(coding.get(k), str) for k in ("code", "display")):
        raise CardError(f"{where} is not a Coding")
    for name in ("system", "code", "display"):
        _optional_str(coding, name, f"{where}.{name}")
    if display:
        _required_str(coding, "display", where)


def _required_str(data: dict[str, Any], name: str, where: str) -> None:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise CardError(f"{where}.{name} is required (a non-empty string)")


def _optional_str(data: dict[str, Any], name: str, where: str) -> None:
    if name in data and (not isinstance(data[name], str) or not data[name].strip()):
        raise CardError(f"{where} must be a non-empty string when present")


def _absolute_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)
