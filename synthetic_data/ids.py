"""Deterministic identifiers: resource ids, MRNs and NPIs, all derived from the seed.

Ids are UUIDv5 over ``{scope}/{counter}``, so the same seed and options give the
same ids on every run and machine (never ``uuid4`` or the clock).
"""

from __future__ import annotations

import hashlib
import random
import uuid

# A fixed namespace for every id this generator makes.
NAMESPACE = uuid.UUID("5b0c3a52-7c1e-4f7e-9a55-0c6d2f1e8a11")


class IdSource:
    """Hands out ids in one scope (a patient, the shared providers), numbered in generation order."""

    def __init__(self, scope: str) -> None:
        self.scope = scope
        self.count = 0
        self._prefix = NAMESPACE.bytes + f"{scope}/".encode()

    def next(self) -> str:
        """``str(uuid.uuid5(NAMESPACE, f"{scope}/{n}"))``, computed without building UUID objects (it is hot)."""
        self.count += 1
        digest = bytearray(hashlib.sha1(self._prefix + str(self.count).encode()).digest()[:16])
        digest[6] = (digest[6] & 0x0F) | 0x50
        digest[8] = (digest[8] & 0x3F) | 0x80
        h = digest.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def luhn_check_digit(digits: str) -> int:
    """The Luhn check digit for ``digits`` (the digit to append)."""
    total = 0
    for n, char in enumerate(reversed(digits)):
        d = int(char)
        if n % 2 == 0:  # these are the doubled ones once the check digit is appended
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return (10 - total % 10) % 10


def luhn_valid(number: str) -> bool:
    return number.isdigit() and len(number) > 1 and luhn_check_digit(number[:-1]) == int(number[-1])


def npi_valid(npi: str) -> bool:
    """An NPI is 10 digits whose Luhn check covers the card-issuer prefix 80840 (CMS, NPI standard)."""
    return len(npi) == 10 and npi.isdigit() and npi[0] in "12" and luhn_valid("80840" + npi)


def make_npi(rng: random.Random) -> str:
    """A 10-digit NPI beginning with 1 or 2, whose last digit is the Luhn check over 80840 + the first nine."""
    body = rng.choice("12") + "".join(rng.choice("0123456789") for _ in range(8))
    return body + str(luhn_check_digit("80840" + body))
