"""The HL7 v2 messages written for generated patients."""

from __future__ import annotations

from typing import Any

from synthetic_data import generate_population
from synthetic_data.hl7v2 import messages_for


def test_without_lab_reports_the_oru_carries_the_latest_visits_vital_signs_and_not_its_code_status() -> None:
    """A patient without lab reports gets the vital signs of their latest visit; the code status recorded at that
    visit is an Observation without a category, and it neither breaks the message nor goes into it."""
    checked = with_vitals = 0
    for bundle in list(generate_population(40, seed=7))[1:]:
        resources: list[dict[str, Any]] = [entry["resource"] for entry in bundle["entry"]]
        status = [r for r in resources if r["resourceType"] == "Observation" and "category" not in r]
        if not status:
            continue
        latest_url = status[0]["encounter"]["reference"]
        vitals = [
            r
            for r in resources
            if r["resourceType"] == "Observation"
            and r.get("encounter", {}).get("reference") == latest_url
            and any(c["code"] == "vital-signs" for category in r.get("category", []) for c in category["coding"])
        ]
        without_labs = [r for r in resources if r["resourceType"] != "DiagnosticReport"]
        _, oru = messages_for(without_labs, {}, 1)
        obx = [segment for segment in oru.split("\r") if segment.startswith("OBX|")]
        assert "75320-2" not in oru and "304251008" not in oru
        # One OBX per value: a blood pressure gives one per component.
        assert len(obx) == sum(("valueQuantity" in v) + len(v.get("component", [])) for v in vitals)
        checked += 1
        with_vitals += bool(vitals)
    assert checked > 0 and with_vitals > 0
