"""A web process SIGKILLed in the middle of transaction bundles (the short version of bench/crash_bundles.py):
no partial bundle, the server comes back, and the outbox delivers what was committed, once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.crash_bundles import run
from bench.processes import fresh_schema
from tests.conftest import PG_URL

pytestmark = pytest.mark.postgres


@pytest.fixture
def database_url() -> Iterator[str]:
    """PostgreSQL, the production backend (``python -m bench.crash_bundles`` without a URL runs it on SQLite)."""
    if not PG_URL:
        pytest.skip("EHR_SANDBOX_TEST_DATABASE_URL is not set")
    with fresh_schema(PG_URL) as url:
        yield url


def test_killed_mid_bundle_leaves_whole_bundles_or_none_and_delivers_each_committed_order_once(
    database_url: str, tmp_path: Path
) -> None:
    outcome = run(database_url, tmp_path, rounds=1, orders=25)
    assert outcome.rounds == 1
    assert outcome.partial == 0 and outcome.acknowledged_but_missing == 0
    assert outcome.orders_committed >= 25  # the undisturbed first bundle at least
    assert outcome.orders_delivered == outcome.orders_committed and outcome.deliveries_duplicated == 0
