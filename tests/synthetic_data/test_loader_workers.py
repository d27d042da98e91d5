"""The loader's speed-ups keep what is stored: worker processes, and several bundles to a commit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

import sandbox.fhir.transaction as transaction
from sandbox.app import ensure_default_sandbox
from sandbox.store.database import Database
from sandbox.store.sandboxes import baseline_view_for_loading, create_baseline
from sandbox.store.schema import INDEX_TABLES, outbox, resource_versions, resources
from synthetic_data.generator import GeneratorOptions
from synthetic_data.loader import Loader, LoadReport
from synthetic_data.output import write_population


def bad_bundle() -> dict[str, Any]:
    """A transaction whose first entries are fine and whose last is not: none of it may be stored."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:bad-p",
                "resource": {"resourceType": "Patient", "id": "bad-p", "gender": "female"},
                "request": {"method": "PUT", "url": "Patient/bad-p"},
            },
            {
                "resource": {
                    "resourceType": "Observation",
                    "id": "bad-o",
                    "status": "final",
                    "code": {"text": "weight"},
                    "subject": {"reference": "urn:uuid:bad-p"},
                    "valueQuantity": {"value": "heavy"},
                },
                "request": {"method": "PUT", "url": "Observation/bad-o"},
            },
        ],
    }


def later_bundles(first: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Bundles that need what earlier ones stored: a conditional reference to the first patient, found by
    search, and an update of that patient (a PUT whose resource exists) beside a new observation."""
    patient = first["entry"][0]["resource"]
    mrn = patient["identifier"][0]
    weight = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "valueQuantity": {"value": 80, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
    }
    by_search = {
        **weight,
        "id": "later-c",
        "subject": {"reference": f"Patient?identifier={mrn['system']}|{mrn['value']}"},
    }
    by_id = {**weight, "id": "later-o", "subject": {"reference": f"Patient/{patient['id']}"}}
    return {
        "patient-000003c.json": {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"resource": by_search, "request": {"method": "PUT", "url": "Observation/later-c"}},
                # A Patient of its own too: a bundle without one would load before the patients' bundles.
                {
                    "resource": {"resourceType": "Patient", "id": "later-p", "gender": "unknown"},
                    "request": {"method": "PUT", "url": "Patient/later-p"},
                },
            ],
        },
        "patient-000003d.json": {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "resource": {**patient, "gender": "other"},
                    "request": {"method": "PUT", "url": f"Patient/{patient['id']}"},
                },
                {"resource": by_id, "request": {"method": "PUT", "url": "Observation/later-o"}},
            ],
        },
    }


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """Three generated patients and the directory, a bad bundle among them, and bundles that build on them."""
    write_population(tmp_path / "out", GeneratorOptions(patients=3, seed=4, cases=()))
    folder = tmp_path / "out" / "fhir"
    (folder / "patient-000001b.json").write_text(json.dumps(bad_bundle()))
    for name, bundle in later_bundles(json.loads((folder / "patient-000001.json").read_bytes())).items():
        (folder / name).write_text(json.dumps(bundle))
    return tmp_path / "out"


def load(db: Database, baseline: str, path: Path, **options: Any) -> LoadReport:
    with db.write() as conn:
        create_baseline(conn, baseline, baseline_id=baseline)
        view = baseline_view_for_loading(conn, baseline)
    return Loader(db, view, **options).load(path)


def rows(db: Database, layer: str) -> dict[str, list[str]]:
    """What a layer holds, less what differs between two loads by nature (the time, the outbox's sequence)."""
    with db.read() as conn:
        versions = []
        for row in conn.execute(select(resource_versions).where(resource_versions.c.layer_id == layer)).mappings():
            body = orjson.loads(row["content"])
            del body["meta"]["lastUpdated"]
            kept = {k: v for k, v in row.items() if k not in ("layer_id", "last_updated", "content")}
            versions.append(repr((kept, body)))
        current = [
            repr(tuple(r))
            for r in conn.execute(
                select(resources.c.resource_type, resources.c.id, resources.c.version_id, resources.c.deleted).where(
                    resources.c.layer_id == layer
                )
            )
        ]
        index = [
            repr((kind, {k: v for k, v in row.items() if k != "layer_id"}))
            for kind, table in INDEX_TABLES.items()
            for row in conn.execute(
                select(table).where(table.c.layer_id == layer, table.c.param != "_lastUpdated")
            ).mappings()
        ]
        events = [
            repr(tuple(r))
            for r in conn.execute(
                select(
                    outbox.c.resource_type, outbox.c.resource_id, outbox.c.version_id, outbox.c.action, outbox.c.actor
                ).where(outbox.c.layer_id == layer)
            )
        ]
    return {
        k: sorted(v) for k, v in {"versions": versions, "current": current, "index": index, "events": events}.items()
    }


@pytest.mark.parametrize("commit_every", [150, 10_000], ids=["several-commits", "one-commit"])
def test_a_load_through_workers_stores_the_same_rows_as_one_process(
    db: Database, files: Path, monkeypatch: pytest.MonkeyPatch, commit_every: int
) -> None:
    ensure_default_sandbox(db)
    prepared_here: list[int] = []
    prepare = transaction.prepare_creates

    def counted(*args: Any, **kwargs: Any) -> Any:
        prepared_here.append(1)
        return prepare(*args, **kwargs)

    monkeypatch.setattr(transaction, "prepare_creates", counted)  # in this process only: workers are spawned
    alone = load(db, "alone", files, commit_every=commit_every)
    assert len(prepared_here) > 5  # one process validates and prepares every bundle itself
    prepared_here.clear()
    helped = load(db, "helped", files, workers=1, commit_every=commit_every)
    # The workers prepared every chunk but those of the bundles that build on earlier ones: the conditional
    # reference's bundle has no plan, and the update's chunk has a PUT that turned out to update (its new
    # observation is prepared here twice: the bundle ran again once the held index rows were in).  The bad
    # bundle failed before that step.
    assert len(prepared_here) == 3
    assert helped.loaded == alone.loaded and helped.total > 200
    assert [(r.where, r.reason) for r in helped.rejected] == [(r.where, r.reason) for r in alone.rejected]
    assert len(helped.rejected) == 1 and "patient-000001b.json" in helped.rejected[0].where
    stored_alone, stored_helped = rows(db, "alone"), rows(db, "helped")
    assert stored_helped == stored_alone
    assert len(stored_helped["index"]) > 5 * helped.total  # the comparison covers the index, not just resources
    assert not any("bad-" in row for rows_ in stored_helped.values() for row in rows_)
    # The conditional reference found the patient, and the update made a second version.
    later = [row for row in stored_helped["versions"] if "'later-" in row or "'version_id': 2" in row]
    assert len(later) == 4 and sum("'version_id': 2" in row for row in later) == 1


@pytest.mark.parametrize("commit_every", [1, 10_000], ids=["a-commit-each", "one-commit"])
def test_a_bad_bundle_among_others_is_rejected_and_nothing_of_it_is_written(
    db: Database, files: Path, commit_every: int
) -> None:
    ensure_default_sandbox(db)
    report = load(db, "course", files, commit_every=commit_every)
    [rejection] = report.rejected
    assert rejection.where.endswith("patient-000001b.json")
    assert "Bundle.entry[1]" in rejection.reason and "valueQuantity" in rejection.reason
    stored = rows(db, "course")
    assert not any("bad-" in row for rows_ in stored.values() for row in rows_)
    # The bundles before and after it, in the same transaction or not, are stored whole (one of them
    # updates a patient: a second version, and event, of a resource stored once).
    assert len(stored["versions"]) == len(stored["events"]) == report.total == len(stored["current"]) + 1
    patients = [r for r in stored["current"] if r.startswith("('Patient'")]
    assert len(patients) == 4
