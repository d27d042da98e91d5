"""Sandboxes over baselines: create is a row, reset drops the sandbox's own rows, snapshot copies what it sees."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from sandbox.cdshooks import services as cds_services
from sandbox.cdshooks.services import ServiceDef
from sandbox.fhir.interactions import Interactions
from sandbox.fhir.search_params import registry
from sandbox.fhir.validation import parse_json
from sandbox.hl7v2 import destinations
from sandbox.store import sandboxes
from sandbox.store.admin_errors import Conflict, Invalid, NotFound
from sandbox.store.database import Database
from sandbox.store.layers import View, resolve_view
from sandbox.store.repository import Actor, Repository
from sandbox.store.schema import INDEX_TABLES, layers, resource_versions, resources

LOADER = Actor("loader", "loader")
TRAINEE = Actor("user:ann", "fhir-api")


@pytest.fixture
def fhir() -> Interactions:
    reg = registry()
    return Interactions(Repository(reg), reg)


def patient(family: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family}], **extra}


@pytest.fixture
def baseline(db: Database, fhir: Interactions) -> str:
    """A baseline of two patients and an observation about the first, loaded through the one write path."""
    with db.write() as conn:
        info = sandboxes.create_baseline(conn, "Two patients")
        view = sandboxes.baseline_view_for_loading(conn, info.id)
        fhir.update(conn, view, "Patient", "p1", {**patient("Chalmers"), "id": "p1"}, LOADER)
        fhir.update(conn, view, "Patient", "p2", {**patient("Windsor"), "id": "p2"}, LOADER)
        obs = {
            "resourceType": "Observation",
            "id": "o1",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
            "subject": {"reference": "Patient/p1"},
        }
        fhir.update(conn, view, "Observation", "o1", obs, LOADER)
    return info.id


def new_sandbox(db: Database, baseline_id: str | None, name: str = "practice") -> View:
    with db.write() as conn:
        info = sandboxes.create_sandbox(conn, name, baseline_id)
        return resolve_view(conn, info.id)


def family(db: Database, fhir: Interactions, view: View, rid: str) -> str | None:
    with db.read() as conn:
        stored = fhir.repo.current(conn, view, "Patient", rid)
    if stored is None or stored.deleted:
        return None
    return parse_json(stored.content)["name"][0]["family"]


def search_ids(db: Database, fhir: Interactions, view: View, rtype: str, query: list[tuple[str, str]]) -> set[str]:
    with db.read() as conn:
        return {s.id for s in fhir.search(conn, view, rtype, query).matches}


def rows_in_layer(db: Database, layer_id: str) -> int:
    """Rows of sandbox data (the outbox, a log for consumers, is not data)."""
    with db.read() as conn:
        count = 0
        for table in sandboxes.layer_tables():
            if table.name in sandboxes.KEPT_ON_RESET:
                continue
            count += conn.execute(select(func.count()).select_from(table).where(table.c.layer_id == layer_id)).scalar()
        return count


# ---- create -------------------------------------------------------------------------------------------


def test_create_is_one_row_and_the_sandbox_sees_the_baseline(db, fhir, baseline):
    before = rows_in_layer(db, baseline)
    view = new_sandbox(db, baseline)
    assert view.layers[1] == baseline
    assert rows_in_layer(db, view.overlay) == 0
    assert rows_in_layer(db, baseline) == before
    assert family(db, fhir, view, "p1") == "Chalmers"
    assert search_ids(db, fhir, view, "Patient", [("family", "windsor")]) == {"p2"}


def test_create_without_a_baseline_is_empty(db, fhir):
    view = new_sandbox(db, None)
    assert view.layers == (view.overlay,)
    assert search_ids(db, fhir, view, "Patient", []) == set()


def test_create_rejects_unknown_baselines_bad_names_and_taken_ids(db, baseline):
    with db.write() as conn:
        with pytest.raises(NotFound, match="no baseline 'nope'"):
            sandboxes.create_sandbox(conn, "x", "nope")
        with pytest.raises(Invalid, match="name is required"):
            sandboxes.create_sandbox(conn, "  ", baseline)
        with pytest.raises(Invalid, match="not a valid id"):
            sandboxes.create_sandbox(conn, "x", baseline, sandbox_id="has space")
        sandboxes.create_sandbox(conn, "x", baseline, sandbox_id="ward-4")
        with pytest.raises(Conflict, match="already taken"):
            sandboxes.create_sandbox(conn, "y", None, sandbox_id="ward-4")
        with pytest.raises(Conflict, match="already taken"):
            sandboxes.create_sandbox(conn, "y", None, sandbox_id=baseline)
        sandbox_as_baseline = "ward-4"
        with pytest.raises(NotFound):
            sandboxes.create_sandbox(conn, "y", sandbox_as_baseline)


# ---- versions across the baseline boundary, and reset -----------------------------------------------------


def test_first_update_of_a_baseline_resource_is_version_2_in_that_sandbox_only(db, fhir, baseline):
    mine, theirs = new_sandbox(db, baseline, "mine"), new_sandbox(db, baseline, "theirs")
    with db.write() as conn:
        outcome = fhir.update(conn, mine, "Patient", "p1", {**patient("Changed"), "id": "p1"}, TRAINEE)
    assert outcome.stored.version_id == 2 and not outcome.created
    assert family(db, fhir, mine, "p1") == "Changed"
    assert family(db, fhir, theirs, "p1") == "Chalmers"
    with db.read() as conn:
        assert fhir.repo.current(conn, theirs, "Patient", "p1").version_id == 1
        assert parse_json(fhir.vread(conn, mine, "Patient", "p1", "1").content)["name"][0]["family"] == "Chalmers"
        versions, total = fhir.repo.history(conn, mine, rtype="Patient", rid="p1")
        assert [v.version_id for v in versions] == [2, 1] and total == 2
        assert [v.actor for v in versions] == ["user:ann", "loader"]
        _, their_total = fhir.repo.history(conn, theirs, rtype="Patient", rid="p1")
        assert their_total == 1


def test_reset_brings_back_the_baseline_version_and_drops_the_sandboxs_own_resources(db, fhir, baseline):
    view = new_sandbox(db, baseline)
    with db.write() as conn:
        fhir.update(conn, view, "Patient", "p1", {**patient("Changed"), "id": "p1"}, TRAINEE)
        fhir.delete(conn, view, "Patient", "p2", TRAINEE)
        fhir.create(conn, view, patient("Newborn"), TRAINEE)
    assert family(db, fhir, view, "p2") is None
    assert search_ids(db, fhir, view, "Patient", [("family", "newborn")])
    with db.write() as conn:
        info = sandboxes.reset_sandbox(conn, view.sandbox_id)
    assert info.own_resources == 0 and info.last_activity is not None
    assert rows_in_layer(db, view.overlay) == 0
    assert family(db, fhir, view, "p1") == "Chalmers"
    assert family(db, fhir, view, "p2") == "Windsor"
    assert search_ids(db, fhir, view, "Patient", [("family", "newborn")]) == set()
    assert search_ids(db, fhir, view, "Patient", [("family", "changed")]) == set()
    with db.read() as conn:
        assert fhir.repo.current(conn, view, "Patient", "p1").version_id == 1
    with db.write() as conn:
        again = fhir.update(conn, view, "Patient", "p1", {**patient("Again"), "id": "p1"}, TRAINEE)
    assert again.stored.version_id == 2


def test_a_patients_search_by_code_sees_the_sandboxs_changes_over_its_baseline(db, fhir, baseline):
    """patient=X&code=Y checks the code on the patient's index rows layer by layer: a baseline observation the
    sandbox recoded stops matching its old code, and starts matching its new one, in that sandbox only."""
    view = new_sandbox(db, baseline)
    glucose = {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]}
    with db.write() as conn:
        current = fhir.repo.current(conn, view, "Observation", "o1")
        recoded = {**parse_json(current.content), "code": glucose}
        fhir.update(conn, view, "Observation", "o1", recoded, TRAINEE)
        new = {
            "resourceType": "Observation",
            "status": "final",
            "code": glucose,
            "subject": {"reference": "Patient/p1"},
        }
        created = fhir.create(conn, view, new, TRAINEE)
    weight = [("patient", "Patient/p1"), ("code", "http://loinc.org|29463-7")]
    sugar = [("patient", "Patient/p1"), ("code", "http://loinc.org|2345-7")]
    assert search_ids(db, fhir, view, "Observation", weight) == set()
    assert search_ids(db, fhir, view, "Observation", sugar) == {"o1", created.stored.id}
    other = new_sandbox(db, baseline, "other")
    assert search_ids(db, fhir, other, "Observation", weight) == {"o1"}
    assert search_ids(db, fhir, other, "Observation", sugar) == set()


def test_reset_leaves_the_baseline_and_other_sandboxes_alone(db, fhir, baseline):
    mine, theirs = new_sandbox(db, baseline, "mine"), new_sandbox(db, baseline, "theirs")
    with db.write() as conn:
        fhir.create(conn, theirs, patient("Theirs"), TRAINEE)
        fhir.create(conn, mine, patient("Mine"), TRAINEE)
    baseline_rows = rows_in_layer(db, baseline)
    with db.write() as conn:
        sandboxes.reset_sandbox(conn, mine.sandbox_id)
    assert rows_in_layer(db, baseline) == baseline_rows
    assert search_ids(db, fhir, theirs, "Patient", [("family", "theirs")])


def test_reset_of_unknown_sandbox_or_of_a_baseline_is_not_found(db, baseline):
    with db.write() as conn, pytest.raises(NotFound, match="no sandbox 'nope'"):
        sandboxes.reset_sandbox(conn, "nope")
    with db.write() as conn, pytest.raises(NotFound, match="no sandbox"):
        sandboxes.reset_sandbox(conn, baseline)


# ---- snapshot ----------------------------------------------------------------------------------------------


def test_snapshot_materializes_what_the_sandbox_sees_with_index_rows_and_versions(db, fhir, baseline):
    prepared = new_sandbox(db, baseline, "prepared case")
    with db.write() as conn:
        fhir.update(conn, prepared, "Patient", "p1", {**patient("Prepared"), "id": "p1"}, TRAINEE)
        fhir.delete(conn, prepared, "Patient", "p2", TRAINEE)
        fhir.update(conn, prepared, "Patient", "p3", {**patient("Added"), "id": "p3"}, TRAINEE)
        snap = sandboxes.snapshot_sandbox(conn, prepared.sandbox_id, "Prepared case")
    assert snap.kind == "baseline" and snap.own_resources == 3  # p1, p3 and the observation; not deleted p2

    trainee = new_sandbox(db, snap.id, "trainee")
    assert family(db, fhir, trainee, "p1") == "Prepared"
    assert family(db, fhir, trainee, "p2") is None
    assert family(db, fhir, trainee, "p3") == "Added"
    assert search_ids(db, fhir, trainee, "Patient", [("family", "prepared")]) == {"p1"}
    assert search_ids(db, fhir, trainee, "Patient", [("family", "chalmers")]) == set()
    assert search_ids(db, fhir, trainee, "Observation", [("subject", "Patient/p1")]) == {"o1"}
    with db.read() as conn:
        versions, _ = fhir.repo.history(conn, trainee, rtype="Patient", rid="p1")
    assert [v.version_id for v in versions] == [2, 1]
    with db.write() as conn:
        assert fhir.update(conn, trainee, "Patient", "p1", {**patient("T"), "id": "p1"}, TRAINEE).stored.version_id == 3

    # The snapshot does not depend on the sandbox it came from.
    with db.write() as conn:
        sandboxes.reset_sandbox(conn, prepared.sandbox_id)
        sandboxes.delete_sandbox(conn, prepared.sandbox_id)
    with db.write() as conn:
        sandboxes.reset_sandbox(conn, trainee.sandbox_id)
    assert family(db, fhir, trainee, "p1") == "Prepared"


def test_snapshot_of_a_sandbox_without_baseline_and_bad_snapshots(db, fhir):
    view = new_sandbox(db, None)
    with db.write() as conn:
        fhir.create(conn, view, patient("Solo"), TRAINEE)
        snap = sandboxes.snapshot_sandbox(conn, view.sandbox_id, "solo")
        assert snap.own_resources == 1
        with pytest.raises(NotFound):
            sandboxes.snapshot_sandbox(conn, "nope", "x")
        with pytest.raises(Invalid):
            sandboxes.snapshot_sandbox(conn, view.sandbox_id, "")


# ---- delete, list --------------------------------------------------------------------------------------------


def test_delete_removes_every_row_of_the_sandbox(db, fhir, baseline):
    view = new_sandbox(db, baseline)
    with db.write() as conn:
        fhir.create(conn, view, patient("Gone"), TRAINEE)
        sandboxes.delete_sandbox(conn, view.sandbox_id)
    assert rows_in_layer(db, view.overlay) == 0
    with db.read() as conn:
        assert conn.execute(select(layers).where(layers.c.id == view.sandbox_id)).first() is None
        with pytest.raises(NotFound):
            sandboxes.get_layer(conn, view.sandbox_id, "sandbox")


def test_a_sandbox_re_created_under_a_deleted_ones_id_inherits_none_of_its_interfaces(db, baseline):
    """HL7 v2 destinations and CDS service registrations survive a reset (configuration) but not a delete:
    a new sandbox of the same id must not send its orders to the old vendor's interface or call its services."""
    with db.write() as conn:
        sandboxes.create_sandbox(conn, "Vendor A", baseline, sandbox_id="vendor")
        destinations.put(conn, "vendor", "lab", {"host": "lab.vendor-a.example", "port": 2575})
        cds_services.add(
            conn, "vendor", "https://vendor-a.example/cds-services", [ServiceDef("alert", "order-select", "A's")]
        )
        sandboxes.reset_sandbox(conn, "vendor")
    with db.read() as conn:
        assert [d.id for d in destinations.listing(conn, "vendor")] == ["lab"]
        assert len(cds_services.listing(conn, "vendor")) == 2  # the built-in services and vendor A's
    with db.write() as conn:
        sandboxes.delete_sandbox(conn, "vendor")
        sandboxes.create_sandbox(conn, "Vendor B", baseline, sandbox_id="vendor")
    with db.read() as conn:
        assert destinations.listing(conn, "vendor") == []
        assert [r.id for r in cds_services.listing(conn, "vendor")] == [cds_services.BUILTIN]


