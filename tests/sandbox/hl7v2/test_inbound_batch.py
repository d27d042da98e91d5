"""Group commit over MLLP: messages that arrive while a batch is being written go together in the next one, in
one transaction, each in its own savepoint; every ACK waits for the commit.  And the cached View that routes a
message, against sandboxes deleted or re-created behind this process's back."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, func, insert, select, text

from sandbox.fhir.interactions import Interactions
from sandbox.hl7v2.inbound import Result
from sandbox.hl7v2.mllp import FrameReader, frame
from sandbox.store import sandboxes
from sandbox.store.database import Database
from sandbox.store.layers import View
from sandbox.store.repository import Actor
from sandbox.store.schema import hl7v2_control_ids, hl7v2_messages, layers, resources, sp_token
from tests.sandbox import held_batches
from tests.sandbox.hl7v2.conftest import adt, err, msa

MRN_SYSTEM = "urn:ehr-sandbox:hl7v2:assigning-authority:HOSP"


class HeldBatches(held_batches.HeldBatches[bytes, Result]):
    """The MLLP service's batches held (``tests.sandbox.held_batches``), a first message to hold them with."""

    def hold_first(self, port: int) -> Connection:
        """Open a connection whose one message is the held first batch."""
        first = Connection(port)
        first.send(adt("A04", "HOLD", mrn="H0", visit="VH0"))
        self.wait_for(lambda: self.sizes == [1])
        return first


