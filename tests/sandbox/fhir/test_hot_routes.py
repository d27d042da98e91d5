"""Read by id and type search sit first in the route table at typed paths (sandbox/fhir/paths.py): they must take
no URL that belongs to another route, and a URL they refuse must still be answered as before."""

from __future__ import annotations

from sqlalchemy import event


def test_the_typed_routes_leave_operations_history_and_metadata_to_their_own_routes(client):
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
    for base in ("/fhir", "/sandboxes/default/fhir"):
        assert client.get(f"{base}/Patient/{pid}").json()["id"] == pid
        assert client.get(f"{base}/Patient?_id={pid}").json()["total"] == 1
        assert client.get(f"{base}/metadata").json()["resourceType"] == "CapabilityStatement"
        assert client.get(f"{base}/Patient/_history").json()["type"] == "history"
        assert client.get(f"{base}/_history").json()["type"] == "history"
        assert client.get(f"{base}/Patient/{pid}/_history").json()["type"] == "history"
        everything = client.get(f"{base}/Patient/{pid}/$everything").json()
        assert everything["resourceType"] == "Bundle" and everything["type"] == "searchset"


def test_an_id_r4_does_not_allow_is_answered_by_the_generic_routes_as_before(client):
    # Not a FHIR id (underscore, too long): the typed read refuses it, the generic read says it does not exist.
    for rid in ("bad_id", "x" * 65):
        response = client.get(f"/fhir/Patient/{rid}")
        assert response.status_code == 404
        assert response.json()["resourceType"] == "OperationOutcome"
    unknown = client.get("/fhir/NoSuchType/1")
    assert unknown.status_code == 404 and unknown.json()["resourceType"] == "OperationOutcome"


def test_urls_handed_out_follow_the_host_each_request_names(client):
    """The public root is remembered per host (building it was a tenth of a read), never across hosts."""
    for host in ("one.example", "two.example:8443", "one.example"):
        created = client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers={"Host": host})
        assert created.headers["Location"].startswith(f"http://{host}/fhir/Patient/")
        found = client.get("/fhir/Patient?_count=1", headers={"Host": host}).json()
        assert found["link"][0]["url"].startswith(f"http://{host}/fhir/Patient?")


def test_an_event_loop_read_leaves_no_transaction_open(client, app):
    """Reads by id on SQLite share one connection kept for the event loop: a transaction left open on it would
    pin SQLite's WAL (no checkpoint) for as long as the server runs."""
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
    assert client.get(f"/fhir/Patient/{pid}").status_code == 200
    assert client.get("/fhir/Patient/missing").status_code == 404
    db = app.state.db
    if db.is_sqlite:
        with db.inline_read() as conn:
            assert not conn.in_transaction()
            assert conn.exec_driver_sql("SELECT count(*) FROM resources").scalar() >= 1  # autobegins...
        with db.inline_read() as conn:
            assert not conn.in_transaction()  # ...and the block's end rolled it back


def test_a_search_pays_for_a_transaction_only_where_it_buys_a_snapshot(client, app):
    """SQLite: a search's statements share one read transaction (one snapshot).  PostgreSQL at READ COMMITTED
    takes a snapshot per statement even inside a transaction, so there a search runs in autocommit mode,
    without the BEGIN and ROLLBACK round trips."""
    client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Snap"}]})
    db = app.state.db
    seen: list[bool] = []

    def record(conn, _cursor, statement, _parameters, _context, _many) -> None:  # type: ignore[no-untyped-def]
        if "FROM resources" in statement:
            dbapi = conn.connection.dbapi_connection
            seen.append(dbapi.in_transaction if db.is_sqlite else not dbapi.autocommit)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        assert client.get("/fhir/Patient?family=Snap&_revinclude=Observation:subject").json()["total"] == 1
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert seen and all(in_transaction is db.is_sqlite for in_transaction in seen)
