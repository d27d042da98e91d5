"""Training cases: YAML files that place a specific patient into the population, under stable identifiers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sandbox.cli import main
from synthetic_data import DEFAULT_TODAY, generate_population
from synthetic_data.cases import CaseError, builtin_cases, load_case, parse_case

CHEST_PAIN = {
    "id": "chest-pain",
    "mrn": "CASE-9",
    "patient": {"sex": "male", "age": 58},
    "conditions": ["hypertension"],
    "allergies": [{"allergen": "penicillin", "reaction": "hives"}],
    "presenting": {"reason": {"snomed": "29857009", "display": "Chest pain (finding)"}},
}


def case_bundle(seed: int, case_id: str = "chest-pain-cardiology") -> list[dict[str, Any]]:
    for bundle in generate_population(4, seed):
        resources = [e["resource"] for e in bundle["entry"]]
        if resources[0]["resourceType"] == "Patient" and resources[0]["id"] == case_id:
            return resources
    raise AssertionError(f"case {case_id} not in the population")


def test_the_built_in_cases_are_placed_first_in_the_population() -> None:
    ids = [c.id for c in builtin_cases()]
    assert "chest-pain-cardiology" in ids
    patients = [b["entry"][0]["resource"] for b in list(generate_population(len(ids) + 2, 5))[1:]]
    assert [p["id"] for p in patients[: len(ids)]] == ids


def test_the_chest_pain_case_is_the_patient_its_file_describes() -> None:
    resources = case_bundle(1)
    patient = resources[0]
    assert patient["identifier"][0]["value"] == "CASE-0001"
    assert patient["name"][0]["family"] == "Okafor" and patient["gender"] == "male"
    born = int(patient["birthDate"][:4])
    assert DEFAULT_TODAY.year - born in (58, 59)
    allergies = [r for r in resources if r["resourceType"] == "AllergyIntolerance"]
    assert [a["code"]["coding"][0]["code"] for a in allergies] == ["70618"]  # penicillin
    assert allergies[0]["reaction"][0]["manifestation"][0]["coding"][0]["code"] == "247472004"  # hives
    problems = {r["code"]["coding"][0]["code"] for r in resources if r["resourceType"] == "Condition"}
    assert {"38341003", "55822004", "29857009"} <= problems
    today = [r for r in resources if r["resourceType"] == "Encounter" and r["status"] == "in-progress"]
    assert len(today) == 1 and today[0]["reasonCode"][0]["coding"][0]["code"] == "29857009"
    drugs = {
        r["medicationCodeableConcept"]["coding"][0]["code"]
        for r in resources
        if r["resourceType"] == "MedicationRequest"
    }
    assert "308182" not in drugs  # no amoxicillin for a penicillin allergy
    referrals = [r for r in resources if r["resourceType"] == "ServiceRequest"]
    assert not any(r["encounter"]["reference"] == f"urn:uuid:{today[0]['id']}" for r in referrals)  # the task


def test_a_case_keeps_its_ids_and_values_whatever_the_population_seed() -> None:
    one, other = case_bundle(1), case_bundle(2)
    assert [r["id"] for r in one] == [r["id"] for r in other]
    assert one[0]["birthDate"] == other[0]["birthDate"]
    assert one[0]["telecom"] == other[0]["telecom"]


def test_a_case_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "case.yaml"
    path.write_text("id: x1\nmrn: M1\npatient: {sex: female, age: 30}\nconditions: [asthma]\nsmoking: current\n")
    case = load_case(path)
    assert (case.id, case.mrn, case.sex, case.age, case.conditions, case.smoking) == (
        "x1",
        "M1",
        "female",
        30,
        (("asthma", 3),),
        "current",
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id": "no spaces allowed"}, "'id' must be a FHIR id"),
        ({"mrn": ""}, "'mrn' is required"),
        ({"patient": {"sex": "robot", "age": 3}}, "'patient.sex'"),
        ({"patient": {"sex": "male", "age": -1}}, "'patient.age'"),
        ({"conditions": ["gout"]}, "unknown condition 'gout'"),
        ({"conditions": [{"condition": "asthma", "years": 80}]}, "'years' must be between"),
        ({"allergies": ["cats"]}, "unknown allergen 'cats'"),
        ({"allergies": [{"allergen": "latex", "reaction": "sneezing"}]}, "unknown reaction 'sneezing'"),
        ({"smoking": "sometimes"}, "'smoking' must be one of"),
        ({"presenting": {"reason": {"snomed": 29857009, "display": "x"}}}, "'presenting.reason'"),
        ({"presenting": {"reason": {"snomed": "1", "display": "x"}, "vitals": {"mood": 3}}}, "'presenting.vitals'"),
    ],
)
def test_bad_case_files_are_refused_naming_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(CaseError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_case({**CHEST_PAIN, **change}, "case.yaml")


def test_generate_reports_a_bad_case_folder_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "broken.yaml").write_text("id: [unclosed\n")
    code = main(["generate", "--patients", "2", "--out", str(tmp_path / "out"), "--cases", str(cases), "--quiet"])
    assert code != 0
    err = capsys.readouterr().err.strip()
    assert "broken.yaml" in err and len(err.splitlines()) == 1
