"""The one write path: versions, attribution, index upkeep, the outbox, and layers."""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest
from sqlalchemy import func, insert, select

from sandbox.app import ensure_default_sandbox
from sandbox.fhir.interactions import check_id
from sandbox.fhir.outcome import FhirError
from sandbox.fhir.search_params import registry
from sandbox.store import sandboxes
from sandbox.store.layers import View, resolve_view
from sandbox.store.repository import Actor, Repository, new_id
from sandbox.store.schema import layers, outbox, resource_versions, sp_string, sp_token

DEFAULT = View("default", ("default",))
NURSE = Actor("user:nurse-1", "web-ui")


@pytest.fixture
def repo(db) -> Repository:
    ensure_default_sandbox(db)
    return Repository(registry())


def _patient(family: str, **extra) -> dict:
    return {"resourceType": "Patient", "name": [{"family": family}], **extra}


def test_each_write_records_version_actor_route_and_an_outbox_event(db, repo):
    with db.write() as conn:
        first = repo.write(conn, DEFAULT, _patient("Ng"), NURSE, rtype="Patient", rid="p1", method="POST")
        second = repo.write(
            conn, DEFAULT, _patient("Ng", gender="female"), Actor("client:app"), rtype="Patient", rid="p1", method="PUT"
        )
        gone = repo.write(conn, DEFAULT, None, NURSE, rtype="Patient", rid="p1", method="DELETE")
    assert (first.version_id, second.version_id, gone.version_id) == (1, 2, 3)
    with db.read() as conn:
        versions = conn.execute(
            select(
                resource_versions.c.version_id,
                resource_versions.c.actor,
                resource_versions.c.route,
                resource_versions.c.method,
            ).order_by(resource_versions.c.version_id)
        ).all()
        events = conn.execute(select(outbox.c.action, outbox.c.version_id, outbox.c.actor).order_by(outbox.c.seq)).all()
    assert [tuple(v) for v in versions] == [
        (1, "user:nurse-1", "web-ui", "POST"),
        (2, "client:app", "fhir-api", "PUT"),
        (3, "user:nurse-1", "web-ui", "DELETE"),
    ]
    assert [tuple(e) for e in events] == [
        ("create", 1, "user:nurse-1"),
        ("update", 2, "client:app"),
        ("delete", 3, "user:nurse-1"),
    ]


def test_update_replaces_index_rows_and_delete_removes_them(db, repo):
    with db.write() as conn:
        repo.write(conn, DEFAULT, _patient("Okafor", gender="male"), NURSE, rtype="Patient", rid="p1", method="POST")
        repo.write(conn, DEFAULT, _patient("Adeyemi", gender="male"), NURSE, rtype="Patient", rid="p1", method="PUT")
    with db.read() as conn:
        names = conn.execute(select(sp_string.c.value).where(sp_string.c.param == "family")).scalars().all()
    assert names == ["adeyemi"]
    with db.write() as conn:
        repo.write(conn, DEFAULT, None, NURSE, rtype="Patient", rid="p1", method="DELETE")
    with db.read() as conn:
        assert (
            conn.execute(select(func.count()).select_from(sp_token).where(sp_token.c.resource_id == "p1")).scalar() == 0
        )


def test_a_failed_unit_of_work_leaves_nothing_behind(db, repo):
    with pytest.raises(RuntimeError), db.write() as conn:
        repo.write(conn, DEFAULT, _patient("Half"), NURSE, rtype="Patient", rid="p1", method="POST")
        raise RuntimeError("the second entry of a transaction failed")
    with db.read() as conn:
        assert repo.current(conn, DEFAULT, "Patient", "p1") is None
        assert conn.execute(select(func.count()).select_from(outbox)).scalar() == 0


def test_stale_expected_version_is_412(db, repo):
    with db.write() as conn:
        repo.write(conn, DEFAULT, _patient("Ng"), NURSE, rtype="Patient", rid="p1", method="POST")
    with pytest.raises(FhirError) as err, db.write() as conn:
        repo.write(conn, DEFAULT, _patient("Ng"), NURSE, rtype="Patient", rid="p1", method="PUT", expected_version=5)
    assert err.value.status == 412


