"""Baselines holding the synthetic training cases that tasks are about.

A task names a case (``chest-pain-cardiology``); the generator writes that
case's patient with the case id as the Patient id, and stable ids for the rest,
so the same task finds the same patient in every sandbox made from the baseline.
"""

from __future__ import annotations

from sqlalchemy import Connection

from sandbox.fhir.context import FhirContext
from sandbox.fhir.interactions import Interactions
from sandbox.fhir.transaction import BundleProcessor
from sandbox.store.database import Database
from sandbox.store.repository import Actor
from sandbox.store.sandboxes import baseline_view_for_loading, create_baseline
from synthetic_data.cases import builtin_cases
from synthetic_data.generator import Generator, GeneratorOptions

CASE_LOADER = Actor("system:task-cases", "loader")


def known_cases() -> list[str]:
    return [case.id for case in builtin_cases()]


def load_case_baseline(db: Database, fhir: Interactions, name: str, *, baseline_id: str | None = None) -> str:
    """A new baseline with the generator's directory and every built-in training case; returns its id."""
    cases = builtin_cases()
    generator = Generator(GeneratorOptions(len(cases)))
    with db.write() as conn:
        baseline = create_baseline(conn, name, baseline_id=baseline_id).id
    with db.read() as conn:
        view = _loading_view(conn, baseline)
    ctx = FhirContext(db, fhir, view, CASE_LOADER, "http://localhost/fhir")
    BundleProcessor(ctx, prefer="minimal").process(generator.directory_bundle())
    for index in range(len(cases)):
        BundleProcessor(ctx, prefer="minimal").process(generator.patient_bundle(index))
    return baseline


def _loading_view(conn: Connection, baseline_id: str):  # type: ignore[no-untyped-def]
    return baseline_view_for_loading(conn, baseline_id)
