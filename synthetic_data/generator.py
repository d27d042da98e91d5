"""The library entry point: a deterministic population as FHIR R4 transaction bundles.

``generate_population(patients=N, seed=S)`` yields the shared directory bundle
(organizations, practitioners, practitioner roles, payers) first, then one
transaction bundle per patient.  Every entry is a PUT of a resource with a
fixed id and a ``urn:uuid:`` fullUrl, so loading the same output twice updates
rather than duplicates, and references inside a patient's bundle are
``urn:uuid:`` references that the transaction resolves.

Everything derives from the seed and the options: patient ``i`` draws from its
own random stream (``seed:i``), so patients can be generated in any order or in
parallel and still come out byte-identical.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from synthetic_data.cases import Case, builtin_cases
from synthetic_data.chart import ChartWriter, Options
from synthetic_data.ids import NAMESPACE, IdSource
from synthetic_data.population import draw_person
from synthetic_data.providers import Directory, build_directory, faker

# The generator's "today": fixed, so that output does not depend on when it runs.
DEFAULT_TODAY = date(2026, 1, 1)
DEFAULT_HISTORY_YEARS = 5


@dataclass(frozen=True)
class GeneratorOptions:
    patients: int
    seed: int = 0
    today: date = DEFAULT_TODAY
    history_years: int = DEFAULT_HISTORY_YEARS
    cases: tuple[Case, ...] | None = field(default=None)  # None: the built-in cases

    def __post_init__(self) -> None:
        if not isinstance(self.patients, int) or self.patients < 0:
            raise ValueError(f"patients must be a whole number >= 0, not {self.patients!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a whole number >= 0, not {self.seed!r}")
        if not 1 <= self.history_years <= 50:
            raise ValueError(f"history_years must be between 1 and 50, not {self.history_years!r}")

    @property
    def chosen_cases(self) -> tuple[Case, ...]:
        cases = builtin_cases() if self.cases is None else self.cases
        return cases[: self.patients]


class Generator:
    """Holds what every patient of one population shares (the directory); makes patients by index."""

    def __init__(self, options: GeneratorOptions) -> None:
        self.options = options
        self.directory: Directory = build_directory(options.seed, options.patients)
        self.chart_options = Options(options.today, options.history_years)
        self.cases = options.chosen_cases

    def directory_bundle(self) -> dict[str, Any]:
        return transaction_bundle(f"{self.options.seed}/directory", self.directory.resources, {})

    def patient_bundle(self, index: int) -> dict[str, Any]:
        """The bundle of patient ``index`` (0-based); the first indexes hold the training cases."""
        resources, full_urls, scope = self.patient_resources(index)
        return transaction_bundle(scope, resources, full_urls)

    def patient_resources(self, index: int) -> tuple[list[dict[str, Any]], dict[str, str], str]:
        seed = self.options.seed
        if index < len(self.cases):
            case = self.cases[index]
            scope = f"case/{case.id}"
            rng = random.Random(scope)
            person = case.person(rng, self.options.today)
            mrn, patient_id = case.mrn, case.id
        else:
            scope = f"{seed}/{index}"
            rng = random.Random(f"{seed}:{index}")
            person = draw_person(rng, self.options.today, self.options.history_years)
            mrn, patient_id = f"{seed}-{index + 1:07d}", None
        fake = faker()
        fake.seed_instance(rng.getrandbits(64))
        writer = ChartWriter(
            person,
            ids=IdSource(scope),
            rng=rng,
            fake=fake,
            directory=self.directory,
            clinic_index=index,
            options=self.chart_options,
            mrn=mrn,
            patient_id=patient_id,
        )
        if index < len(self.cases) and self.cases[index].given and self.cases[index].family:
            writer.fixed_name = (self.cases[index].given or (), self.cases[index].family or "")
        resources = writer.write()
        if index < len(self.cases) and (presenting := self.cases[index].presenting) is not None:
            reason = (presenting.reason_code, presenting.reason_display)
            writer.presenting_encounter(reason, presenting.encounter_class, presenting.vitals)
        if index < len(self.cases):
            # After the rest of the case's chart, and drawing nothing from its random stream, so that what a
            # case file already gave keeps its ids and values.
            writer.case_orders(self.cases[index].orders)
            writer.sent_referrals(self.cases[index].referrals)
        return resources, writer.full_urls, scope


def generate_population(
    patients: int,
    seed: int = 0,
    *,
    today: date = DEFAULT_TODAY,
    history_years: int = DEFAULT_HISTORY_YEARS,
    cases: Sequence[Case] | None = None,
) -> Iterator[dict[str, Any]]:
    """The directory bundle, then ``patients`` patient bundles (FHIR R4 transaction bundles as dicts)."""
    options = GeneratorOptions(patients, seed, today, history_years, None if cases is None else tuple(cases))
    generator = Generator(options)
    yield generator.directory_bundle()
    for index in range(patients):
        yield generator.patient_bundle(index)


def transaction_bundle(scope: str, resources: list[dict[str, Any]], full_urls: dict[str, str]) -> dict[str, Any]:
    """Every entry a PUT of the resource's own id, under its ``urn:uuid:`` fullUrl."""
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid5(NAMESPACE, f"bundle/{scope}")),
        "type": "transaction",
        "entry": [
            {
                "fullUrl": full_urls.get(r["id"]) or f"urn:uuid:{r['id']}",
                "resource": r,
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
            }
            for r in resources
        ],
    }
