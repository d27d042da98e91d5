"""Dates as the closed UTC ranges the index and the search planner both use (``sandbox.fhir.values``)."""

from __future__ import annotations

import pytest

from sandbox.fhir.values import MAX_DATE, MIN_DATE, date_range


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2020", ("2020-01-01T00:00:00.000000", "2020-12-31T23:59:59.999999")),
        ("2024-02", ("2024-02-01T00:00:00.000000", "2024-02-29T23:59:59.999999")),
        ("2020-03-04", ("2020-03-04T00:00:00.000000", "2020-03-04T23:59:59.999999")),
        ("2020-03-04T10:00", ("2020-03-04T10:00:00.000000", "2020-03-04T10:00:59.999999")),
        ("2020-03-04T10:00:00Z", ("2020-03-04T10:00:00.000000", "2020-03-04T10:00:00.999999")),
        ("2020-03-04T10:00:00.5+05:30", ("2020-03-04T04:30:00.500000", "2020-03-04T04:30:00.599999")),
        ("2020-03-04T10:00:00.123456789Z", ("2020-03-04T10:00:00.123456", "2020-03-04T10:00:00.123456")),
    ],
)
def test_a_date_of_any_precision_is_the_range_it_denotes(text: str, expected: tuple[str, str]) -> None:
    assert date_range(text) == expected


def test_years_before_1000_keep_four_digits_so_ranges_sort_as_text() -> None:
    assert date_range("0999-02") == ("0999-02-01T00:00:00.000000", "0999-02-28T23:59:59.999999")
    assert date_range("0001-01-01") == ("0001-01-01T00:00:00.000000", "0001-01-01T23:59:59.999999")
    assert MIN_DATE < date_range("0999")[0] < date_range("2020")[0] < MAX_DATE  # type: ignore[index]


def test_a_zone_that_takes_a_moment_past_the_ends_of_time_stops_at_the_end() -> None:
    """Valid FHIR, so the resource must still be stored and indexed: such a moment raised OverflowError."""
    assert date_range("0001-01-01T00:00:00+05:00") == (MIN_DATE, MIN_DATE)
    assert date_range("0001-01-01T04:00+05:00") == (MIN_DATE, MIN_DATE)
    assert date_range("0001-01-01T06:00+05:00") == ("0001-01-01T01:00:00.000000", "0001-01-01T01:00:59.999999")
    assert date_range("9999-12-31T23:59:59-05:00") == (MAX_DATE, MAX_DATE)


@pytest.mark.parametrize("text", ["", "20", "2020-13", "2020-02-30", "2020-03-04T25:00", "March 2020", "2020-3-4"])
def test_malformed_dates_have_no_range_however_often_asked(text: str) -> None:
    assert date_range(text) is None
    assert date_range(text) is None  # the kept answer is the same


def test_the_same_date_asked_again_gives_the_same_range() -> None:
    first = date_range("2015-05-29T13:40:00+00:00")
    assert first == ("2015-05-29T13:40:00.000000", "2015-05-29T13:40:00.999999")
    assert date_range("2015-05-29T13:40:00+00:00") == first
    assert date_range(" 2015-05-29T13:40:00+00:00 ") == first  # surrounding blanks are not part of the date
