"""Cohorts: a trainer, a baseline, a roster, and the sandboxes the roster works in.

In ``private`` mode (the default) each member gets a sandbox of their own made
from the cohort's baseline; in ``shared`` mode all members work in one.  Both
creating and resetting cost one row or one layer delete per sandbox, never a
copy of the baseline (see ``sandbox.store.sandboxes``).  While ``serve`` runs the
built-in demo lab (``lab``: where it takes orders), every sandbox made here sends
its lab orders there, the demo cohort's and a trainer's cohort's alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, delete, insert, select, union

from sandbox.accounts.roster import RosterLine, check_roster_role
from sandbox.accounts.users import User, create_user, find_by_email, lookup_user, revoke_smart_grants
from sandbox.fhir.values import instant_now
from sandbox.hl7v2 import demo_lab
from sandbox.store import sandboxes
from sandbox.store.admin_errors import Conflict, Invalid, NotFound
from sandbox.store.layers import DEFAULT_SANDBOX
from sandbox.store.schema import cohort_members, cohort_packs, cohorts, users

MODES = ("private", "shared")


@dataclass(frozen=True)
class Member:
    user: User
    sandbox_id: str

    def to_json(self) -> dict[str, Any]:
        return {**self.user.to_json(), "sandbox": self.sandbox_id}


@dataclass(frozen=True)
class Cohort:
    id: str
    name: str
    trainer_id: str
    baseline_id: str | None
    mode: str
    shared_sandbox_id: str | None
    created_at: str
    members: list[Member] = field(default_factory=list)
    packs: tuple[str, ...] = ()  # the task packs assigned, in the order they were assigned

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "trainer": self.trainer_id,
            "baseline": self.baseline_id,
            "sandbox_mode": self.mode,
            "shared_sandbox": self.shared_sandbox_id,
            "created_at": self.created_at[:23] + "Z",
            "members": [m.to_json() for m in self.members],
            "packs": list(self.packs),
        }

    @property
    def sandbox_ids(self) -> list[str]:
        found = [self.shared_sandbox_id] if self.shared_sandbox_id else []
        found += [m.sandbox_id for m in self.members if m.sandbox_id not in found]
        return found


def create_cohort(
    conn: Connection,
    name: str,
    trainer_ref: str,
    *,
    baseline_id: str | None = None,
    mode: str = "private",
    roster: list[RosterLine] | None = None,
    packs: list[str] | None = None,
    lab: tuple[str, int] | None = None,
) -> Cohort:
    """The cohort, its members (users made for roster lines whose email is new) and their sandboxes, at once.

    ``packs`` are task pack ids; the caller checks them against its task library (accounts know no packs).
    ``lab``: the demo lab's (host, port) that the sandboxes send their lab orders to (``Settings.demo_lab``).
    """
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise Invalid("A cohort needs a name: a non-empty string of at most 200 characters")
    if mode not in MODES:
        raise Invalid(f"The sandbox mode must be one of {', '.join(MODES)}, not '{mode}'")
    trainer = lookup_user(conn, trainer_ref)
    if trainer.role not in ("trainer", "admin"):
        raise Invalid(f"{trainer.email} is a {trainer.role}; a cohort's trainer must be a trainer or an admin")
    if baseline_id is not None:
        sandboxes.get_layer(conn, baseline_id, "baseline")
    cohort_id = sandboxes.new_layer_id(name.strip())
    shared = None
    if mode == "shared":
        shared = _new_sandbox(conn, f"{name.strip()} (shared)", baseline_id, lab)
    now = instant_now()[1]
    conn.execute(
        insert(cohorts).values(
            id=cohort_id,
            name=name.strip(),
            trainer_id=trainer.id,
            baseline_id=baseline_id,
            sandbox_mode=mode,
            shared_sandbox_id=shared,
            created_at=now,
        )
    )
    for pack_id in packs or []:
        assign_pack(conn, cohort_id, pack_id)
    for line in roster or []:
        add_member(conn, cohort_id, roster_user(conn, line).id, lab=lab)
    return get_cohort(conn, cohort_id)


def _new_sandbox(conn: Connection, name: str, baseline_id: str | None, lab: tuple[str, int] | None) -> str:
    sandbox_id = sandboxes.create_sandbox(conn, name, baseline_id).id
    if lab is not None:
        demo_lab.connect(conn, sandbox_id, lab)
    return sandbox_id


def pack_ids(conn: Connection, cohort_id: str) -> list[str]:
    """The task packs assigned to the cohort, in the order they were assigned."""
    return list(
        conn.execute(
            select(cohort_packs.c.pack_id)
            .where(cohort_packs.c.cohort_id == cohort_id)
            .order_by(cohort_packs.c.assigned_at, cohort_packs.c.pack_id)
        ).scalars()
    )


def assign_pack(conn: Connection, cohort_id: str, pack_id: str) -> None:
    """Give the cohort a task pack to work through (once: assigning it again changes nothing)."""
    if not isinstance(pack_id, str) or not pack_id.strip() or len(pack_id) > 64:
        raise Invalid("A pack id is a non-empty string of at most 64 characters")
    get_cohort(conn, cohort_id)
    present = conn.execute(
        select(cohort_packs.c.pack_id).where(cohort_packs.c.cohort_id == cohort_id, cohort_packs.c.pack_id == pack_id)
    ).first()
    if present is None:
        conn.execute(insert(cohort_packs).values(cohort_id=cohort_id, pack_id=pack_id, assigned_at=instant_now()[1]))


def roster_user(conn: Connection, line: RosterLine) -> User:
    """The user a roster line names: the existing one with that email, else a new one (no password yet)."""
    existing = find_by_email(conn, line.email)
    if existing is None:
        return create_user(conn, line.name, line.email, line.role)
    if existing.role != line.role:
        raise Conflict(f"{line.email} is already a {existing.role}, not a {line.role}")
    return existing


def add_member(conn: Connection, cohort_id: str, user_ref: str, *, lab: tuple[str, int] | None = None) -> Member:
    """The user in the cohort, with a sandbox of their own made from its baseline (in shared mode, the shared
    one); ``lab`` as for ``create_cohort``."""
    cohort = get_cohort(conn, cohort_id)
    user = lookup_user(conn, user_ref)
    check_roster_role(user.role)
    if any(m.user.id == user.id for m in cohort.members):
        raise Conflict(f"{user.email} is already in cohort '{cohort_id}'")
    if cohort.shared_sandbox_id is not None:
        sandbox_id = cohort.shared_sandbox_id
    else:
        sandbox_id = _new_sandbox(conn, f"{cohort.name}: {user.name}", cohort.baseline_id, lab)
    conn.execute(
        insert(cohort_members).values(
            cohort_id=cohort_id, user_id=user.id, sandbox_id=sandbox_id, added_at=instant_now()[1]
        )
    )
    return Member(user, sandbox_id)


def add_roster(
    conn: Connection, cohort_id: str, roster: list[RosterLine], *, lab: tuple[str, int] | None = None
) -> list[Member]:
    """Add every roster line's user; lines for people already in the cohort are skipped."""
    cohort = get_cohort(conn, cohort_id)
    present = {m.user.email for m in cohort.members}
    return [
        add_member(conn, cohort_id, roster_user(conn, line).id, lab=lab) for line in roster if line.email not in present
    ]


