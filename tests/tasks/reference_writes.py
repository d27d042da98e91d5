"""Reference solutions and common mistakes (YAML in ``solutions/``) written into a sandbox as a trainee would.

Strings in the resources may hold ``{patient}``, ``{encounter}``, ``{ref:NAME}`` (an earlier write of the
same solution) and ``{first:Type?query}`` (the first search match, e.g. a cardiologist's PractitionerRole).
A write either creates ``resource`` or changes the resource ``update`` names (``Type/id``, placeholders
allowed) with the fields in ``set``.
A write may instead be a CDS Hooks step, as the chart would make it: ``cds: {hook, drafts?, service,
accept: N | override: CODE, comment?}`` fires the hook for the task's patient as the trainee (the built-in
demo services answer), then accepts suggestion N of the card from ``service`` or overrides it (``""``: no
reason); its name is the first resource the accepted suggestion created.
A mistake is the reference solution with some writes replaced (``replace``), left out (``drop``) or added
(``add``); it names the one check it must fail (``fails``).
"""

from __future__ import annotations

import asyncio
import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import yaml

from sandbox.cdshooks.client import CdsClient
from sandbox.cdshooks.hooks import HookUser
from sandbox.fhir.context import Views
from sandbox.fhir.interactions import Interactions
from sandbox.fhir.validation import parse_json
from sandbox.hl7v2.delivery import deliver_due, translate
from sandbox.store.database import Database
from sandbox.store.layers import resolve_view
from sandbox.store.repository import Actor

SOLUTIONS = Path(__file__).parent / "solutions"
_TOKEN = re.compile(r"\{(ref|first):([^}]+)\}|\{(patient|encounter)\}")


@dataclass(frozen=True)
class Mistake:
    name: str
    writes: list[dict[str, Any]]
    fails: str


@dataclass(frozen=True)
class Solution:
    task: str
    reference: list[dict[str, Any]]
    mistakes: list[Mistake]


def load_solutions() -> list[Solution]:
    found = []
    for path in sorted(SOLUTIONS.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        reference = data["reference"]
        mistakes = [Mistake(m["name"], _variant(reference, m), m["fails"]) for m in data.get("mistakes", [])]
        found.append(Solution(data["task"], reference, mistakes))
    return found


def _variant(reference: list[dict[str, Any]], mistake: dict[str, Any]) -> list[dict[str, Any]]:
    replace = mistake.get("replace", {})
    drop = set(mistake.get("drop", []))
    writes = [
        _replacement(w["as"], replace[w["as"]]) if w["as"] in replace else w for w in reference if w["as"] not in drop
    ]
    return copy.deepcopy(writes + mistake.get("add", []))


def _replacement(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """A replacement is a resource to create, or a write (``update`` and ``set``)."""
    return {"as": name, "resource": given} if "resourceType" in given else {"as": name, **given}


def write_as_trainee(
    db: Database, fhir: Interactions, sandbox_id: str, trainee_id: str, context: dict[str, str], writes: list[dict]
) -> dict[str, str]:
    """Create each resource as ``user:<trainee>`` through the FHIR interactions; returns name -> Type/id."""
    actor = Actor(f"user:{trainee_id}", "web-ui")
    names: dict[str, str] = {}
    for write in writes:
        if "cds" in write:  # its own transactions, as the chart's hook calls and decisions are
            names[write["as"]] = _cds_step(db, fhir, sandbox_id, trainee_id, context, write["cds"])
            continue
        with db.write() as conn:
            _write(conn, fhir, resolve_view(conn, sandbox_id), actor, context, names, write)
    return names


def deliver_outbound(db: Database, fhir: Interactions) -> None:
    """What the outbox worker does after the writes: every pending event turned into messages for the sandboxes'
    MLLP destinations (a case baseline's load is in the outbox too, hence the large batches), and each sent."""
    while translate(db, fhir, batch=5000):
        pass
    while deliver_due(db, "reference-writes"):
        pass


def _cds_step(
    db: Database, fhir: Interactions, sandbox_id: str, trainee_id: str, context: dict[str, str], step: dict[str, Any]
) -> str:
    client = CdsClient(db, fhir, Views(db))
    user = HookUser(trainee_id)
    patient = context["patient"].removeprefix("Patient/")
    encounter = context.get("encounter", "").removeprefix("Encounter/") or None
    drafts = [_fill_context(copy.deepcopy(d), context) for d in step.get("drafts", [])]
    root = "http://localhost"
    if step["hook"] == "patient-view":
        result = asyncio.run(client.patient_view(sandbox_id, user, patient, encounter, root=root))
    elif step["hook"] == "order-select":
        result = asyncio.run(client.order_select(sandbox_id, user, patient, encounter, drafts, root=root))
    else:
        result = asyncio.run(client.order_sign(sandbox_id, user, patient, encounter, drafts, root=root))
    card = next(c for c in result.cards if c["service"] == step["service"])
    if "accept" in step:
        suggestion = card["suggestions"][step["accept"]]
        decision = asyncio.run(
            client.accept(sandbox_id, user, card["call"], card["key"], [suggestion["uuid"]], root=root)
        )
        created = [r.split("/_history")[0] for r in decision.resources if "/_history/" in r]
        return created[0] if created else ""
    asyncio.run(
        client.override(
            sandbox_id, user, card["call"], card["key"], step["override"] or None, step.get("comment"), root=root
        )
    )
    return ""


def _fill_context(value: Any, context: dict[str, str]) -> Any:
    if isinstance(value, str):
        return _TOKEN.sub(lambda m: context[m.group(3)] if m.group(3) else m.group(0), value)
    if isinstance(value, list):
        return [_fill_context(v, context) for v in value]
    if isinstance(value, dict):
        return {k: _fill_context(v, context) for k, v in value.items()}
    return value


def _write(
    conn: Any,
    fhir: Interactions,
    view: Any,
    actor: Actor,
    context: dict[str, str],
    names: dict[str, str],
    write: dict[str, Any],
) -> None:
    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return _TOKEN.sub(lambda m: _token(m, conn, view, fhir, context, names), value)
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    if "update" in write:  # change an existing resource: the first match of a search, with fields set
        rtype, _, rid = fill(write["update"]).partition("/")
        current = parse_json(fhir.read(conn, view, rtype, rid).content or b"{}")
        current.pop("meta", None)
        changed = {**current, **fill(copy.deepcopy(write.get("set", {})))}
        for key in write.get("unset", []):
            changed.pop(key, None)
        stored = fhir.update(conn, view, rtype, rid, changed, actor).stored
    else:
        stored = fhir.create(conn, view, fill(copy.deepcopy(write["resource"])), actor).stored
    names[write["as"]] = f"{stored.resource_type}/{stored.id}"


def _token(match: re.Match, conn, view, fhir: Interactions, context: dict[str, str], names: dict[str, str]) -> str:  # type: ignore[no-untyped-def]
    if match.group(3):
        return context[match.group(3)]
    kind, arg = match.group(1), match.group(2)
    if kind == "ref":
        return names[arg]
    rtype, _, query = arg.partition("?")
    found = fhir.search(conn, view, rtype, parse_qsl(query)).matches
    assert found, f"nothing found for {arg}"
    return f"{rtype}/{found[0].id}"
