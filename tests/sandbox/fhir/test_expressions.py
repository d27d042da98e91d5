"""Search parameter expressions compiled to steps give what fhirpathpy gives for the same expression."""

from __future__ import annotations

import pytest

from sandbox.fhir.expressions import _FhirpathBranch, compile_expression

DECEASED = "Patient.deceased.exists() and Patient.deceased != false"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, False),  # absent: false, as FHIRPath's `false and {}` is
        ({"deceasedBoolean": True}, True),
        ({"deceasedBoolean": False}, False),
        ({"deceasedDateTime": "2020-01-01"}, True),
        ({"deceasedDateTime": "2020"}, True),
    ],
)
def test_patient_deceased_is_compiled_and_agrees_with_fhirpath(extra: dict, expected: bool):
    (branch,) = compile_expression(DECEASED, "Patient")
    assert not isinstance(branch, _FhirpathBranch)
    patient = {"resourceType": "Patient", **extra}
    assert [value for value, _ in branch.run(patient)] == [expected]
    assert [value for value, _ in _FhirpathBranch(DECEASED).run(patient)] == [expected]


def test_an_expression_the_steps_cannot_express_still_runs_through_fhirpath():
    (branch,) = compile_expression("Patient.name.exists() or Patient.gender = 'male'", "Patient")
    assert isinstance(branch, _FhirpathBranch)
    assert [value for value, _ in branch.run({"resourceType": "Patient", "gender": "male"})] == [True]
