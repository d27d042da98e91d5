"""The generator: deterministic, valid and clinically coherent charts."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from datetime import date
from functools import cache
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle

from sandbox.fhir.validation import dump_json, validate
from synthetic_data import DEFAULT_TODAY, GeneratorOptions, generate_population
from synthetic_data.cases import builtin_cases
from synthetic_data.codes import CHRONIC_BY_KEY, LOINC, MED, NPI_SYSTEM, RXNORM
from synthetic_data.ids import IdSource, luhn_check_digit, make_npi, npi_valid
from tests.synthetic_data.references import all_references

PATIENTS = 40


@cache
def population(seed: int = 7, patients: int = PATIENTS) -> tuple[dict[str, Any], ...]:
    return tuple(generate_population(patients, seed))


def resources_of(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry["resource"] for entry in bundle["entry"]]


def by_id(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Resources of a patient bundle by their urn:uuid fullUrl, the way their references name them."""
    return {entry["fullUrl"]: entry["resource"] for entry in bundle["entry"]}


def codes(concept: dict[str, Any]) -> set[str]:
    return {coding["code"] for coding in concept.get("coding", [])}


def test_the_same_seed_gives_byte_identical_output_ids_included() -> None:
    first = [dump_json(b) for b in generate_population(15, seed=42)]
    second = [dump_json(b) for b in generate_population(15, seed=42)]
    assert first == second


def test_output_does_not_depend_on_the_process_or_its_hash_seed() -> None:
    script = (
        "import hashlib; from synthetic_data import generate_population; from sandbox.fhir.validation import dump_json;"
        "print(hashlib.sha256(b''.join(dump_json(b) for b in generate_population(8, seed=9))).hexdigest())"
    )
    runs = [
        subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": h}, capture_output=True)
        for h in ("1", "2")
    ]
    digests = {run.stdout.decode() for run in runs}
    assert len(digests) == 1 and len(digests.pop().strip()) == 64


def test_a_different_seed_gives_different_patients_and_ids() -> None:
    one = population(7)[10]  # past the training cases, which are the same whatever the seed
    other = population(8)[10]
    assert dump_json(one) != dump_json(other)
    assert not {e["fullUrl"] for e in one["entry"]} & {e["fullUrl"] for e in other["entry"]}


def test_patients_do_not_depend_on_each_other() -> None:
    """Patient i is drawn from its own stream: a longer run starts with the same patients."""
    short = [dump_json(b) for b in generate_population(12, seed=7)]
    assert short[5:] == [dump_json(b) for b in population(7)[5:13]]


