"""Turning FHIR elements into the short text a chart shows (Jinja filters and helpers for the readers)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any


def concept_text(concept: Any) -> str:
    """A CodeableConcept as words: its text, else the first coding's display, else its code."""
    if not isinstance(concept, dict):
        return ""
    if concept.get("text"):
        return str(concept["text"])
    for coding in concept.get("coding") or []:
        if coding.get("display"):
            return str(coding["display"])
    codes = [str(c.get("code")) for c in concept.get("coding") or [] if c.get("code")]
    return ", ".join(codes)


def concepts_text(concepts: Any) -> str:
    return "; ".join(t for t in (concept_text(c) for c in concepts or []) if t)


def codes_of(concept: Any) -> set[tuple[str, str]]:
    return {(str(c.get("system", "")), str(c.get("code", ""))) for c in (concept or {}).get("coding") or []}


def status_code(concept: Any) -> str:
    """The code of a status CodeableConcept (clinicalStatus, verificationStatus)."""
    for coding in (concept or {}).get("coding") or []:
        if coding.get("code"):
            return str(coding["code"])
    return ""


def quantity_text(quantity: Any) -> str:
    if not isinstance(quantity, dict) or "value" not in quantity:
        return ""
    unit = quantity.get("unit") or quantity.get("code") or ""
    return f"{number_text(quantity['value'])} {unit}".strip()


def number_text(value: Any) -> str:
    """A number as charted: ``72`` rather than ``72.0``; nothing for no value."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def when(value: Any) -> str:
    """A FHIR date or dateTime, shortened for a table: ``2026-01-01 15:10``."""
    if not isinstance(value, str) or not value:
        return ""
    if len(value) <= 10:
        return value
    return value[:16].replace("T", " ")


def reference_text(reference: Any) -> str:
    if not isinstance(reference, dict):
        return ""
    return str(reference.get("display") or reference.get("reference") or "")


def human_name(patient: dict[str, Any]) -> str:
    names = patient.get("name") or []
    name = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    if name.get("text"):
        return str(name["text"])
    given = " ".join(name.get("given") or [])
    return f"{given} {name.get('family', '')}".strip() or "(no name)"


def age_on(birth_date: str | None, today: date) -> int | None:
    try:
        born = date.fromisoformat(birth_date[:10]) if birth_date and len(birth_date) >= 10 else None
    except ValueError:
        return None
    if born is None:
        return None
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def parse_instant(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
