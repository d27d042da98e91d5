"""Web tests sign in a lot: argon2id with test-sized costs, so that each sign-in takes milliseconds, not a second."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from sandbox.accounts import passwords


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
