"""Blocking calls leave the event loop for a thread, and take the request's context with them."""

from __future__ import annotations

import asyncio
import threading

import pytest

from sandbox.concurrency import run_in_threadpool
from sandbox.logs import REQUEST_ID


def test_the_call_runs_on_another_thread_with_the_callers_context():
    def where(extra: str, *, suffix: str) -> tuple[str | None, str]:
        return REQUEST_ID.get(), threading.current_thread().name + extra + suffix

    async def call() -> tuple[str | None, str]:
        REQUEST_ID.set("req-42")
        return await run_in_threadpool(where, "/", suffix="!")

    request_id, thread = asyncio.run(call())
    assert request_id == "req-42"  # the thread's log lines carry the request's id
    assert thread.startswith("ehr-sandbox-blocking") and thread.endswith("/!")


def test_the_calls_exception_reaches_the_caller():
    def fail() -> None:
        raise ValueError("no such sandbox")

    with pytest.raises(ValueError, match="no such sandbox"):
        asyncio.run(run_in_threadpool(fail))


def test_the_thread_cannot_change_the_callers_context():
    def change() -> None:
        REQUEST_ID.set("changed")

    async def call() -> str | None:
        REQUEST_ID.set("mine")
        await run_in_threadpool(change)
        return REQUEST_ID.get()

    assert asyncio.run(call()) == "mine"