class Connection:
    """A raw MLLP connection: frames sent without waiting, ACKs read in the order they come."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.frames = FrameReader()
        self.pending: list[bytes] = []

    def send(self, *messages: str) -> None:
        self.sock.sendall(b"".join(frame(m) for m in messages))  # together: the server reads them at once

    def replies(self, count: int) -> list[bytes]:
        while len(self.pending) < count:
            data = self.sock.recv(65536)
            assert data, "the server closed the connection"
            self.pending.extend(self.frames.feed(data))
        taken, self.pending = self.pending[:count], self.pending[count:]
        return taken

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def held(mllp_app) -> Iterator[HeldBatches]:  # type: ignore[no-untyped-def]
    held = HeldBatches(mllp_app.app.state.hl7v2.batches)
    yield held
    held.release()


def patients_with(db: Database, mrn: str) -> int:
    """How many patients (in any layer) carry this MRN."""
    t = sp_token.c
    with db.read() as conn:
        query = select(func.count()).where(t.resource_type == "Patient", t.param == "identifier", t.code == mrn)
        return conn.execute(query).scalar_one()


def logged(db: Database) -> dict[str, str]:
    """control id -> status of every inbound log entry (one each in these tests)."""
    with db.read() as conn:
        rows = conn.execute(select(hl7v2_messages.c.control_id, hl7v2_messages.c.status)).all()
    return {row.control_id: row.status for row in rows}


def count(db: Database, table: Any) -> int:
    with db.read() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_messages_that_arrive_during_a_batch_go_together_in_the_next_each_answered_in_order_on_its_connection(
    mllp_port, held, db
):
    first = held.hold_first(mllp_port)
    senders = [Connection(mllp_port) for _ in range(3)]
    for n, sender in enumerate(senders):
        sender.send(*(adt("A04", f"C{n}-{k}", mrn=f"P{n}{k}", visit=f"V{n}{k}") for k in range(2)))
    held.queued(6)
    held.release()
    assert [msa(r) for r in first.replies(1)] == [("AA", "HOLD")]
    for n, sender in enumerate(senders):
        assert [msa(r) for r in sender.replies(2)] == [("AA", f"C{n}-0"), ("AA", f"C{n}-1")]
    assert held.sizes == [1, 6]  # one transaction for the six
    assert all(patients_with(db, f"P{n}{k}") == 1 for n in range(3) for k in range(2))
    assert set(logged(db).values()) == {"accepted"} and len(logged(db)) == 7
    for connection in (first, *senders):
        connection.close()


def test_an_a08_after_the_a04_in_the_same_batch_updates_what_the_a04_created(mllp_port, held, fhir_json):
    first = held.hold_first(mllp_port)
    sender = Connection(mllp_port)
    sender.send(adt("A04", "R1", mrn="777", visit="V7"), adt("A08", "R2", mrn="777", visit="V7", family="Dough"))
    held.queued(2)
    held.release()
    first.replies(1)
    assert [msa(r) for r in sender.replies(2)] == [("AA", "R1"), ("AA", "R2")]
    [patient] = [e["resource"] for e in fhir_json("/fhir/Patient?identifier=777")["entry"]]
    assert patient["name"][0]["family"] == "Dough" and patient["meta"]["versionId"] == "2"
    sender.close()
    first.close()


def test_bad_messages_in_a_batch_are_answered_ae_or_ar_alone_and_the_others_are_written(mllp_port, held, db):
    first = held.hold_first(mllp_port)
    good, bad = Connection(mllp_port), Connection(mllp_port)
    good.send(adt("A04", "G1", mrn="G1", visit="VG1"))
    bad.send(
        adt("A04", "BAD-DATE", mrn="B1", visit="VB1").replace("|19800102|", "|1980-01-02|"),  # AE: content
        adt("A04", "BAD-TYPE", mrn="B2").replace("ADT^A04^ADT_A01", "ZZZ^Z01"),  # AR: type, logged
        adt("A04", "NOWHERE", mrn="B3", sandbox="no-such-sandbox"),  # AR: no sandbox, not logged
    )
    held.queued(4)
    later = Connection(mllp_port)
    later.send(adt("A04", "G2", mrn="G2", visit="VG2"))  # after the others, in the same batch
    held.queued(5)
    held.release()
    first.replies(1)
    date, kind, nowhere = bad.replies(3)
    assert msa(date) == ("AE", "BAD-DATE") and err(date)[:2] == ("PID^1^7^1", "102")
    assert msa(kind) == ("AR", "BAD-TYPE") and err(kind)[1] == "200"
    assert msa(nowhere) == ("AR", "NOWHERE") and err(nowhere)[1] == "204"
    assert [msa(r) for r in good.replies(1) + later.replies(1)] == [("AA", "G1"), ("AA", "G2")]
    assert held.sizes == [1, 5]
    assert [patients_with(db, mrn) for mrn in ("G1", "G2", "B1", "B2", "B3")] == [1, 1, 0, 0, 0]
    assert logged(db) == {
        "HOLD": "accepted",
        "G1": "accepted",
        "G2": "accepted",
        "BAD-DATE": "error",
        "BAD-TYPE": "rejected",
    }
    for connection in (first, good, bad, later):
        connection.close()


def test_a_failure_inside_one_message_of_a_batch_rolls_back_that_message_only(mllp_port, held, db, monkeypatch):
    from sandbox.hl7v2 import mappers

    real = mappers.MAPPERS["ADT^A04"]

    def sometimes_broken(msg, writer):  # type: ignore[no-untyped-def]
        real(msg, writer)  # writes the patient and visit first: they must not survive
        if msg.control_id == "BUG":
            raise RuntimeError("a bug")

    monkeypatch.setitem(mappers.MAPPERS, "ADT^A04", sometimes_broken)
    first = held.hold_first(mllp_port)
    sender = Connection(mllp_port)
    sender.send(adt("A04", "BUG", mrn="X1", visit="VX1"), adt("A04", "FINE", mrn="X2", visit="VX2"))
    held.queued(2)
    held.release()
    first.replies(1)
    failed, fine = sender.replies(2)
    assert msa(failed) == ("AE", "BUG") and "nothing was written" in err(failed)[2]
    assert msa(fine) == ("AA", "FINE")
    assert patients_with(db, "X1") == 0 and patients_with(db, "X2") == 1
    assert "BUG" not in logged(db)  # as for one message: a failure is answered, not logged
    with db.read() as conn:
        ids = conn.execute(select(hl7v2_control_ids.c.control_id)).scalars().all()
    assert sorted(ids) == ["FINE", "HOLD"]  # so the sender's retry of BUG is applied
    sender.close()
    first.close()


def test_a_control_id_sent_twice_in_one_batch_is_applied_once(mllp_port, held, db, fhir_json):
    first = held.hold_first(mllp_port)
    one, two = Connection(mllp_port), Connection(mllp_port)
    one.send(adt("A04", "DUP", mrn="D1", visit="VD1"))
    held.queued(1)
    two.send(adt("A04", "DUP", mrn="D1", visit="VD1", family="Other"))
    held.queued(2)
    held.release()
    first.replies(1)
    [applied], [again] = one.replies(1), two.replies(1)
    assert msa(applied) == ("AA", "DUP") and msa(again) == ("AA", "DUP")
    assert b"Duplicate" not in applied and b"Duplicate" in again
    assert held.sizes == [1, 2]
    [patient] = [e["resource"] for e in fhir_json("/fhir/Patient?identifier=D1")["entry"]]
    assert patient["name"][0]["family"] == "Doe" and patient["meta"]["versionId"] == "1"
    statuses = sorted(m["status"] for m in fhir_json("/sandboxes/default/hl7v2/messages?control_id=DUP")["messages"])
    assert statuses == ["accepted", "duplicate"]
    for connection in (first, one, two):
        connection.close()


def test_a_batch_looks_its_control_ids_up_in_one_query_and_finds_those_of_earlier_batches(app, db):
    inbound = app.state.hl7v2.inbound
    assert inbound.handle_batch([adt("A04", "EARLIER", mrn="E1", visit="VE1")])[0].status == "accepted"
    lookups: list[str] = []

    def record(_conn, _cursor, statement, *_rest) -> None:  # type: ignore[no-untyped-def]
        if "FROM hl7v2_control_ids" in statement:
            lookups.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        results = inbound.handle_batch(
            [adt("A04", f"NEW{n}", mrn=f"N{n}", visit=f"VN{n}") for n in range(3)]
            + [adt("A04", "EARLIER", mrn="E1", visit="VE1", family="Again")]
        )
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert [r.status for r in results] == ["accepted"] * 3 + ["duplicate"]
    assert len(lookups) == 1
    assert patients_with(db, "E1") == 1


def test_a_control_id_whose_message_failed_earlier_in_the_batch_is_applied_when_sent_again_in_it(app, db):
    bad_date = adt("A04", "RETRY", mrn="R1", visit="VR1").replace("|19800102|", "|1980-01-02|")
    results = app.state.hl7v2.inbound.handle_batch([bad_date, adt("A04", "RETRY", mrn="R1", visit="VR1")])
    assert [(r.code, r.status) for r in results] == [("AE", "error"), ("AA", "accepted")]
    assert patients_with(db, "R1") == 1


def test_when_the_commit_fails_every_message_of_the_batch_is_answered_ae_and_nothing_is_written(mllp_port, held, db):
    failing = True

    def fail(_conn: Any) -> None:
        if failing:
            raise RuntimeError("the disk is full")

    first = held.hold_first(mllp_port)
    sender = Connection(mllp_port)
    sender.send(
        adt("A04", "F1", mrn="F1", visit="VF1"),
        adt("A04", "F2", mrn="F2", visit="VF2").replace("ADT^A04^ADT_A01", "ZZZ^Z01"),  # an AR, logged: not now
    )
    held.queued(2)
    event.listen(db.engine, "commit", fail)
    try:
        held.release()
        [hold] = first.replies(1)
        f1, f2 = sender.replies(2)
        for reply, control_id in ((hold, "HOLD"), (f1, "F1"), (f2, "F2")):
            assert msa(reply) == ("AE", control_id)
            assert "nothing was written (retry later)" in err(reply)[2]
        assert held.sizes == [1, 2]
        failing = False
        sender.send(adt("A04", "F1", mrn="F1", visit="VF1"))  # the retry
        [retried] = sender.replies(1)
    finally:
        event.remove(db.engine, "commit", fail)
    assert msa(retried) == ("AA", "F1") and b"Duplicate" not in retried
    assert [patients_with(db, mrn) for mrn in ("H0", "F1")] == [0, 1]
    assert logged(db) == {"F1": "accepted"}
    sender.close()
    first.close()


# ---- routing by a cached View ------------------------------------------------------------------------


@pytest.fixture
def baselines(db: Database, app) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """Two baselines: an empty one, and one holding a patient with MRN 777 (id ``pb``)."""
    fhir: Interactions = app.state.fhir
    with db.write() as conn:
        empty = sandboxes.create_baseline(conn, "Empty").id
        full = sandboxes.create_baseline(conn, "One patient").id
        view = sandboxes.baseline_view_for_loading(conn, full)
        patient = {"resourceType": "Patient", "id": "pb", "identifier": [{"system": MRN_SYSTEM, "value": "777"}]}
        fhir.update(conn, view, "Patient", "pb", patient, Actor("loader", "loader"))
    return empty, full


def _in_another_process(db: Database, work: Any) -> None:
    """Change the sandboxes as another server process would: this app's cache of Views is not told."""
    with db.write() as conn:
        work(conn)


