"""Build the registry data in sandbox/fhir/data/ from the FHIR R4 (4.0.1) specification.

The inputs are the specification's own ``search-parameters.json`` bundle (a CC0
definitions file that every FHIR distribution carries; e.g. the one in the
``hl7.fhir.r4.core`` package).  The output is our compact registry: for every
resource type, the parameters that apply to it with their type, their
expression narrowed to that resource type, the reference targets, and composite
components.  Run it again only when moving to another FHIR release.  The
patient CompartmentDefinition (``compartmentdefinition-patient.json``) gives
``patient_compartment.json``: which parameters put a resource in a patient's
compartment, for ``$everything`` and patient-scoped access.

The resource StructureDefinitions with the specification's value sets and code
systems (``profiles-resources.json``, ``valuesets.json``, ``v3-codesystems.json``)
give ``required_bindings.json``: for each ``code`` element bound with strength
*required* to an enumerable value set, the codes allowed (the models do not
check these), and ``summary_elements.json``, the elements ``_summary=true`` keeps.

    python tools/build_search_registry.py DIR   # DIR holds the spec's definition files
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "sandbox" / "fhir" / "data"


def narrow(expression: str, resource_type: str) -> str:
    """Keep the union branches of a shared expression that start at ``resource_type``.

    One R4 expression (InsurancePlan-name: ``name | alias``) leaves out the type;
    when no branch names a type, every branch is relative to ``resource_type``.
    """
    parts = [p.strip() for p in expression.split(" | ")]
    if not any(p[:1].isupper() or p.startswith("(") for p in parts):
        return " | ".join(f"{resource_type}.{p}" for p in parts)
    mine = [
        p
        for p in parts
        if p.startswith(resource_type + ".") or p.startswith("(" + resource_type + ".") or p == resource_type
    ]
    return " | ".join(mine)


def build(source: Path) -> dict[str, dict[str, dict]]:
    bundle = json.loads(source.read_text())
    by_url = {e["resource"]["url"]: e["resource"] for e in bundle["entry"]}
    registry: dict[str, dict[str, dict]] = {}
    for entry in bundle["entry"]:
        sp = entry["resource"]
        if sp["type"] == "special":
            continue
        for base in sp["base"]:
            expression = sp.get("expression") or ""
            if base not in ("Resource", "DomainResource"):
                expression = narrow(expression, base)
            item: dict = {"type": sp["type"], "expression": expression}
            if sp.get("target"):
                item["target"] = sorted(sp["target"])
            if sp["type"] == "composite":
                item["components"] = [
                    {
                        "code": by_url[c["definition"]]["code"],
                        "type": by_url[c["definition"]]["type"],
                        "expression": c["expression"],
                    }
                    for c in sp["component"]
                ]
            registry.setdefault(base, {})[sp["code"]] = item
    return {k: dict(sorted(v.items())) for k, v in sorted(registry.items())}


def build_ids(source: Path) -> dict[str, dict[str, str]]:
    """Resource type -> parameter code -> the SearchParameter's id (its canonical URL's last segment)."""
    ids: dict[str, dict[str, str]] = {}
    for entry in json.loads(source.read_text())["entry"]:
        sp = entry["resource"]
        if sp["type"] != "special":
            for base in sp["base"]:
                ids.setdefault(base, {})[sp["code"]] = sp["id"]
    return {k: dict(sorted(v.items())) for k, v in sorted(ids.items())}


def build_compartment(source: Path) -> dict[str, list[str]]:
    definition = json.loads(source.read_text())
    return {r["code"]: sorted(r["param"]) for r in definition["resource"] if r.get("param")}


def write(name: str, data: object) -> None:
    (DATA / name).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {DATA / name}")


def _codes_in(concepts: list[dict]) -> list[str]:
    out: list[str] = []
    for c in concepts:
        out.append(c["code"])
        out.extend(_codes_in(c.get("concept", [])))
    return out


def build_bindings(profiles: Path, *terminologies: Path) -> dict[str, list[str]]:
    code_systems: dict[str, list[str]] = {}
    value_sets: dict[str, dict] = {}
    for source in terminologies:
        for entry in json.loads(source.read_text())["entry"]:
            r = entry["resource"]
            if r["resourceType"] == "CodeSystem" and r.get("concept"):
                code_systems[r["url"]] = _codes_in(r["concept"])
            elif r["resourceType"] == "ValueSet":
                value_sets[r["url"]] = r

    def expand(url: str) -> list[str] | None:
        vs = value_sets.get(url.split("|")[0])
        if vs is None or "compose" not in vs or vs["compose"].get("exclude"):
            return None
        codes: list[str] = []
        for include in vs["compose"]["include"]:
            if include.get("filter") or include.get("valueSet"):
                return None
            if include.get("concept"):
                codes.extend(c["code"] for c in include["concept"])
            elif include.get("system") in code_systems:
                codes.extend(code_systems[include["system"]])
            else:
                return None
        return sorted(set(codes)) if codes else None

    bindings: dict[str, list[str]] = {}
    for entry in json.loads(profiles.read_text())["entry"]:
        sd = entry["resource"]
        if sd["resourceType"] != "StructureDefinition" or sd.get("kind") != "resource" or sd.get("abstract"):
            continue
        for element in sd["snapshot"]["element"]:
            binding = element.get("binding", {})
            types = [t["code"] for t in element.get("type", [])]
            if binding.get("strength") != "required" or types != ["code"] or "valueSet" not in binding:
                continue
            codes = expand(binding["valueSet"])
            if codes and len(codes) <= 300:
                bindings[element["path"]] = codes
    return dict(sorted(bindings.items()))


def build_summary(profiles: Path) -> dict[str, list[str]]:
    """Top-level elements marked isSummary, per resource type, for ``_summary=true``."""
    summary: dict[str, list[str]] = {}
    for entry in json.loads(profiles.read_text())["entry"]:
        sd = entry["resource"]
        if sd["resourceType"] != "StructureDefinition" or sd.get("kind") != "resource":
            continue
        names = []
        for element in sd["snapshot"]["element"]:
            path = element["path"]
            if path.count(".") == 1 and element.get("isSummary"):
                names.append(path.split(".")[1].removesuffix("[x]"))
        summary[sd["type"]] = sorted(set(names))
    return dict(sorted(summary.items()))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/build_search_registry.py DIR  (DIR holds the spec's definition files)")
    spec = Path(sys.argv[1])
    write("search_parameters.json", build(spec / "search-parameters.json"))
    write("search_parameter_ids.json", build_ids(spec / "search-parameters.json"))
    write("patient_compartment.json", build_compartment(spec / "compartmentdefinition-patient.json"))
    write("summary_elements.json", build_summary(spec / "profiles-resources.json"))
    write(
        "required_bindings.json",
        build_bindings(spec / "profiles-resources.json", spec / "valuesets.json", spec / "v3-codesystems.json"),
    )