def test_the_directory_comes_first_then_one_transaction_bundle_per_patient() -> None:
    bundles = population()
    assert len(bundles) == PATIENTS + 1
    directory_types = Counter(r["resourceType"] for r in resources_of(bundles[0]))
    assert set(directory_types) == {"Organization", "Practitioner", "PractitionerRole"}
    for bundle in bundles:
        assert bundle["type"] == "transaction"
        for entry in bundle["entry"]:
            resource = entry["resource"]
            assert entry["fullUrl"].startswith("urn:uuid:")
            assert entry["request"] == {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
    for bundle in bundles[1:]:
        assert sum(r["resourceType"] == "Patient" for r in resources_of(bundle)) == 1


def test_every_resource_and_bundle_validates_with_the_models_and_the_server_validator() -> None:
    bundles = population()
    for bundle in bundles[:3]:  # the Bundle model validates the entries again: a few are enough for the shell
        Bundle.model_validate(bundle)
        validate(bundle)
    for bundle in bundles:
        for resource in resources_of(bundle):
            validate(resource)  # the R4B model and the required bindings; raises FhirError with every problem


def test_references_resolve_inside_the_bundle_or_into_the_directory() -> None:
    bundles = population()
    directory = {f"{r['resourceType']}/{r['id']}" for r in resources_of(bundles[0])}
    for bundle in bundles[1:]:
        local = by_id(bundle)
        for reference in all_references(bundle):
            assert reference in local or reference in directory, reference


def test_the_population_has_a_us_like_age_and_sex_mix_and_about_a_hundred_resources_each() -> None:
    bundles = population(11, 300)
    patients = [resources_of(b)[0] for b in bundles[1:]]
    ages = [DEFAULT_TODAY.year - int(p["birthDate"][:4]) for p in patients]
    children = sum(a < 18 for a in ages) / len(ages)
    seniors = sum(a >= 65 for a in ages) / len(ages)
    assert 0.14 < children < 0.32 and 0.10 < seniors < 0.26
    women = sum(p["gender"] == "female" for p in patients) / len(patients)
    assert 0.40 < women < 0.60
    sizes = [len(b["entry"]) for b in bundles[1:]]
    assert 70 < sum(sizes) / len(sizes) < 200


def test_diabetics_have_hba1c_results_and_they_are_high() -> None:
    diabetics = 0
    for bundle in population(11, 300)[1:]:
        resources = resources_of(bundle)
        if not _has_condition(resources, CHRONIC_BY_KEY["diabetes"].snomed):
            continue
        diabetics += 1
        hba1c = [r for r in resources if r["resourceType"] == "Observation" and "4548-4" in codes(r["code"])]
        assert hba1c, "a diabetic without an HbA1c"
        assert all(r["valueQuantity"]["value"] >= 6.5 for r in hba1c)
        assert all(r["valueQuantity"]["unit"] == "%" for r in hba1c)
    assert diabetics >= 5


def test_ckd_means_a_low_egfr_and_hypertension_a_raised_blood_pressure_from_their_onset() -> None:
    for bundle in population(11, 300)[1:]:
        resources = resources_of(bundle)
        observations = [r for r in resources if r["resourceType"] == "Observation"]
        ckd = _onset(resources, CHRONIC_BY_KEY["ckd"].snomed)
        for o in observations:
            if "33914-3" in codes(o["code"]):
                low = o["valueQuantity"]["value"] < 60
                assert low == (ckd is not None and o["effectiveDateTime"][:10] >= ckd)
        hypertension = _onset(resources, CHRONIC_BY_KEY["hypertension"].snomed)
        if hypertension is not None:
            systolic = [
                c["valueQuantity"]["value"]
                for o in observations
                if "85354-9" in codes(o["code"]) and o["effectiveDateTime"][:10] >= hypertension
                for c in o["component"]
                if "8480-6" in codes(c["code"])
            ]
            assert all(value >= 128 for value in systolic)


def test_every_medication_has_an_indication_and_avoids_the_patients_allergies() -> None:
    for bundle in population(11, 300)[1:]:
        local = by_id(bundle)
        resources = resources_of(bundle)
        allergies = {c for r in resources if r["resourceType"] == "AllergyIntolerance" for c in codes(r["code"])}
        for request in (r for r in resources if r["resourceType"] == "MedicationRequest"):
            reasons = [local[ref["reference"]] for ref in request["reasonReference"]]
            assert reasons and all(r["resourceType"] == "Condition" for r in reasons)
            assert request["medicationCodeableConcept"]["coding"][0]["system"] == RXNORM
            drug = request["medicationCodeableConcept"]["coding"][0]["code"]
            if "70618" in allergies:  # penicillin
                assert drug != "308182", "amoxicillin for a penicillin-allergic patient"
            if "10180" in allergies:  # sulfonamides
                assert drug != "198335"


def test_no_nsaids_with_ckd_heart_failure_or_anticoagulation_and_no_duplicate_long_term_drugs() -> None:
    risky = {CHRONIC_BY_KEY[k].snomed for k in ("ckd", "heart_failure", "atrial_fibrillation")}
    nsaids = {"849574", "197806"}  # naproxen, ibuprofen
    # A training case may order an NSAID on purpose, for the pharmacist's review the task is about.
    deliberate = {case.id: {MED[o.medication].rxnorm for o in case.orders} for case in builtin_cases()}
    for bundle in population(11, 300)[1:]:
        resources = resources_of(bundle)
        problems = {c for r in resources if r["resourceType"] == "Condition" for c in codes(r["code"])}
        patient = next(r["id"] for r in resources if r["resourceType"] == "Patient")
        requests = [
            r
            for r in resources
            if r["resourceType"] == "MedicationRequest"
            and r["medicationCodeableConcept"]["coding"][0]["code"] not in deliberate.get(patient, set())
        ]
        drugs = [r["medicationCodeableConcept"]["coding"][0]["code"] for r in requests]
        if problems & risky:
            assert not nsaids & set(drugs)
        long_term = [d for d, r in zip(drugs, requests, strict=True) if r["status"] in ("active", "stopped")]
        assert len(long_term) == len(set(long_term))


def test_dates_are_in_order_and_nothing_happens_before_birth_or_after_death() -> None:
    deceased = 0
    for bundle in population(11, 300)[1:]:
        resources = resources_of(bundle)
        patient = resources[0]
        birth = patient["birthDate"]
        death = patient.get("deceasedDateTime", "9999")
        deceased += "deceasedDateTime" in patient
        for r in resources:
            if r["resourceType"] == "Encounter":
                start, end = r["period"]["start"], r["period"].get("end", r["period"]["start"])
                assert birth <= start[:10] and start <= end and end < death and start[:10] <= "2026-01-01"
            if r["resourceType"] == "Condition":
                assert birth <= r["onsetDateTime"] <= r["recordedDate"][:10]
                if "abatementDateTime" in r:
                    assert r["onsetDateTime"] <= r["abatementDateTime"]
            for key in ("effectiveDateTime", "occurrenceDateTime", "authoredOn"):
                if key in r:
                    assert birth <= r[key][:10] <= death[:10]
    assert deceased >= 1


def test_vitals_and_labs_carry_loinc_codes_and_ucum_units() -> None:
    for resource in resources_of(population()[5]):
        if resource["resourceType"] == "Observation":
            assert resource["code"]["coding"][0]["system"] == LOINC
            quantity = resource.get("valueQuantity")
            if quantity:
                assert quantity["system"] == "http://unitsofmeasure.org" and quantity["code"] == quantity["unit"]


def test_practitioners_and_organizations_have_luhn_valid_npis() -> None:
    npis = [
        identifier["value"]
        for resource in resources_of(population()[0])
        for identifier in resource.get("identifier", [])
        if identifier["system"] == NPI_SYSTEM
    ]
    assert len(npis) > 10 and all(npi_valid(n) for n in npis)
    assert len(set(npis)) == len(npis)


def test_npi_check_digits() -> None:
    assert npi_valid("1234567893")  # the example in the CMS NPI check-digit paper
    assert not npi_valid("1234567894")
    assert not npi_valid("123456789")
    assert luhn_check_digit("80840123456789") == 3
    import random

    rng = random.Random(5)
    assert all(npi_valid(make_npi(rng)) for _ in range(500))


def test_every_patient_has_an_mrn_coverage_and_smoking_status_when_old_enough() -> None:
    mrns = set()
    for bundle in population()[1:]:
        resources = resources_of(bundle)
        patient = resources[0]
        mrn = next(i for i in patient["identifier"] if i["type"]["coding"][0]["code"] == "MR")
        mrns.add(mrn["value"])
        assert sum(r["resourceType"] == "Coverage" for r in resources) == 1
        age = DEFAULT_TODAY.year - int(patient["birthDate"][:4])
        smoking = [r for r in resources if r["resourceType"] == "Observation" and "72166-2" in codes(r["code"])]
        if age >= 15 and "deceasedDateTime" not in patient:
            assert smoking
    assert len(mrns) == PATIENTS


def test_code_status_is_recorded_for_adults_at_their_latest_visit_more_often_and_more_often_dnr_when_old() -> None:
    """C-CDA's Advance Directive Observation in FHIR: SNOMED CT 304251008 Resuscitation with the LOINC translation
    75320-2, valued For resuscitation (full code) or Not for resuscitation (DNR)."""
    seen: dict[str, list[str]] = {"under 18": [], "18-64": [], "65+": []}
    for bundle in population(11, 300)[1:]:
        resources = resources_of(bundle)
        patient = resources[0]
        age = DEFAULT_TODAY.year - int(patient["birthDate"][:4])
        band = "under 18" if age < 18 else "18-64" if age < 65 else "65+"
        statuses = [r for r in resources if r["resourceType"] == "Observation" and "304251008" in codes(r["code"])]
        assert len(statuses) <= 1
        if not statuses:
            seen[band].append("")
            continue
        status = statuses[0]
        assert {(c["system"], c["code"]) for c in status["code"]["coding"]} == {
            ("http://snomed.info/sct", "304251008"),
            (LOINC, "75320-2"),
        }
        value = status["valueCodeableConcept"]["coding"][0]
        assert (value["system"], value["code"]) in {
            ("http://snomed.info/sct", "304252001"),
            ("http://snomed.info/sct", "304253006"),
        }
        seen[band].append(value["code"])
        visits = [r for r in resources if r["resourceType"] == "Encounter"]
        latest = max(visits, key=lambda e: e["period"]["start"])
        assert status["effectiveDateTime"] == latest["period"]["start"]
        assert by_id(bundle)[status["encounter"]["reference"]] is latest

    def share(band: str, code: str | None = None) -> float:
        found = [c for c in seen[band] if c] if code else seen[band]
        return sum((c == code) if code else bool(c) for c in found) / max(1, len(found))

    assert seen["under 18"] and share("under 18") == 0
    assert 0.03 < share("18-64") < 0.35 and 0.35 < share("65+") < 0.85
    assert share("65+", "304253006") > share("18-64", "304253006")


def test_adding_code_status_left_every_other_id_of_a_chart_in_sequence() -> None:
    """Code status draws from its own stream and ids: the rest of a chart is what it was before it existed, its
    ids still ``{scope}/1``, ``{scope}/2``... with none skipped, and the code status's id from a scope of its own."""
    with_status = 0
    for index, bundle in enumerate(population()[1:]):
        if index < 3:
            continue  # the training cases have scopes of their own
        resources = resources_of(bundle)
        status = [r["id"] for r in resources if r["resourceType"] == "Observation" and "304251008" in codes(r["code"])]
        assert status == [] or status == [IdSource(f"7/{index}/code-status").next()]
        with_status += bool(status)
        others = {r["id"] for r in resources} - set(status)
        source = IdSource(f"7/{index}")
        assert others == {source.next() for _ in others}  # the first len(others) ids of the scope, none skipped
    assert with_status


def test_children_get_cdc_schedule_immunizations() -> None:
    for bundle in population(11, 300)[1:]:
        resources = resources_of(bundle)
        birth = date.fromisoformat(resources[0]["birthDate"])
        if (DEFAULT_TODAY - birth).days < 2 * 365 or (DEFAULT_TODAY - birth).days > 4 * 365:
            continue
        vaccines = Counter(
            r["vaccineCode"]["coding"][0]["code"] for r in resources if r["resourceType"] == "Immunization"
        )
        assert vaccines["20"] >= 3 and vaccines["08"] >= 3 and vaccines["03"] >= 1  # DTaP, Hep B, MMR
        return
    pytest.fail("no toddler in the population")


def test_adolescents_get_tdap_hpv_and_meningococcal_vaccines_at_eleven() -> None:
    checked = 0
    for bundle in population(11, 300)[1:]:
        resources = resources_of(bundle)
        birth = date.fromisoformat(resources[0]["birthDate"])
        age = (DEFAULT_TODAY - birth).days / 365.25
        if not 12.5 < age < 15.5:  # turned 11 well inside the five-year window, and has had a visit since
            continue
        checked += 1
        vaccines = {r["vaccineCode"]["coding"][0]["code"] for r in resources if r["resourceType"] == "Immunization"}
        assert {"115", "165", "114"} <= vaccines
    assert checked >= 3


@pytest.mark.parametrize(
    "options", [{"patients": -1}, {"patients": 2, "seed": -5}, {"patients": 2, "history_years": 0}]
)
def test_bad_options_are_refused(options: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        GeneratorOptions(**options)


def _has_condition(resources: list[dict[str, Any]], snomed: str) -> bool:
    return any(r["resourceType"] == "Condition" and snomed in codes(r["code"]) for r in resources)


def _onset(resources: list[dict[str, Any]], snomed: str) -> str | None:
    return next(
        (r["onsetDateTime"] for r in resources if r["resourceType"] == "Condition" and snomed in codes(r["code"])),
        None,
    )