def _ward_with_its_view_cached(mllp_port: int, db: Database, baseline: str) -> Connection:
    """A sandbox 'ward' on ``baseline``, made by another process, and an MLLP connection whose first message to
    it was accepted: this app has the ward's View cached now."""
    _in_another_process(db, lambda conn: sandboxes.create_sandbox(conn, "Ward", baseline, sandbox_id="ward"))
    ward = Connection(mllp_port)
    ward.send(adt("A04", "W1", sandbox="ward", mrn="W1", visit="VW1"))
    assert msa(ward.replies(1)[0]) == ("AA", "W1")
    return ward


def test_a_message_for_a_sandbox_deleted_behind_the_cached_view_is_refused_and_writes_nothing(
    mllp_port, app, db, baselines
):
    empty, _ = baselines
    ward = _ward_with_its_view_cached(mllp_port, db, empty)
    assert app.state.views.cached("ward")
    _in_another_process(db, lambda conn: sandboxes.delete_sandbox(conn, "ward"))
    ward.send(adt("A04", "W2", sandbox="ward", mrn="W2", visit="VW2"))
    [reply] = ward.replies(1)
    assert msa(reply) == ("AR", "W2") and err(reply)[1] == "204"
    assert not app.state.views.cached("ward")
    with db.read() as conn:
        in_ward = select(func.count()).select_from(resources).where(resources.c.layer_id == "ward")
        assert conn.execute(in_ward).scalar_one() == 0
        assert conn.execute(select(layers.c.id).where(layers.c.id == "ward")).first() is None
    ward.close()


