"""The CapabilityStatement at ``[base]/metadata``, generated from what the server really does.

Interactions come from the routes the app has mounted, search parameters from
the registry filtered through the search planner (a parameter the planner
rejects is not advertised), ``_include``/``_revinclude`` from the reference
parameters, operations from ``operations.OPERATIONS``.  Nothing is typed in by
hand that could drift from the code.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response

from sandbox.auth.smart_config import capability_security
from sandbox.fhir.operations import OPERATIONS
from sandbox.fhir.outcome import FhirError
from sandbox.fhir.resource_types import resource_types
from sandbox.fhir.responses import fhir_response
from sandbox.fhir.search_params import Registry, SearchParam
from sandbox.fhir.search_plan import parse
from sandbox.fhir.values import instant_now
from sandbox.store.layers import DEFAULT_SANDBOX
from sandbox.urls import public_root

router = APIRouter()

FHIR_VERSION = "4.0.1"
_SEARCH_PARAMETER = "http://hl7.org/fhir/SearchParameter/"
_IDS = Path(__file__).parent / "data" / "search_parameter_ids.json"
_BINDINGS = Path(__file__).parent / "data" / "required_bindings.json"

# Route (method, path under the FHIR base) -> the interaction it serves.
TYPE_INTERACTIONS: dict[tuple[str, str], str] = {
    ("GET", "/{rtype}/{rid}"): "read",
    ("GET", "/{rtype}/{rid}/_history/{vid}"): "vread",
    ("PUT", "/{rtype}/{rid}"): "update",
    ("PATCH", "/{rtype}/{rid}"): "patch",
    ("DELETE", "/{rtype}/{rid}"): "delete",
    ("GET", "/{rtype}/{rid}/_history"): "history-instance",
    ("GET", "/{rtype}/_history"): "history-type",
    ("POST", "/{rtype}"): "create",
    ("GET", "/{rtype}"): "search-type",
}
SYSTEM_INTERACTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("POST", ""): ("transaction", "batch"),
    ("GET", "/_history"): ("history-system",),
    ("GET", ""): ("search-system",),
}
# A sample value of each parameter type, to ask the planner whether it accepts a parameter.
_SAMPLE = {
    "string": "a",
    "token": "a",
    "reference": "Patient/a",
    "date": "2020",
    "number": "1",
    "quantity": "1",
    "uri": "http://example.org",
}


@router.get("/metadata")
def metadata(request: Request) -> Response:
    """Open to anyone, every sandbox: a SMART app reads it to find the authorization server before it has a token.

    It tells nothing about the sandbox's data; an unknown sandbox is a 404.
    """
    mode = request.query_params.get("mode", "full")
    if mode != "full":
        raise FhirError.of(400, "not-supported", f"Only mode=full is supported for /metadata, not '{mode}'")
    sandbox_id = request.path_params.get("sandbox_id", DEFAULT_SANDBOX)
    request.app.state.views.get(sandbox_id)  # 404 for a sandbox that does not exist
    prefix = "/fhir" if "sandbox_id" not in request.path_params else f"/sandboxes/{sandbox_id}/fhir"
    base = public_root(request) + prefix
    statement = dict(capability_statement(request.app, request.app.state.fhir.registry))
    statement["implementation"] = {"description": f"ehr-sandbox, sandbox '{sandbox_id}'", "url": base}
    # SMART App Launch: where this sandbox's authorization server is (the oauth-uris extension).
    security = capability_security(request, sandbox_id)
    statement["rest"] = [{**rest, "security": security} for rest in statement["rest"]]
    return fhir_response(statement)


def capability_statement(app: FastAPI, registry: Registry) -> dict[str, Any]:
    """The statement without the per-sandbox ``implementation``; built once per app."""
    cached = getattr(app.state, "capability_statement", None)
    if cached is None:
        cached = build(_mounted(app), registry, app.version)
        app.state.capability_statement = cached
    return cached


def _mounted(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route under ``/fhir``, with the prefix removed.

    Read from the app's OpenAPI description, its public list of routes (included routers and all).
    """
    found: set[tuple[str, str]] = set()
    for path, methods in app.openapi()["paths"].items():
        if path == "/fhir" or path.startswith("/fhir/"):
            found.update((method.upper(), path.removeprefix("/fhir")) for method in methods)
    return found