def test_the_default_sandbox_and_baselines_in_use_cannot_be_deleted(db, baseline):
    with db.write() as conn:
        sandboxes.create_sandbox(conn, "Default", None, sandbox_id="default")
        with pytest.raises(Conflict, match="cannot be deleted"):
            sandboxes.delete_sandbox(conn, "default")
        used = sandboxes.create_sandbox(conn, "user", baseline)
        with pytest.raises(Conflict, match="in use by sandbox"):
            sandboxes.delete_baseline(conn, baseline)
        sandboxes.delete_sandbox(conn, used.id)
        sandboxes.delete_baseline(conn, baseline)
        with pytest.raises(NotFound):
            sandboxes.delete_baseline(conn, baseline)
    assert rows_in_layer(db, baseline) == 0


def test_a_baseline_in_use_refuses_loaders(db, baseline):
    with db.write() as conn:
        sandboxes.create_sandbox(conn, "user", baseline)
        with pytest.raises(Conflict, match="load into a new baseline"):
            sandboxes.baseline_view_for_loading(conn, baseline)


def test_last_activity_is_the_latest_write_or_reset_of_the_sandbox_alone(db, fhir, baseline):
    view = new_sandbox(db, baseline, "busy")
    other = new_sandbox(db, baseline, "other")
    with db.write() as conn:
        first = fhir.create(conn, view, patient("One"), TRAINEE)
    with db.write() as conn:
        later = fhir.delete(conn, view, "Patient", "p1", TRAINEE)
    with db.read() as conn:
        busy, idle = (sandboxes.get_layer(conn, v.sandbox_id, "sandbox") for v in (view, other))
    assert first.stored.last_updated < later.last_updated == busy.last_activity
    assert idle.last_activity is None
    with db.write() as conn:
        reset = sandboxes.reset_sandbox(conn, view.sandbox_id)
    with db.read() as conn:
        after = sandboxes.get_layer(conn, view.sandbox_id, "sandbox")
    assert after.last_activity == reset.last_activity and after.last_activity > busy.last_activity


