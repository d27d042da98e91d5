"""Loading our output and Synthea's through the one write path, references intact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from sandbox.app import ensure_default_sandbox
from sandbox.store.database import Database
from sandbox.store.layers import View
from sandbox.store.sandboxes import baseline_view_for_loading, create_baseline
from sandbox.store.schema import resource_versions, resources
from synthetic_data.generator import GeneratorOptions
from synthetic_data.loader import Loader, LoadError
from synthetic_data.output import write_population
from tests.synthetic_data.references import all_references

SYNTHEA = Path(__file__).resolve().parents[3] / "shared" / "data" / "synthea"
DEFAULT = View("default", ("default",))
needs_synthea = pytest.mark.skipif(
    not SYNTHEA.is_dir(), reason="the Synthea samples (../shared/data/synthea) are absent"
)


@pytest.fixture
def ready(db: Database) -> Database:
    ensure_default_sandbox(db)
    return db


def stored(db: Database, layer: str = "default") -> dict[str, dict[str, Any]]:
    with db.read() as conn:
        rows = conn.execute(
            select(resources.c.resource_type, resources.c.id, resources.c.content).where(
                resources.c.layer_id == layer, resources.c.deleted.is_(False)
            )
        ).all()
    return {f"{r.resource_type}/{r.id}": orjson.loads(r.content) for r in rows}


def assert_references_intact(contents: dict[str, dict[str, Any]]) -> None:
    for key, resource in contents.items():
        contained = {f"#{c['id']}" for c in resource.get("contained", [])}
        for reference in all_references(resource):
            assert reference in contents or reference in contained, f"{key} refers to {reference}, not loaded"


@needs_synthea
def test_synthea_batches_load_with_references_intact(ready: Database) -> None:
    report = Loader(ready, DEFAULT).load(SYNTHEA)
    assert report.rejected == []
    assert report.files == 7
    contents = stored(ready)
    assert sum(1 for k in contents if k.startswith("Patient/")) == 5
    assert_references_intact(contents)
    # Synthea's ids are kept, and the practitioners its patient bundles repeat are stored once.
    assert "Patient/d4519c92-d241-b2b2-7360-291d60be699e" in contents
    assert sum(1 for k in contents if k.startswith("Practitioner/")) == 17


@needs_synthea
def test_loading_twice_updates_instead_of_duplicating(ready: Database) -> None:
    loader = Loader(ready, DEFAULT)
    loader.load(SYNTHEA / "practitionerInformation1603148702656.json")
    loader.load(SYNTHEA / "practitionerInformation1603148702656.json")
    contents = stored(ready)
    assert sum(1 for k in contents if k.startswith("Practitioner/")) == 17
    assert all(c["meta"]["versionId"] == "2" for c in contents.values())


def test_our_output_loads_into_a_baseline_attributed_to_the_loader(ready: Database, tmp_path: Path) -> None:
    write_population(tmp_path, GeneratorOptions(patients=4, seed=2))
    with ready.write() as conn:
        create_baseline(conn, "Course", baseline_id="course")
        view = baseline_view_for_loading(conn, "course")
    seen: list[tuple[int, int]] = []
    report = Loader(ready, view, progress=lambda done, total, _r: seen.append((done, total))).load(tmp_path)
    assert report.rejected == []
    assert seen[-1] == (5, 5)  # the directory bundle and four patients; the NDJSON copy is not loaded twice
    contents = stored(ready, "course")
    assert report.total == len(contents)
    assert "Patient/chest-pain-cardiology" in contents  # a training case keeps the id its file gives it
    assert_references_intact(contents)
    with ready.read() as conn:
        routes = set(conn.execute(select(resource_versions.c.route, resource_versions.c.actor)).all())
    assert routes == {("loader", "system:loader")}


def test_our_ndjson_folder_loads_with_references_intact(ready: Database, tmp_path: Path) -> None:
    summary = write_population(tmp_path, GeneratorOptions(patients=2, seed=6, cases=()))
    report = Loader(ready, DEFAULT).load(tmp_path / "ndjson")
    assert report.rejected == []
    contents = stored(ready)
    assert len(contents) == report.total == sum(summary.by_type.values())
    assert_references_intact(contents)


def test_ndjson_loads_and_bad_lines_are_rejected_with_their_reason(ready: Database, tmp_path: Path) -> None:
    good = {"resourceType": "Patient", "id": "p1", "gender": "female"}
    robot = {"resourceType": "Patient", "id": "p2", "gender": "robot"}
    obs = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"text": "weight"},
        "subject": {"reference": "Patient/p1"},
    }
    path = tmp_path / "data.ndjson"
    path.write_text("\n".join([json.dumps(good), json.dumps(robot), "{not json", json.dumps(obs)]) + "\n")
    report = Loader(ready, DEFAULT).load(path)
    assert report.loaded == {"Patient": 1, "Observation": 1}
    reasons = {r.where.rsplit(" ", 1)[1]: r.reason for r in report.rejected}
    assert set(reasons) == {"2", "3"}
    assert "'robot' is not a valid code" in reasons["2"]
    assert "not valid JSON" in reasons["3"]
    assert set(stored(ready)) == {"Patient/p1", "Observation/o1"}


def test_a_failing_transaction_bundle_is_rejected_whole_with_the_reason(ready: Database, tmp_path: Path) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": "a"}, "request": {"method": "PUT", "url": "Patient/a"}},
            {
                "resource": {"resourceType": "Patient", "id": "b", "birthDate": "last year"},
                "request": {"method": "PUT", "url": "Patient/b"},
            },
        ],
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bundle))
    report = Loader(ready, DEFAULT).load(path)
    assert report.total == 0 and len(report.rejected) == 1
    assert "entry[1]" in report.rejected[0].reason or "birthDate" in report.rejected[0].reason
    assert stored(ready) == {}


def test_collection_bundles_load_entry_by_entry(ready: Database, tmp_path: Path) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:6b2f0c1e-8d11-4c52-9a55-000000000001", "resource": {"resourceType": "Patient"}},
            {
                "resource": {
                    "resourceType": "Condition",
                    "subject": {"reference": "urn:uuid:6b2f0c1e-8d11-4c52-9a55-000000000001"},
                }
            },
        ],
    }
    path = tmp_path / "collection.json"
    path.write_text(json.dumps(bundle))
    report = Loader(ready, DEFAULT).load(path)
    assert report.loaded == {"Patient": 1, "Condition": 1}
    assert_references_intact(stored(ready))


def test_files_that_are_not_fhir_are_reported_not_loaded(ready: Database, tmp_path: Path) -> None:
    (tmp_path / "notes.json").write_text('{"hello": "world"}')
    (tmp_path / "broken.json").write_text("{")
    report = Loader(ready, DEFAULT).load(tmp_path)
    assert report.total == 0
    assert sorted(Path(r.where).name for r in report.rejected) == ["broken.json", "notes.json"]


def test_a_missing_or_empty_path_is_an_error(ready: Database, tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="does not exist"):
        Loader(ready, DEFAULT).load(tmp_path / "missing")
    with pytest.raises(LoadError, match="no .json or .ndjson"):
        Loader(ready, DEFAULT).load(tmp_path)
