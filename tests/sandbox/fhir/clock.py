"""A clock the tests set, standing in for the repository's ``instant_now``.

With it "written at 10:00" means exactly that, so tests of ``_since`` and
``_at`` never depend on how fast the machine is or on two writes landing in
the same millisecond.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sandbox.store import repository


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)

    def set(self, text: str) -> None:
        self.now = datetime.fromisoformat(text.replace("Z", "+00:00"))

    def __call__(self) -> tuple[str, str]:
        self.now += timedelta(microseconds=1)  # two writes never share an instant
        return (
            self.now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            self.now.strftime("%Y-%m-%dT%H:%M:%S.%f"),
        )


def install(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(repository, "instant_now", fake)
    return fake
