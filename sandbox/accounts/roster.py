"""Roster files: CSV lines of ``name,email,role`` (a header line is optional, the role defaults to trainee)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from sandbox.accounts.users import check_email
from sandbox.store.admin_errors import AdminError, Invalid

# A roster fills a cohort; trainers and admins are made deliberately, one at a time, never from a file.
ROSTER_ROLES = ("trainee", "vendor")


class RosterErrors(Invalid):
    """A roster with bad lines: ``problems`` holds one message per line (``line 3: ...``), for forms to list."""

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = problems


@dataclass(frozen=True)
class RosterLine:
    name: str
    email: str
    role: str = "trainee"


def check_roster_role(role: str) -> str:
    if role not in ROSTER_ROLES:
        raise Invalid(f"A cohort's roster holds {' or '.join(ROSTER_ROLES)} users, not '{role}'")
    return role


def parse_roster(text: str) -> list[RosterLine]:
    """All lines, or an error listing every bad line (so a file is fixed in one go, and nothing is half-imported)."""
    lines: list[RosterLine] = []
    problems: list[str] = []
    seen: set[str] = set()
    for number, row in enumerate(csv.reader(io.StringIO(text.lstrip("\ufeff"))), start=1):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if number == 1 and [c.lower() for c in cells[:3]] == ["name", "email", "role"][: len(cells[:3])]:
            continue
        if len(cells) not in (2, 3):
            problems.append(f"line {number}: expected name,email,role but found {len(cells)} fields")
            continue
        name, email, role = cells[0], cells[1], (cells[2].lower() if len(cells) == 3 and cells[2] else "trainee")
        try:
            if not name:
                raise Invalid("the name is empty")
            email = check_email(email)
            check_roster_role(role)
        except AdminError as exc:
            problems.append(f"line {number}: {exc.message}")
            continue
        if email in seen:
            problems.append(f"line {number}: {email} appears twice")
            continue
        seen.add(email)
        lines.append(RosterLine(name, email, role))
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise RosterErrors(f"The roster has errors, nothing was imported: {shown}", problems)
    if not lines:
        raise Invalid("The roster is empty: expected lines of name,email,role")
    return lines