def test_a_sandbox_deleted_and_created_again_on_another_baseline_is_written_through_its_new_view(
    mllp_port, app, db, baselines
):
    empty, full = baselines
    ward = _ward_with_its_view_cached(mllp_port, db, empty)  # the View: ward over the empty baseline

    def again(conn: Any) -> None:
        sandboxes.delete_sandbox(conn, "ward")
        sandboxes.create_sandbox(conn, "Ward", full, sandbox_id="ward")

    _in_another_process(db, again)
    ward.send(adt("A08", "W2", sandbox="ward", mrn="777", visit="VW2", family="Updated"))
    assert msa(ward.replies(1)[0]) == ("AA", "W2")
    # Matched by MRN through the new baseline: the baseline's patient updated, not a second one created.
    fhir: Interactions = app.state.fhir
    view = View("ward", ("ward", full))
    with db.read() as conn:
        stored = fhir.repo.current(conn, view, "Patient", "pb")
        own = conn.execute(
            select(resources.c.resource_type, resources.c.id).where(resources.c.layer_id == "ward")
        ).all()
    assert stored is not None and stored.layer_id == "ward" and stored.version_id == 2
    assert sorted(r.resource_type for r in own) == ["Encounter", "Patient"] and ("Patient", "pb") in own
    assert app.state.views.get("ward") == view
    ward.close()


def test_handle_one_message_routes_through_the_same_checked_cache(app, db, baselines):
    """``Inbound.handle``: the HTTP endpoint's and reprocessing's way in."""
    empty, full = baselines
    _in_another_process(db, lambda conn: sandboxes.create_sandbox(conn, "Ward", empty, sandbox_id="ward"))
    inbound = app.state.hl7v2.inbound
    assert inbound.handle(adt("A04", "H1", sandbox="ward", mrn="H1"), sandbox_id="ward").code == "AA"

    def again(conn: Any) -> None:
        sandboxes.delete_sandbox(conn, "ward")
        sandboxes.create_sandbox(conn, "Ward", full, sandbox_id="ward")

    _in_another_process(db, again)
    result = inbound.handle(adt("A08", "H2", sandbox="ward", mrn="777", family="Updated"), sandbox_id="ward")
    assert result.code == "AA" and result.resources[0] == "Patient/pb/_history/2"