def build(mounted: set[tuple[str, str]], registry: Registry, version: str) -> dict[str, Any]:
    type_interactions = [code for key, code in TYPE_INTERACTIONS.items() if key in mounted]
    system_interactions = [code for key, codes in SYSTEM_INTERACTIONS.items() if key in mounted for code in codes]
    # R4's ResourceType binding (required) has no code for the types R4B added, so an R4 statement cannot
    # list them; they are accepted all the same, and the documentation names them.
    listed = sorted(resource_types() & r4_types())
    r4b_only = sorted(resource_types() - r4_types())
    params_by_type = {rtype: supported_params(registry, rtype) for rtype in listed}
    revincludes = _revincludes(params_by_type)
    resources = []
    for rtype, params in params_by_type.items():
        entry: dict[str, Any] = {
            "type": rtype,
            "interaction": [{"code": code} for code in type_interactions],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": ("PUT", "/{rtype}/{rid}") in mounted,
            "conditionalCreate": ("POST", "/{rtype}") in mounted,
            "conditionalRead": "not-match",
            "conditionalUpdate": ("PUT", "/{rtype}") in mounted,
            "conditionalDelete": "single" if ("DELETE", "/{rtype}") in mounted else "not-supported",
        }
        references = [p.code for p in params if p.type == "reference"]
        if "search-type" in type_interactions:
            entry["searchInclude"] = ["*", *(f"{rtype}:{code}" for code in references)]
            if revincludes.get(rtype):
                entry["searchRevInclude"] = revincludes[rtype]
            entry["searchParam"] = [_search_param(p) for p in params]
        operations = [
            {"name": op.name, "definition": op.definition}
            for op in OPERATIONS
            if "system" not in op.levels and (op.resource_types is None or rtype in op.resource_types)
        ]
        if operations:
            entry["operation"] = operations
        resources.append(entry)
    rest: dict[str, Any] = {
        "mode": "server",
        "documentation": (
            "FHIR R4 over JSON. Search modifiers: string :exact :contains; token :not :text; "
            "reference :[type] :identifier; uri :above :below; :missing on every type. "
            "Prefixes eq ne gt lt ge le sa eb ap on date, number and quantity. "
            "Unknown search parameters are ignored and reported, or rejected under Prefer: handling=strict. "
            "Resources are validated with R4B models; these R4B resource types, which R4 does not define, are "
            "accepted with the same interactions and common search parameters: " + ", ".join(r4b_only) + "."
        ),
        "resource": resources,
        "interaction": [{"code": code} for code in system_interactions],
    }
    system_operations = [{"name": op.name, "definition": op.definition} for op in OPERATIONS if "system" in op.levels]
    if system_operations:
        rest["operation"] = system_operations
    if "search-system" in system_interactions:
        rest["searchParam"] = [_search_param(p) for p in supported_params(registry, None)]
    now = instant_now()[0]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": now,
        "publisher": "ehr-sandbox",
        "kind": "instance",
        "software": {"name": "ehr-sandbox", "version": version},
        "fhirVersion": FHIR_VERSION,
        "format": ["json", "application/fhir+json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [rest],
    }


def supported_params(registry: Registry, rtype: str | None) -> list[SearchParam]:
    """The registry's parameters that the search planner accepts, for a type or (None) across types."""
    candidates = registry.params(rtype) if rtype else _common(registry)
    found = []
    for code, param in sorted(candidates.items()):
        if not param.indexed and code not in ("_id", "_lastUpdated"):
            continue
        try:
            plan = parse(registry, rtype, [(code, _sample(param))], strict=True)
        except FhirError:
            continue
        if not plan.ignored:
            found.append(param)
    return found


def _sample(param: SearchParam) -> str:
    if param.type == "composite":
        return "$".join(_SAMPLE[c.type] for c in param.components)
    return _SAMPLE[param.type]


def _common(registry: Registry) -> dict[str, SearchParam]:
    """Parameters every resource type has (those defined on Resource), as the registry lists them for Patient."""
    return {code: p for code, p in registry.params("Patient").items() if code in _ids().get("Resource", {})}


def _search_param(param: SearchParam) -> dict[str, Any]:
    out: dict[str, Any] = {"name": param.code, "type": param.type}
    sp_id = _ids().get(param.resource_type, {}).get(param.code) or _ids().get("Resource", {}).get(param.code)
    sp_id = sp_id or _ids().get("DomainResource", {}).get(param.code)
    if sp_id:
        out["definition"] = _SEARCH_PARAMETER + sp_id
    return out


def _revincludes(params_by_type: dict[str, list[SearchParam]]) -> dict[str, list[str]]:
    """Target type -> the ``Source:param`` reference parameters that can point at it."""
    found: dict[str, list[str]] = {}
    for source, params in params_by_type.items():
        for param in params:
            if param.type == "reference":
                for target in param.targets:
                    found.setdefault(target, []).append(f"{source}:{param.code}")
    return found


@cache
def _ids() -> dict[str, dict[str, str]]:
    return json.loads(_IDS.read_text())


@cache
def r4_types() -> frozenset[str]:
    """R4 (4.0.1)'s resource types: its ResourceType value set, which binds ``rest.resource.type``."""
    codes = json.loads(_BINDINGS.read_text())["CapabilityStatement.rest.resource.type"]
    return frozenset(codes) - {"Resource", "DomainResource"}
