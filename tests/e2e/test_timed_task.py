"""A timed task in a real browser: the panel's clock counts down, at zero says the time is up and disables the
task's buttons, and the panel's refresh then brings the attempt the live worker closed, with its final result."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from playwright.sync_api import Page, expect
from sqlalchemy import update

from sandbox.store.schema import task_attempts
from tasks.timing import INDEX_FORMAT
from tests.e2e.conftest import LiveServer

BEN = "ben@demo.invalid"


def test_the_clock_counts_down_and_the_panel_shows_time_is_up(
    live_server: LiveServer, page: Page, artifacts: Path
) -> None:
    live_server.sign_in(page, BEN)
    page.goto(live_server.url + "/assignments")
    page.get_by_role("button", name="Start Order a STAT troponin").click()
    expect(page.locator("#task-timer")).to_contain_text("Time limit: 10 minutes")
    expect(page.locator("#time-left")).to_have_text(re.compile(r"^(10:00|9:5\d)$"))
    page.screenshot(path=artifacts / "timed-task.png", full_page=True)

    # Two seconds before the deadline, as if the trainee had been at it for nearly ten minutes.
    assert live_server.demo is not None
    sandbox = live_server.demo.sandboxes[BEN]
    started = (datetime.now(UTC) - timedelta(minutes=10) + timedelta(seconds=2)).strftime(INDEX_FORMAT)
    with live_server.db.write() as conn:
        conn.execute(
            update(task_attempts)
            .where(task_attempts.c.sandbox_id == sandbox, task_attempts.c.task_id == "stat-troponin")
            .values(started_at=started)
        )
    page.reload()
    expect(page.locator("#time-left")).to_have_text(re.compile(r"^0:0[0-2]$"))
    expect(page.locator("#task-timer")).to_have_text(re.compile(r"^Time is up"), timeout=5_000)
    expect(page.get_by_role("button", name="Submit task")).to_be_disabled()
    expect(page.get_by_role("button", name="Check now")).to_be_disabled()

    # The live worker closed the attempt at its deadline; the panel's refresh (every 5 s) shows the result.
    expect(page.locator("#time-up")).to_contain_text("Time is up.", timeout=10_000)
    expect(page.locator("#task-status")).to_contain_text("timed out")
    expect(page.get_by_role("button", name="Try again")).to_be_enabled()
    page.screenshot(path=artifacts / "timed-task-time-up.png", full_page=True)
