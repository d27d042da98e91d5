"""Writing a generated population to disk in three formats.

``DIR/fhir/``      ``directory.json`` (organizations, practitioners, roles, payers), then one transaction
                   bundle per patient (``patient-000001.json``, ...)
``DIR/ndjson/``    one ``{ResourceType}.ndjson`` per type, the FHIR Bulk Data layout, references as ``Type/id``
``DIR/hl7v2/``     ``patient-000001-adt.hl7`` (ADT^A04) and ``patient-000001-oru.hl7`` (ORU^R01) per patient

The same seed and options write the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sandbox.fhir.validation import dump_json
from synthetic_data.generator import Generator, GeneratorOptions, transaction_bundle
from synthetic_data.hl7v2 import messages_for


@dataclass
class WriteSummary:
    patients: int = 0
    resources: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    files: int = 0


def prepare_output_dir(out: Path) -> None:
    """Create ``out`` and its three folders, or raise OSError saying why it cannot be written."""
    for sub in ("fhir", "ndjson", "hl7v2"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    probe = out / ".write-test"
    probe.write_bytes(b"")
    probe.unlink()


def write_population(
    out: Path, options: GeneratorOptions, progress: Callable[[int], None] | None = None
) -> WriteSummary:
    prepare_output_dir(out)
    generator = Generator(options)
    summary = WriteSummary()
    ndjson: dict[str, IO[bytes]] = {}
    for stale in (out / "ndjson").glob("*.ndjson"):
        stale.unlink()  # appending to a previous run's files would mix populations

    def to_ndjson(resources: list[dict[str, Any]], full_urls: dict[str, str]) -> None:
        targets = {url: f"{r['resourceType']}/{r['id']}" for r in resources if (url := full_urls.get(r["id"]))}
        for resource in resources:
            _rewrite_references(resource, targets)
            rtype = resource["resourceType"]
            handle = ndjson.get(rtype)
            if handle is None:
                handle = ndjson[rtype] = (out / "ndjson" / f"{rtype}.ndjson").open("wb")
            handle.write(dump_json(resource) + b"\n")
            summary.by_type[rtype] = summary.by_type.get(rtype, 0) + 1

    try:
        directory = generator.directory.resources
        (out / "fhir" / "directory.json").write_bytes(dump_json(generator.directory_bundle()))
        practitioners = {f"Practitioner/{r['id']}": r for r in directory if r["resourceType"] == "Practitioner"}
        to_ndjson(directory, {r["id"]: f"urn:uuid:{r['id']}" for r in directory})
        summary.files += 1
        for index in range(options.patients):
            resources, full_urls, scope = generator.patient_resources(index)
            name = f"patient-{index + 1:06d}"
            (out / "fhir" / f"{name}.json").write_bytes(dump_json(transaction_bundle(scope, resources, full_urls)))
            adt, oru = messages_for(resources, practitioners, index + 1)
            (out / "hl7v2" / f"{name}-adt.hl7").write_bytes(adt.encode())
            (out / "hl7v2" / f"{name}-oru.hl7").write_bytes(oru.encode())
            to_ndjson(resources, full_urls)  # last: it rewrites the references in place
            summary.patients += 1
            summary.resources += len(resources)
            summary.files += 3
            if progress:
                progress(index + 1)
    finally:
        for handle in ndjson.values():
            handle.close()
    summary.files += len(ndjson)
    return summary


def _rewrite_references(node: Any, targets: dict[str, str]) -> None:
    if isinstance(node, dict):
        reference = node.get("reference")
        if isinstance(reference, str) and reference in targets:
            node["reference"] = targets[reference]
        for value in node.values():
            if isinstance(value, dict | list):
                _rewrite_references(value, targets)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, dict | list):
                _rewrite_references(item, targets)