def remove_member(conn: Connection, cohort_id: str, user_ref: str) -> None:
    """Take a member off the roster; their private sandbox (and its work) goes with them."""
    member = get_member(conn, cohort_id, user_ref)
    conn.execute(
        delete(cohort_members).where(
            cohort_members.c.cohort_id == cohort_id, cohort_members.c.user_id == member.user.id
        )
    )
    if member.sandbox_id != get_cohort(conn, cohort_id).shared_sandbox_id:
        sandboxes.delete_sandbox(conn, member.sandbox_id)  # its SMART tokens go with it
    else:
        # The sandbox stays for the others; the apps this member approved in it lose their access.
        revoke_smart_grants(conn, member.user.id, member.sandbox_id)


def delete_cohort(conn: Connection, cohort_id: str) -> None:
    """The cohort and its sandboxes; the users stay (they may be in other cohorts)."""
    cohort = get_cohort(conn, cohort_id)
    conn.execute(delete(cohort_members).where(cohort_members.c.cohort_id == cohort_id))
    conn.execute(delete(cohort_packs).where(cohort_packs.c.cohort_id == cohort_id))
    conn.execute(delete(cohorts).where(cohorts.c.id == cohort_id))
    for sandbox_id in cohort.sandbox_ids:
        sandboxes.delete_sandbox(conn, sandbox_id)