# ---- PostgreSQL: a duplicate committed by another process while the batch ran -----------------------------


def test_a_control_id_another_process_commits_during_the_batch_is_answered_as_a_duplicate(app, db):
    if db.is_sqlite:
        pytest.skip("SQLite's writers take turns: there the duplicate check sees every committed control id")
    inbound = app.state.hl7v2.inbound
    sender = "LABSYS^HOSP"
    other = db.engine.connect()
    other_tx = other.begin()
    other.execute(
        insert(hl7v2_control_ids).values(layer_id="default", sender=sender, control_id="RACE", message_id="elsewhere")
    )
    results: list[list[Result]] = []
    batch = [adt("A04", "BEFORE", mrn="R0", visit="VR0"), adt("A04", "RACE", mrn="R1"), adt("A04", "AFTER", mrn="R2")]
    worker = threading.Thread(target=lambda: results.append(inbound.handle_batch(batch)))
    worker.start()
    deadline = time.monotonic() + 20
    with db.read(snapshot=False) as conn:  # until the batch's insert of RACE waits for the other transaction
        while not conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE 'INSERT INTO hl7v2_control_ids%'"
            )
        ).scalar():
            assert time.monotonic() < deadline
            time.sleep(0.02)
    other_tx.commit()
    other.close()
    worker.join(20)
    [[before, race, after]] = results
    assert (before.code, before.status) == ("AA", "accepted") and (after.code, after.status) == ("AA", "accepted")
    assert (race.code, race.status) == ("AA", "duplicate")
    assert race.reply is not None and "Duplicate of message elsewhere" in race.reply
    assert [patients_with(db, mrn) for mrn in ("R0", "R1", "R2")] == [1, 0, 1]
    assert logged(db) == {"BEFORE": "accepted", "RACE": "duplicate", "AFTER": "accepted"}


def test_a_message_that_cannot_be_read_for_a_reason_not_its_own_fails_alone(app, db, monkeypatch):
    inbound = app.state.hl7v2.inbound
    route = inbound._route

    def flaky(msg, sandbox_id):  # type: ignore[no-untyped-def]
        if msg.control_id == "LOOKUP":
            raise RuntimeError("the sandbox lookup failed")
        return route(msg, sandbox_id)

    monkeypatch.setattr(inbound, "_route", flaky)
    results = inbound.handle_batch([adt("A04", "LOOKUP", mrn="L1"), adt("A04", "NEXT", mrn="L2", visit="VL2")])
    assert [(r.code, r.status) for r in results] == [("AE", "error"), ("AA", "accepted")]
    assert results[0].reply is not None and "retry later" in results[0].reply
    assert [patients_with(db, mrn) for mrn in ("L1", "L2")] == [0, 1]


def test_a_batch_for_several_sandboxes_writes_each_message_into_its_own_and_each_shows_the_activity(app, db):
    with db.write() as conn:
        for sandbox_id in ("ward-b", "ward-a"):
            sandboxes.create_sandbox(conn, sandbox_id, sandbox_id=sandbox_id)
    batch = [
        adt("A04", "M1", sandbox="ward-b", mrn="SB"),
        adt("A04", "M2", sandbox="ward-a", mrn="SA"),
        adt("A04", "M3", sandbox="default", mrn="SD"),
    ]
    results = app.state.hl7v2.inbound.handle_batch(batch)
    assert [(r.code, r.sandbox_id) for r in results] == [("AA", "ward-b"), ("AA", "ward-a"), ("AA", "default")]
    with db.read() as conn:
        owners = conn.execute(
            select(resources.c.layer_id).where(resources.c.resource_type == "Patient").order_by(resources.c.layer_id)
        ).scalars()
        active = sandboxes.list_layers(conn, "sandbox")
        assert list(owners) == ["default", "ward-a", "ward-b"]
    assert all(info.last_activity is not None for info in active)
