"""EHR launches: the context ("this patient, this encounter, this user") a "Launch app" button hands an app.

``create_launch`` stores the context under a random ``launch`` value (hashed, like every secret here) and
answers it with ``iss``, the sandbox's FHIR base; the app sends both back in its authorization request.
The admin API (``POST /admin/launches``) and the web UI's chart both call it.  A launch from a CDS card's SMART
link carries the link's ``appContext``, which the token response of that launch (and of no other) hands the app.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select

from sandbox.auth.clients import get_client
from sandbox.auth.tokens import SmartPolicy, digest, stamp
from sandbox.fhir.search_params import registry
from sandbox.store.admin_errors import Invalid, NotFound
from sandbox.store.layers import UnknownSandbox, hold_sandbox, resolve_view
from sandbox.store.repository import Repository
from sandbox.store.schema import smart_launches
from sandbox.urls import fhir_base_at

FHIR_USER_TYPES = ("Practitioner", "PractitionerRole", "Patient", "RelatedPerson", "Person")
# CDS Hooks sets no limit; this one keeps a token response (which repeats it on every refresh) a sane size.
MAX_APP_CONTEXT = 64 * 1024


@dataclass(frozen=True)
class Launch:
    client_id: str
    patient: str | None
    encounter: str | None
    fhir_user: str | None
    app_context: str | None = None


def _exists(conn: Connection, sandbox_id: str, rtype: str, rid: str) -> bool:
    view = resolve_view(conn, sandbox_id)
    stored = Repository(registry()).current(conn, view, rtype, rid)
    return stored is not None and not stored.deleted


def create_launch(
    conn: Connection,
    client_id: str,
    sandbox_id: str,
    patient: str,
    encounter: str | None = None,
    user: str | None = None,
    *,
    root: str,
    policy: SmartPolicy | None = None,
    app_context: str | None = None,
) -> tuple[str, str]:
    """A new launch of ``client_id`` in ``sandbox_id`` for ``patient``; returns ``(launch, iss)``.

    ``patient`` and ``encounter`` are ids (``Patient/`` and ``Encounter/`` prefixes are accepted);
    ``user`` is the fhirUser, a reference such as ``Practitioner/123``.  Each must exist in the sandbox.
    ``root`` is the server's public URL (``sandbox.urls.public_root(request)``), for ``iss``.
    ``app_context`` is the ``appContext`` of the CDS card link the launch comes from: opaque text, not empty.
    """
    policy = policy or SmartPolicy()
    get_client(conn, client_id)
    try:
        hold_sandbox(conn, sandbox_id)  # the launch must not outlive the sandbox
    except UnknownSandbox:
        raise NotFound(f"There is no sandbox '{sandbox_id}'") from None
    if not isinstance(patient, str) or not patient:
        raise Invalid("patient is the id of a Patient of the sandbox")
    patient = patient.removeprefix("Patient/")
    if not _exists(conn, sandbox_id, "Patient", patient):
        raise Invalid(f"Sandbox '{sandbox_id}' has no Patient/{patient}")
    if encounter is not None:
        if not isinstance(encounter, str) or not encounter:
            raise Invalid("encounter is the id of an Encounter of the sandbox")
        encounter = encounter.removeprefix("Encounter/")
        if not _exists(conn, sandbox_id, "Encounter", encounter):
            raise Invalid(f"Sandbox '{sandbox_id}' has no Encounter/{encounter}")
    if user is not None:
        rtype, _, rid = user.partition("/") if isinstance(user, str) else ("", "", "")
        if rtype not in FHIR_USER_TYPES or not rid:
            raise Invalid(f"user is a FHIR reference to one of {', '.join(FHIR_USER_TYPES)}, like Practitioner/123")
        if not _exists(conn, sandbox_id, rtype, rid):
            raise Invalid(f"Sandbox '{sandbox_id}' has no {user}")
    if app_context is not None and (
        not isinstance(app_context, str) or not app_context or len(app_context) > MAX_APP_CONTEXT
    ):
        raise Invalid(f"appContext is a non-empty string of at most {MAX_APP_CONTEXT} characters")
    launch = secrets.token_urlsafe(24)
    conn.execute(
        insert(smart_launches).values(
            sandbox_id=sandbox_id,
            launch_hash=digest(launch),
            client_id=client_id,
            patient=patient,
            encounter=encounter,
            fhir_user=user,
            app_context=app_context,
            expires_at=stamp(policy.clock() + policy.launch),
        )
    )
    return launch, fhir_base_at(root, sandbox_id)


def find_launch(conn: Connection, sandbox_id: str, launch: str, policy: SmartPolicy) -> Launch | None:
    """The context of an unexpired launch in this sandbox, else None."""
    t = smart_launches
    row = conn.execute(select(t).where(t.c.sandbox_id == sandbox_id, t.c.launch_hash == digest(launch))).first()
    if row is None or row.expires_at < stamp(policy.clock()):
        return None
    return Launch(row.client_id, row.patient, row.encounter, row.fhir_user, row.app_context)