def test_list_shows_sizes_and_last_activity(db, fhir, baseline):
    view = new_sandbox(db, baseline, "busy")
    idle = new_sandbox(db, baseline, "idle")
    with db.write() as conn:
        fhir.create(conn, view, patient("One"), TRAINEE)
        fhir.update(conn, view, "Patient", "p1", {**patient("Two"), "id": "p1"}, TRAINEE)
    with db.read() as conn:
        found = {i.id: i for i in sandboxes.list_layers(conn, "sandbox")}
        baselines = {i.id: i for i in sandboxes.list_layers(conn, "baseline")}
    assert found[view.sandbox_id].own_resources == 2
    assert found[view.sandbox_id].baseline_resources == 3
    assert found[view.sandbox_id].last_activity is not None
    assert found[idle.sandbox_id].own_resources == 0 and found[idle.sandbox_id].last_activity is None
    assert baselines[baseline].own_resources == 3
    assert found[view.sandbox_id].to_json()["changed_resources"] == 2


# ---- export ---------------------------------------------------------------------------------------------------


def test_export_ndjson_and_bundle_hold_what_the_sandbox_sees(db, fhir, baseline):
    view = new_sandbox(db, baseline)
    with db.write() as conn:
        fhir.delete(conn, view, "Patient", "p2", TRAINEE)
        fhir.update(conn, view, "Patient", "p1", {**patient("Edited"), "id": "p1"}, TRAINEE)
    with db.read() as conn:
        lines = list(sandboxes.export_ndjson(conn, view))
        bundle = sandboxes.export_bundle(conn, view, "http://x/fhir")
    resources_out = [parse_json(line) for line in lines]
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
    assert sorted((r["resourceType"], r["id"]) for r in resources_out) == [("Observation", "o1"), ("Patient", "p1")]
    assert next(r for r in resources_out if r["id"] == "p1")["name"][0]["family"] == "Edited"
    assert bundle["type"] == "transaction"
    assert [e["request"] for e in bundle["entry"]] == [
        {"method": "PUT", "url": "Observation/o1"},
        {"method": "PUT", "url": "Patient/p1"},
    ]
    assert bundle["entry"][1]["fullUrl"] == "http://x/fhir/Patient/p1"


def test_layer_tables_cover_resources_versions_and_every_index(db):
    names = {t.name for t in sandboxes.layer_tables()}
    assert {resources.name, resource_versions.name, *(t.name for t in INDEX_TABLES.values())} <= names
    assert "layers" not in names and "users" not in names
