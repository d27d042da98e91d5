"""The indexer's rows are pinned: every Synthea sample resource, a frozen slice of a generated
population and a few hand-written edge cases must index exactly as recorded in ``index_golden.json``.

The indexer is tuned for speed; this is what keeps the tuning from changing a single row (or the
order of the rows).  The golden file was written by the indexer before the tuning; regenerate it only
for an intended change of behaviour: ``EHR_SANDBOX_WRITE_INDEX_GOLDEN=1 python -m pytest <this file>``.
"""

from __future__ import annotations

import hashlib
import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from sandbox.fhir.search_params import registry
from sandbox.fhir.validation import parse_json
from sandbox.store.indexer import index_resource

GOLDEN = Path(__file__).with_name("index_golden.json")
SYNTHEA = Path(__file__).resolve().parents[4] / "shared" / "data" / "synthea"
WRITE = os.environ.get("EHR_SANDBOX_WRITE_INDEX_GOLDEN") == "1"


def _decimals(text: str) -> Any:
    return json.loads(text, parse_float=Decimal)


def _encode(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    raise TypeError(type(value).__name__)


def _decode(obj: dict) -> Any:
    return Decimal(obj["$decimal"]) if set(obj) == {"$decimal"} else obj


def _golden() -> dict[str, Any]:
    return json.loads(GOLDEN.read_text(), object_hook=_decode)


def _synthea_resources() -> dict[str, dict]:
    found = {}
    for path in sorted(SYNTHEA.glob("*.json")):
        for n, entry in enumerate(parse_json(path.read_bytes())["entry"]):
            found[f"{path.name}#{n}"] = entry["resource"]
    return found


def _write(**groups: Any) -> None:
    golden = _golden() if GOLDEN.exists() else {}
    golden.update(groups)
    GOLDEN.write_text(json.dumps(golden, indent=0, sort_keys=True, default=_encode) + "\n")


def _rows(resource: dict) -> dict[str, list[dict]]:
    return index_resource(registry(), resource)


def _digest(resource: dict) -> str:
    """The Synthea rows are recorded as digests: in full they would be most of a megabyte."""
    return hashlib.sha256(json.dumps(_rows(resource), sort_keys=True).encode()).hexdigest()[:32]


@pytest.mark.skipif(not SYNTHEA.is_dir(), reason="the Synthea samples are not next to the checkout")
def test_every_synthea_sample_resource_indexes_exactly_as_recorded():
    resources = _synthea_resources()
    if WRITE:
        _write(synthea={key: _digest(resource) for key, resource in resources.items()})
    expected = _golden()["synthea"]
    assert sorted(expected) == sorted(resources)
    for key, resource in resources.items():
        assert _digest(resource) == expected[key], key


@pytest.mark.parametrize("group", ["generated", "edge_cases"])
def test_recorded_resources_index_exactly_as_recorded(group: str):
    """Each case holds its resource and its rows; row order matters too (it is the insert order)."""
    if WRITE:
        _write(**{group: [{"resource": c["resource"], "rows": _rows(c["resource"])} for c in _golden()[group]]})
    cases = _golden()[group]
    assert cases
    for case in cases:
        assert _rows(case["resource"]) == case["rows"], (
            f"{case['resource']['resourceType']}/{case['resource'].get('id')}"
        )
