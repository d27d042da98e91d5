"""Slowing down password guessing: failed sign-ins counted per email and per client address.

A key (an email, or an address) with ``limit`` failures in the last ``window`` is refused until the
oldest of them is older than ``window``: a short lockout, without even checking the password.  Addresses
get a much higher limit than emails because a classroom often signs in from behind one address.
A success clears the email's count (not the address's).

The counts live in the memory of one server process: with several workers, each counts on its own,
so the effective limit is multiplied by the number of workers.  Enough to turn an online guessing
attack from thousands of tries a minute into a handful; not an account lockout policy.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass
class LoginThrottle:
    per_email: int = 5
    per_address: int = 50
    window: timedelta = timedelta(minutes=5)
    max_keys: int = 100_000  # beyond this, stale keys are swept before a new one is added
    _failures: dict[str, deque[datetime]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def retry_after(self, email: str, address: str, now: datetime) -> timedelta | None:
        """How long until this email and address may try again; None when they may now."""
        with self._lock:
            waits = [
                self._wait(key, limit, now)
                for key, limit in ((_email_key(email), self.per_email), (_address_key(address), self.per_address))
            ]
        found = [w for w in waits if w is not None]
        return max(found) if found else None

    def failed(self, email: str, address: str, now: datetime) -> None:
        with self._lock:
            if len(self._failures) >= self.max_keys:
                self._sweep(now)
            for key in (_email_key(email), _address_key(address)):
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, email: str) -> None:
        with self._lock:
            self._failures.pop(_email_key(email), None)

    def _wait(self, key: str, limit: int, now: datetime) -> timedelta | None:
        times = self._failures.get(key)
        if not times:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        if len(times) < limit:
            return None
        return times[-limit] + self.window - now

    def _sweep(self, now: datetime) -> None:
        for key in [k for k, times in self._failures.items() if not times or times[-1] <= now - self.window]:
            del self._failures[key]


def _email_key(email: str) -> str:
    return "email:" + email.strip().lower()


def _address_key(address: str) -> str:
    return "address:" + address
