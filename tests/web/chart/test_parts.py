"""The chart's parts on their own: value sets, trend plots, form reading, stored feedback."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sandbox.store.database import Database
from tasks.feedback import list_feedback, record_feedback
from web.chart.forms import FORMS, Context, FormErrors, read_form
from web.chart.value_sets import value_set, value_sets
from web.chart.vitals_plot import trend_svg


def test_value_sets_find_codes_and_search_by_words() -> None:
    assert {"lab-orders", "imaging-orders", "medications", "allergens", "problems", "vaccines"} <= set(value_sets())
    assert value_set("medications").find("243670").display == "aspirin 81 mg oral tablet"
    assert value_set("medications").find("nope") is None
    assert [c.code for c in value_set("lab-orders").search("troponin high")] == ["89579-7"]
    assert [c.code for c in value_set("lab-orders").search("5841")] == ["58410-2"]
    for vs in value_sets().values():  # every code once per set, and a system for all
        assert vs.system.startswith("http")
        assert len({c.code for c in vs.concepts}) == len(vs.concepts)


def test_trend_plot_draws_points_in_time_order_and_escapes_its_text() -> None:
    svg = str(
        trend_svg(
            "Heart <rate>",
            [("2026-01-02T10:00:00Z", 90.0), ("2026-01-01T10:00:00Z", 70.0), ("2026-01-03", 80.0)],
            "/min",
        )
    )
    assert svg.startswith('<svg class="trend" role="img"')
    assert "Heart &lt;rate&gt; trend, 3 readings" in svg
    assert "<rate>" not in svg
    points = svg.split('points="')[1].split('"')[0].split()
    assert [float(p.split(",")[0]) for p in points] == sorted(float(p.split(",")[0]) for p in points)
    ys = [float(p.split(",")[1]) for p in points]
    assert ys[0] > ys[2] > ys[1]  # 70 lowest on the page (largest y), 90 highest
    assert svg.count("<circle") == 3
    assert str(trend_svg("Empty", [])) == ""


def test_reading_a_form_types_values_and_reports_each_bad_field() -> None:
    values, errors = read_form(
        FORMS["vitals"], {"heart_rate": " 88 ", "spo2": "x", "temperature": "inf", "temp_unit": "Cel"}, {}
    )
    assert values["heart_rate"] == 88
    assert values["systolic"] is None
    assert set(errors) == {"spo2", "temperature"}


def test_building_checks_fields_together() -> None:
    values, errors = read_form(FORMS["vitals"], {"systolic": "120", "temp_unit": "Cel"}, {})
    assert not errors
    ctx = Context(patient_ref="Patient/p", now=datetime(2026, 1, 1, 12, tzinfo=UTC))
    with pytest.raises(FormErrors) as raised:
        FORMS["vitals"].build(values, ctx)
    assert raised.value.errors == {"diastolic": "Blood pressure needs both numbers."}


def test_feedback_is_one_answer_per_attempt(db: Database) -> None:
    with db.write() as conn:
        record_feedback(conn, "s1", "u1", "pack", "task", 1, 3, "ok")
        record_feedback(conn, "s1", "u1", "pack", "task", 1, 5)  # answered again: replaces
        record_feedback(conn, "s2", "u2", "pack", "task", 1, 1, "unclear")
        with pytest.raises(ValueError):
            record_feedback(conn, "s1", "u1", "pack", "task", 2, 6)
    with db.read() as conn:
        mine = list_feedback(conn, sandbox_ids=["s1"])
        every = list_feedback(conn, pack_id="pack")
    assert [(f.rating, f.comment) for f in mine] == [(5, "")]
    assert mine[0].to_json()["question"] == "How useful was this task for your work?"
    assert sorted(f.rating for f in every) == [1, 5]
