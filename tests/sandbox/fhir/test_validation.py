"""What ``validate`` reports for empty and null values, which the R4B models let pass.

Validation first checks cheaply whether a resource has any such value and builds the located
issues only when it has; these cases pin that the issues are the same either way.
"""

from __future__ import annotations

import pytest

from sandbox.fhir.outcome import FhirError
from sandbox.fhir.validation import validate


def _issues(resource: dict) -> list[tuple[str, str, str | None]]:
    with pytest.raises(FhirError) as caught:
        validate(resource)
    assert caught.value.status == 422
    return [(i.code, i.diagnostics, i.expression) for i in caught.value.issues]


def test_a_clean_resource_passes_unchanged():
    patient = {"resourceType": "Patient", "name": [{"family": "Ng", "given": ["Al"]}], "_gender": None}
    assert validate(patient) is patient


def test_nulls_empty_values_and_blank_strings_are_each_located():
    issues = _issues(
        {
            "resourceType": "Patient",
            "active": None,
            "name": [{"family": "  ", "given": []}, {}],
            "telecom": [{"system": "phone", "value": "555-0100", "period": {}}],
        }
    )
    assert [i for i in issues if i[0] in ("structure", "value") and "at Patient" in i[1]][:5] == [
        ("structure", "null is not allowed at Patient.active", "Patient.active"),
        ("value", "Empty string at Patient.name[0].family", "Patient.name[0].family"),
        ("structure", "Empty array at Patient.name[0].given", "Patient.name[0].given"),
        ("structure", "Empty object at Patient.name[1]", "Patient.name[1]"),
        ("structure", "Empty object at Patient.telecom[0].period", "Patient.telecom[0].period"),
    ]


def test_primitive_extension_placeholders_may_be_null():
    """``_given: [null, {...}]`` lines extensions up with values; a null there or on ``_x`` is legal."""
    patient = {
        "resourceType": "Patient",
        "name": [{"given": ["A", "B"], "_given": [None, {"extension": [{"url": "http://x", "valueString": "y"}]}]}],
        "_birthDate": None,
    }
    assert validate(patient) is patient


def test_a_null_deep_inside_is_found():
    issues = _issues(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": None}]},
        }
    )
    assert (
        "structure",
        "null is not allowed at Observation.code.coding[0].code",
        "Observation.code.coding[0].code",
    ) in issues
