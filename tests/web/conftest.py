"""Web tests sign in a lot: argon2id with test-sized costs, so that each sign-in takes milliseconds, not a second.
The console's CDS services page registers a vendor's service on a real local port: ``vendor`` (CDS Hooks' fixture)."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from sandbox.accounts import passwords
from tests.sandbox.cdshooks.conftest import vendor, vendor_server  # noqa: F401


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
