"""A timed task in the chart's task panel: the limit and the time left (drawn by the server, counted down by the
page's script), then "Time is up" with the final result; a late hint or submit is answered with that, not an
error page.  Time passes by writing the attempt's ``started_at`` in the past: nothing sleeps."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update

from sandbox.store.schema import task_attempts
from tasks.timing import INDEX_FORMAT

TROPONIN = "orders-and-charting/stat-troponin"  # time_limit: 10
CHART = "/chart/{sandbox}/patients/chest-pain-cardiology"


def _start(client: TestClient, csrf: str, sandbox: str) -> None:
    started = client.post(
        "/assignments/start", data={"csrf_token": csrf, "sandbox": sandbox, "task": TROPONIN}, follow_redirects=False
    )
    assert started.status_code == 303


def _started_ago(app: FastAPI, sandbox: str, minutes: float) -> None:
    when = (datetime.now(UTC) - timedelta(minutes=minutes)).strftime(INDEX_FORMAT)
    with app.state.db.write() as conn:
        conn.execute(
            update(task_attempts)
            .where(task_attempts.c.sandbox_id == sandbox, task_attempts.c.status == "active")
            .values(started_at=when)
        )


def _panel(client: TestClient, sandbox: str) -> str:
    answer = client.get(f"/chart/{sandbox}/task/panel", params={"task": TROPONIN})
    assert answer.status_code == 200
    return answer.text


def test_the_panel_shows_the_limit_and_the_time_left(
    client: TestClient, app: FastAPI, ada: str, ada_sandbox: str
) -> None:
    before = _panel(client, ada_sandbox)
    assert "Time limit: 10 minutes (the clock starts when you start the task)" in before
    _start(client, ada, ada_sandbox)
    _started_ago(app, ada_sandbox, 3.5)
    page = client.get(CHART.format(sandbox=ada_sandbox), params={"task": TROPONIN}).text
    timer = page.split('id="task-timer">')[1].split("</p>")[0]
    left = re.search(r'<span id="time-left" data-seconds-left="(\d+)">(\d+):(\d\d)</span> left', timer)
    assert left is not None, timer
    seconds, minutes, secs = (int(g) for g in left.groups())
    assert 385 <= seconds <= 390 and minutes * 60 + secs == seconds  # six and a half minutes, give or take
    assert re.search(r'\(until <time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ">\d\d:\d\d UTC</time>\)', timer)
    assert "Time limit: 10 minutes" in timer
    assert 'id="time-up"' not in page
    for button in ("Check now", "Submit task"):
        assert f">{button}</button>" in page


def test_after_the_deadline_the_panel_says_time_is_up_with_the_final_result(
    client: TestClient, app: FastAPI, ada: str, ada_sandbox: str
) -> None:
    _start(client, ada, ada_sandbox)
    _started_ago(app, ada_sandbox, 11)
    panel = _panel(client, ada_sandbox)  # drawing it closes the attempt: the worker does not run in these tests
    assert "<strong>Time is up.</strong> The attempt closed at its 10-minute time limit" in panel
    status = " ".join(panel.split('id="task-status">')[1].split("</p>")[0].split())
    assert status == 'Attempt 1 · timed out · score <span id="task-score">0.0</span> / 6.0 · not passed'
    assert 'id="time-left"' not in panel
    assert ">Check now</button>" not in panel and ">Submit task</button>" not in panel
    assert ">Try again</button>" in panel and "See the result" in panel
    assert 'class="check fail"' in panel  # the final checklist
    listing = client.get("/assignments").text
    assert '<td class="status">Time is up: not passed</td>' in listing


def test_a_late_hint_or_submit_is_answered_with_time_is_up(
    client: TestClient, app: FastAPI, ada: str, ada_sandbox: str
) -> None:
    _start(client, ada, ada_sandbox)
    _started_ago(app, ada_sandbox, 11)
    back = CHART.format(sandbox=ada_sandbox)
    hinted = client.post(
        f"/chart/{ada_sandbox}/task/hint",
        data={"csrf_token": ada, "task": TROPONIN, "back": back},
        follow_redirects=False,
    )
    assert hinted.status_code == 303 and hinted.headers["location"].startswith(back)
    assert "<strong>Time is up.</strong>" in client.get(hinted.headers["location"]).text

    retried = client.post(
        f"/chart/{ada_sandbox}/task/retry",
        data={"csrf_token": ada, "task": TROPONIN, "back": back},
        follow_redirects=False,
    )
    assert retried.status_code == 303
    again = _panel(client, ada_sandbox)
    assert "Attempt 2 · active" in again and 'id="time-left"' in again  # a new attempt, a new clock
    _started_ago(app, ada_sandbox, 12)
    submitted = client.post(
        f"/chart/{ada_sandbox}/task/submit", data={"csrf_token": ada, "task": TROPONIN}, follow_redirects=False
    )
    assert submitted.status_code == 303 and "/task/result?" in submitted.headers["location"]
    result = client.get(submitted.headers["location"]).text
    assert '<strong id="result-time-up">Time is up.</strong> Not passed' in result