def reset_cohort(conn: Connection, cohort_id: str) -> list[str]:
    """Every sandbox of the cohort back to the baseline; returns their ids."""
    cohort = get_cohort(conn, cohort_id)
    for sandbox_id in cohort.sandbox_ids:
        sandboxes.reset_sandbox(conn, sandbox_id)
    return cohort.sandbox_ids


def reset_member(conn: Connection, cohort_id: str, user_ref: str) -> str:
    """One trainee's sandbox back to the baseline.  In shared mode that would wipe everyone's work: refused."""
    cohort = get_cohort(conn, cohort_id)
    member = get_member(conn, cohort_id, user_ref)
    if cohort.shared_sandbox_id is not None:
        raise Conflict(f"Cohort '{cohort_id}' shares one sandbox; resetting it is resetting the cohort")
    sandboxes.reset_sandbox(conn, member.sandbox_id)
    return member.sandbox_id


def get_member(conn: Connection, cohort_id: str, user_ref: str) -> Member:
    user = lookup_user(conn, user_ref)
    row = conn.execute(
        select(cohort_members.c.sandbox_id).where(
            cohort_members.c.cohort_id == cohort_id, cohort_members.c.user_id == user.id
        )
    ).first()
    if row is None:
        get_cohort(conn, cohort_id)
        raise NotFound(f"{user.email} is not in cohort '{cohort_id}'")
    return Member(user, row.sandbox_id)


def get_cohort(conn: Connection, cohort_id: str) -> Cohort:
    row = conn.execute(select(cohorts).where(cohorts.c.id == cohort_id)).first()
    if row is None:
        raise NotFound(f"There is no cohort '{cohort_id}'")
    return _cohort(conn, row)


def list_cohorts(conn: Connection, trainer_id: str | None = None) -> list[Cohort]:
    query = select(cohorts).order_by(cohorts.c.created_at, cohorts.c.id)
    if trainer_id is not None:
        query = query.where(cohorts.c.trainer_id == trainer_id)
    return [_cohort(conn, row) for row in conn.execute(query).all()]


def _cohort(conn: Connection, row: Any) -> Cohort:
    members = [
        Member(User(m.id, m.name, m.email, m.role, m.password_hash is not None), m.sandbox_id)
        for m in conn.execute(
            select(users, cohort_members.c.sandbox_id)
            .join(cohort_members, cohort_members.c.user_id == users.c.id)
            .where(cohort_members.c.cohort_id == row.id)
            .order_by(cohort_members.c.added_at, users.c.email)
        )
    ]
    packs = pack_ids(conn, row.id)
    return Cohort(
        row.id,
        row.name,
        row.trainer_id,
        row.baseline_id,
        row.sandbox_mode,
        row.shared_sandbox_id,
        row.created_at,
        members,
        tuple(packs),
    )


# ---- who reaches which sandbox -------------------------------------------------------------------------


def reachable_sandboxes(conn: Connection, user: User) -> set[str]:
    """The sandboxes a user may use through the FHIR API (besides the open default one)."""
    return set(conn.execute(_reachable(user)).scalars()) | {DEFAULT_SANDBOX}


def can_reach(conn: Connection, user: User, sandbox_id: str) -> bool:
    if user.role == "admin" or sandbox_id == DEFAULT_SANDBOX:
        return True
    sub = _reachable(user).subquery()
    return conn.execute(select(sub.c[0]).where(sub.c[0] == sandbox_id).limit(1)).first() is not None


def _reachable(user: User) -> Any:
    """Trainees and vendors: the sandboxes they are members of.  Trainers: every sandbox of their cohorts."""
    own = select(cohort_members.c.sandbox_id.label("sandbox_id")).where(cohort_members.c.user_id == user.id)
    if user.role != "trainer":
        return own
    of_cohorts = select(cohort_members.c.sandbox_id.label("sandbox_id")).where(
        cohort_members.c.cohort_id.in_(select(cohorts.c.id).where(cohorts.c.trainer_id == user.id))
    )
    shared = select(cohorts.c.shared_sandbox_id.label("sandbox_id")).where(
        cohorts.c.trainer_id == user.id, cohorts.c.shared_sandbox_id.is_not(None)
    )
    return union(own, of_cohorts, shared)


def trains(conn: Connection, user: User, cohort_id: str) -> bool:
    """Whether the user may manage the cohort: its trainer, or any admin."""
    if user.role == "admin":
        return True
    row = conn.execute(select(cohorts.c.trainer_id).where(cohorts.c.id == cohort_id)).first()
    return row is not None and row.trainer_id == user.id
