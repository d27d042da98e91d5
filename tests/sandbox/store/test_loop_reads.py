"""The event loop's PostgreSQL reads take the store's SQL as compiled for psycopg and its connection parameters,
and hand both to asyncpg in asyncpg's terms."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import ArgumentError

from sandbox.store.loop_reads import _numbered, asyncpg_arguments


def test_positional_markers_are_numbered_in_order():
    assert _numbered("SELECT a FROM t WHERE b = %s AND c = %s") == ("SELECT a FROM t WHERE b = $1 AND c = $2", ())


def test_named_markers_are_numbered_once_each_and_their_order_is_returned():
    sql = "SELECT a FROM t WHERE b = %(x)s::VARCHAR AND (c = %(y)s OR d = %(x)s)"
    assert _numbered(sql) == ("SELECT a FROM t WHERE b = $1::VARCHAR AND (c = $2 OR d = $1)", ("x", "y"))


def test_a_doubled_percent_is_a_literal_one():
    assert _numbered("SELECT 'a%%b' LIKE %s") == ("SELECT 'a%b' LIKE $1", ())


def test_a_statement_mixing_named_and_positional_markers_is_refused():
    with pytest.raises(ValueError, match="mixes"):
        _numbered("SELECT %s, %(x)s")


def test_psycopgs_connection_parameters_become_asyncpgs():
    arguments = asyncpg_arguments(
        {
            "dbname": "ehr",
            "host": "db.internal",
            "port": "5433",
            "user": "ehr",
            "password": "secret",
            "options": "-csearch_path=s1 -c synchronous_commit=off --statement-timeout=5s",
            "application_name": "ehr-sandbox",
            "sslmode": "require",
            "connect_timeout": "3",
            "prepare_threshold": None,
        },
        {"plan_cache_mode": "force_custom_plan"},
    )
    assert arguments == {
        "database": "ehr",
        "host": "db.internal",
        "port": 5433,
        "user": "ehr",
        "password": "secret",
        "ssl": "require",
        "timeout": 3.0,
        "server_settings": {
            "search_path": "s1",
            "synchronous_commit": "off",
            "statement_timeout": "5s",
            "application_name": "ehr-sandbox",
            "plan_cache_mode": "force_custom_plan",
        },
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sslrootcert": "/etc/ca.pem", "dbname": "x"}, "'sslrootcert' is not supported"),
        ({"options": "-v"}, "'-v' is not supported"),
        ({"options": "-csearch_path"}, "has no value"),
    ],
)
def test_a_parameter_asyncpg_has_no_equivalent_for_is_refused_by_name(kwargs, message):
    with pytest.raises(ArgumentError, match=message):
        asyncpg_arguments(kwargs)
