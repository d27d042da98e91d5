"""Prefixes on date, number and quantity values, with date precision as ranges (FHIR R4 search, 3.1.1.4.7).

For dates both sides are ranges: ``eq`` means the search range contains the
stored one; ``gt`` that the stored range reaches above the search range; ``ge``
is ``gt`` or ``eq``; ``sa``/``eb`` that it lies wholly after/before.
"""

from __future__ import annotations

import pytest

from sandbox.fhir.outcome import FhirError
from tests.sandbox.fhir.searching import Store, observation


@pytest.fixture
def store(db) -> Store:
    s = Store(db)
    s.put_all(
        observation("dec31", effectiveDateTime="2019-12-31T12:00:00Z"),
        observation("jan15", effectiveDateTime="2020-01-15T12:00:00Z"),
        observation("feb1", effectiveDateTime="2020-02-01T00:00:00Z"),
        observation("span", effectivePeriod={"start": "2019-12-20T00:00:00Z", "end": "2020-01-10T00:00:00Z"}),
        observation("open", effectivePeriod={"start": "2020-01-20T00:00:00Z"}),  # still going
    )
    return s


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("2020-01", {"jan15"}),
        ("eq2020-01", {"jan15"}),
        ("ne2020-01", {"dec31", "feb1", "span", "open"}),
        ("gt2020-01", {"feb1", "open"}),
        ("lt2020-01", {"dec31", "span"}),
        ("ge2020-01", {"jan15", "feb1", "open"}),
        ("le2020-01", {"jan15", "dec31", "span"}),
        ("sa2020-01", {"feb1"}),
        ("eb2020-01", {"dec31"}),
        ("ge2020-01-15T12:00:00Z", {"jan15", "feb1", "open"}),
        ("gt2020-01-15T12:00:00Z", {"feb1", "open"}),
        ("lt2020-01-15T12:00:00Z", {"dec31", "span"}),
        ("le2020-01-15T12:00:00Z", {"dec31", "span", "jan15"}),
        ("eq2020-01-15T07:00:00-05:00", {"jan15"}),
    ],
)
def test_date_prefixes(store, query, expected):
    assert store.found("Observation", f"date={query}") == expected


def test_two_date_prefixes_make_an_interval(store):
    assert store.found("Observation", "date=ge2020-01-01&date=lt2020-02-01") == {"jan15", "span", "open"}
    assert store.found("Observation", "date=sa2019-12-31&date=eb2020-02-01") == {"jan15"}


def test_ap_is_near_the_value(store):
    assert "jan15" in store.found("Observation", "date=ap2020-01-15")
    assert store.found("Observation", "date=ap1950-01-01") == set()


def test_number_prefixes(db):
    s = Store(db)
    for rid, value in (("r10", 10), ("r100", 100), ("r1000", 1000)):
        s.put(
            {
                "resourceType": "RiskAssessment",
                "id": rid,
                "status": "final",
                "subject": {"reference": "Patient/x"},
                "prediction": [{"probabilityDecimal": value}],
            }
        )
    assert s.found("RiskAssessment", "probability=100") == {"r100"}
    assert s.found("RiskAssessment", "probability=ne100") == {"r10", "r1000"}
    assert s.found("RiskAssessment", "probability=gt100") == {"r1000"}
    assert s.found("RiskAssessment", "probability=ge100") == {"r100", "r1000"}
    assert s.found("RiskAssessment", "probability=lt100") == {"r10"}
    assert s.found("RiskAssessment", "probability=le100") == {"r10", "r100"}
    assert s.found("RiskAssessment", "probability=sa100") == {"r1000"}
    assert s.found("RiskAssessment", "probability=eb100") == {"r10"}
    assert s.found("RiskAssessment", "probability=ap95") == {"r100"}  # within 10%
    assert s.found("RiskAssessment", "probability=gt1e1") == {"r100", "r1000"}


def test_quantity_prefixes(store):
    store.put_all(
        observation("w70", valueQuantity={"value": 70, "unit": "kg"}),
        observation("w90", valueQuantity={"value": 90, "unit": "kg"}),
    )
    assert store.found("Observation", "value-quantity=gt80||kg") == {"w90"}
    assert store.found("Observation", "value-quantity=le70||kg") == {"w70"}
    assert store.found("Observation", "value-quantity=ne70||kg") == {"w90"}


@pytest.mark.parametrize(
    "query",
    [
        "date=2020-13-01",
        "date=2020-02-30",
        "date=yesterday",
        "date=xx2020",
        "date=gt",
        "date=2020-01-01T25:00:00Z",
        "_lastUpdated=last-week",
        "value-quantity=heavy",
        "value-quantity=zz70",
        "code-value-quantity=http://loinc.org|1$abc",
    ],
)
def test_malformed_values_are_400_whatever_the_handling(store, query):
    for strict in (False, True):
        with pytest.raises(FhirError) as caught:
            store.search("Observation", query, strict=strict)
        assert caught.value.status == 400
        assert caught.value.issues[0].code == "invalid"


def test_bad_number_is_400(db):
    s = Store(db)
    with pytest.raises(FhirError) as caught:
        s.search("RiskAssessment", "probability=1.2.3")
    assert caught.value.status == 400
