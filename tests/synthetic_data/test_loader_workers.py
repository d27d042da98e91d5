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


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """Three generated patients and the directory, with a bad bundle among them."""
    write_population(tmp_path / "out", GeneratorOptions(patients=3, seed=4, cases=()))
    (tmp_path / "out" / "fhir" / "patient-000001b.json").write_text(json.dumps(bad_bundle()))
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


def test_a_load_through_workers_stores_the_same_rows_as_one_process(
    db: Database, files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_default_sandbox(db)
    prepared_here: list[int] = []
    prepare = transaction.prepare_creates

    def counted(*args: Any, **kwargs: Any) -> Any:
        prepared_here.append(1)
        return prepare(*args, **kwargs)

    monkeypatch.setattr(transaction, "prepare_creates", counted)  # in this process only: workers are spawned
    alone = load(db, "alone", files, commit_every=150)
    assert prepared_here  # one process validates and prepares every bundle itself
    prepared_here.clear()
    helped = load(db, "helped", files, workers=2, commit_every=150)
    # The workers prepared every good bundle (the bad one was run here again, and failed before that step).
    assert prepared_here == []
    assert helped.loaded == alone.loaded and helped.total > 200
    assert [(r.where, r.reason) for r in helped.rejected] == [(r.where, r.reason) for r in alone.rejected]
    assert len(helped.rejected) == 1 and "patient-000001b.json" in helped.rejected[0].where
    stored_alone, stored_helped = rows(db, "alone"), rows(db, "helped")
    assert stored_helped == stored_alone
    assert len(stored_helped["index"]) > 5 * helped.total  # the comparison covers the index, not just resources
    assert not any("bad-" in row for rows_ in stored_helped.values() for row in rows_)


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
    # The bundles before and after it, in the same transaction or not, are stored whole.
    assert len(stored["current"]) == len(stored["versions"]) == len(stored["events"]) == report.total
    patients = [r for r in stored["current"] if r.startswith("('Patient'")]
    assert len(patients) == 3