def test_concurrent_updates_of_one_version_never_both_win(db, repo):
    """Two writers that both read version 1: one makes version 2, the other is refused (no lost update)."""
    with db.write() as conn:
        repo.write(conn, DEFAULT, _patient("Ng"), NURSE, rtype="Patient", rid="p1", method="POST")
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def update(family: str) -> None:
        try:
            with db.write() as conn:
                barrier.wait(timeout=1)
                repo.write(
                    conn, DEFAULT, _patient(family), NURSE, rtype="Patient", rid="p1", method="PUT", expected_version=1
                )
            outcomes.append("ok")
        except FhirError as exc:
            outcomes.append(exc.status)
        except threading.BrokenBarrierError:
            # SQLite serializes writers at BEGIN IMMEDIATE, so the second never reaches the barrier
            # while the first holds the lock; it then sees version 2 and is refused below.
            with db.write() as conn:
                try:
                    repo.write(
                        conn,
                        DEFAULT,
                        _patient(family),
                        NURSE,
                        rtype="Patient",
                        rid="p1",
                        method="PUT",
                        expected_version=1,
                    )
                    outcomes.append("ok")
                except FhirError as exc:
                    outcomes.append(exc.status)

    threads = [threading.Thread(target=update, args=(name,)) for name in ("Left", "Right")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(map(str, outcomes)) == ["409", "ok"] or sorted(map(str, outcomes)) == ["412", "ok"]
    with db.read() as conn:
        assert repo.current(conn, DEFAULT, "Patient", "p1").version_id == 2


def test_current_many_sees_the_top_layers_version_keeps_tombstones_only_if_asked_and_reads_ids_in_chunks(db, repo):
    """600 ids of one type (more than one statement's worth), some of them in the baseline, one replaced and one
    deleted by the sandbox, and one of another type."""
    base, s1 = View("base", ("base",)), View("s1", ("s1", "base"))
    with db.write() as conn:
        conn.execute(insert(layers).values(id="base", kind="baseline", name="Base", created_at="2026-01-01"))
        conn.execute(
            insert(layers).values(id="s1", kind="sandbox", name="S1", baseline_id="base", created_at="2026-01-01")
        )
        loader = Actor("loader", "loader")
        for n in range(0, 600, 7):
            repo.write(conn, base, _patient(f"P{n}"), loader, rtype="Patient", rid=f"p{n:03d}", method="PUT")
        repo.write(conn, base, {"resourceType": "Group", "type": "person", "actual": True}, loader,
                   rtype="Group", rid="p007", method="PUT")  # fmt: skip
        repo.write(conn, s1, _patient("Changed"), NURSE, rtype="Patient", rid="p014", method="PUT")
        repo.write(conn, s1, None, NURSE, rtype="Patient", rid="p021", method="DELETE")
    keys = [("Patient", f"p{n:03d}") for n in range(600)] + [("Group", "p007"), ("Group", "p008")]
    with db.read() as conn:
        found = repo.current_many(conn, s1, keys)
        with_tombstones = repo.current_many(conn, s1, keys, include_deleted=True)
    stored = {f"p{n:03d}" for n in range(0, 600, 7)}
    assert set(found) == {("Patient", rid) for rid in stored - {"p021"}} | {("Group", "p007")}
    assert set(with_tombstones) == set(found) | {("Patient", "p021")}
    assert with_tombstones["Patient", "p021"].deleted
    assert (found["Patient", "p014"].layer_id, found["Patient", "p014"].version_id) == ("s1", 2)
    assert (found["Patient", "p007"].layer_id, found["Patient", "p007"].version_id) == ("base", 1)
    assert b'"Changed"' in (found["Patient", "p014"].content or b"")


def test_sandbox_over_a_baseline_sees_baseline_until_it_writes_its_own_version(db, repo):
    with db.write() as conn:
        conn.execute(insert(layers).values(id="base", kind="baseline", name="Base", created_at="2026-01-01"))
        conn.execute(
            insert(layers).values(id="s1", kind="sandbox", name="S1", baseline_id="base", created_at="2026-01-01")
        )
        repo.write(
            conn,
            View("base", ("base",)),
            _patient("Base"),
            Actor("loader", "loader"),
            rtype="Patient",
            rid="p1",
            method="POST",
        )
    s1 = View("s1", ("s1", "base"))
    with db.write() as conn:
        assert repo.current(conn, s1, "Patient", "p1").layer_id == "base"
        changed = repo.write(conn, s1, _patient("Changed"), NURSE, rtype="Patient", rid="p1", method="PUT")
    assert (changed.version_id, changed.layer_id) == (2, "s1")
    with db.read() as conn:
        assert repo.current(conn, View("base", ("base",)), "Patient", "p1").version_id == 1
        assert repo.version(conn, s1, "Patient", "p1", 1).layer_id == "base"
        _, total = repo.history(conn, s1, rtype="Patient", rid="p1")
    assert total == 2


def test_new_ids_are_valid_fhir_ids_and_version_7_uuids_that_sort_by_creation_time(monkeypatch):
    # Time-ordered ids put a Bundle's new resources side by side in every (layer, type, id) index.
    earlier = [new_id() for _ in range(50)]
    assert len(set(earlier)) == 50
    for rid in earlier:
        assert check_id(rid) == rid
        parsed = uuid.UUID(rid)
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
        assert str(parsed) == rid
    now = time.time_ns()
    monkeypatch.setattr(time, "time_ns", lambda: now + 5_000_000)  # five milliseconds on
    later = new_id()
    assert all(rid < later for rid in earlier)
    assert int(later.replace("-", "")[:12], 16) == (now + 5_000_000) // 1_000_000


def test_a_forked_process_draws_ids_of_its_own():
    """Ids come from random bytes read ahead; a child process must not hand out the ones its parent still holds."""
    new_id()  # the parent now holds bytes read ahead
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.write(write, new_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child, parent = os.read(read, 64).decode(), new_id()
    os.close(read)
    os.close(write)
    assert child[15:] != parent[15:]  # the random bits after the time and the version


def test_postgresql_prepares_the_write_path_but_never_a_search(db):
    """A write's one statement is parsed and planned once per connection, not on every call; search SQL keeps
    a plan made for its values (a generic plan for it was ten times slower); a one-off shape (a resource of many
    index rows) is not prepared, so it cannot push the recurring ones out of the cache."""
    from sandbox.fhir.interactions import Interactions
    from sandbox.store.database import Database

    if db.is_sqlite:
        pytest.skip("server-side prepared statements are PostgreSQL's")
    ensure_default_sandbox(db)
    fresh = Database(db.url)  # connections that have prepared nothing yet
    reg = registry()
    fhir = Interactions(Repository(reg), reg)
    try:
        with fresh.write() as conn:
            for family in ("Ng", "Okafor", "Ng"):
                fhir.create(conn, DEFAULT, _patient(family), NURSE)
            many_names = [{"family": f"Alias{n}"} for n in range(70)]  # more string rows than a kept shape holds
            for _ in range(2):
                fhir.create(conn, DEFAULT, _patient("Mbeki", name=many_names), NURSE)
            found = fhir.search(conn, DEFAULT, "Patient", [("family", "Ng")])
            prepared = [row[0] for row in conn.exec_driver_sql("SELECT statement FROM pg_prepared_statements")]
    finally:
        fresh.dispose()
    assert len(found.matches) == 2
    writes = [sql for sql in prepared if sql.lstrip().upper().startswith("WITH")]
    assert len(writes) == 1  # three Patients of one shape: one statement, prepared once; the big ones: none
    assert not [sql for sql in prepared if sql.lstrip().upper().startswith("SELECT") and "sp_string" in sql]


def test_a_write_through_a_view_of_a_sandbox_deleted_since_is_404_and_writes_nothing(db, repo):
    """Another server process may delete a sandbox this one still has a View of: the write holds the sandbox's
    row, finds none, and its unit of work rolls back."""
    with db.write() as conn:
        view = resolve_view(conn, sandboxes.create_sandbox(conn, "gone soon").id)
    with db.write() as conn:
        sandboxes.delete_sandbox(conn, view.sandbox_id)
    with pytest.raises(FhirError) as raised, db.write() as conn:
        repo.write(conn, view, _patient("Orphan"), NURSE, rtype="Patient", rid="orphan", method="PUT")
    assert raised.value.status == 404 and "was deleted" in str(raised.value)
    with db.read() as conn:
        versions = resource_versions.c
        assert conn.execute(select(func.count()).where(versions.layer_id == view.overlay)).scalar() == 0


def _write_in_thread(db, repo, view: View, rid: str) -> threading.Thread:
    def write() -> None:
        with db.write() as conn:
            repo.write(conn, view, _patient(rid), NURSE, rtype="Patient", rid=rid, method="PUT")

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def test_on_postgresql_writes_to_one_sandbox_commit_without_waiting_for_each_other(db, repo):
    """Each write holds its sandbox's row FOR KEY SHARE, which other writes share: a second write commits while
    the first is still open (a write used to stamp the row, whose lock queued a sandbox's commits)."""
    if db.is_sqlite:
        pytest.skip("SQLite's write transactions take turns by design")
    with db.write() as first:
        repo.write(first, DEFAULT, _patient("First"), NURSE, rtype="Patient", rid="first", method="PUT")
        second = _write_in_thread(db, repo, DEFAULT, "second")
        second.join(timeout=10)
        assert not second.is_alive(), "the second write waited for the first to commit"
    with db.read() as conn:
        found = repo.current_many(conn, DEFAULT, [("Patient", "first"), ("Patient", "second")])
    assert sorted(found) == [("Patient", "first"), ("Patient", "second")]


def test_on_postgresql_a_reset_waits_for_a_write_in_flight_and_then_removes_it(db, repo):
    """A reset holds the sandbox's row FOR UPDATE: it waits for writes in flight to commit, then deletes what
    they wrote too, rather than interleaving its deletes with their inserts."""
    if db.is_sqlite:
        pytest.skip("SQLite's write transactions take turns by design")
    with db.write() as conn:
        view = resolve_view(conn, sandboxes.create_sandbox(conn, "busy").id)
    done: list[int] = []

    def reset() -> None:
        with db.write() as conn:
            done.append(sandboxes.reset_sandbox(conn, view.sandbox_id).own_resources or 0)

    with db.write() as writing:
        repo.write(writing, view, _patient("Late"), NURSE, rtype="Patient", rid="late", method="PUT")
        resetting = threading.Thread(target=reset, daemon=True)
        resetting.start()
        resetting.join(timeout=0.5)
        assert resetting.is_alive() and not done, "the reset went ahead of a write in flight"
    resetting.join(timeout=10)
    assert done == [0]
    with db.read() as conn:
        assert repo.current(conn, view, "Patient", "late") is None
