"""The chart's "Launch app" buttons: which SMART apps can be launched, and an EHR launch of one for a patient.

Every registered client with a launch URL is offered; to a vendor, only the clients it registered.  A launch
is made by ``sandbox.auth.launches`` (the same function as ``POST /admin/launches``), with the signed-in user's
fhirUser when the sandbox has one Practitioner with their email; the app is opened at its launch URL with
``launch`` and ``iss``.  A CDS card's SMART link names an app by its launch URL (``app_for_link``) and is
launched the same way, with the link's ``appContext`` stored with the launch for the app's token response.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection

from sandbox.accounts.users import User
from sandbox.auth import clients as client_ops
from sandbox.auth.authorize import practitioner_of
from sandbox.auth.launches import create_launch
from sandbox.auth.tokens import SmartPolicy
from sandbox.store.admin_errors import NotFound
from web.pages import origin_of


@dataclass(frozen=True)
class LaunchableApp:
    client_id: str
    origin: str  # where its launch URL is served: allowed by the chart page's CSP
    launch_url: str


def launchable_apps(conn: Connection, user: User) -> list[LaunchableApp]:
    """The apps ``user`` may launch from a chart: for a vendor the apps it registered (another vendor's app is
    not its to test), for everyone else every app.  Only those with a launch URL whose origin can be named in a
    CSP (every URL registration accepts can)."""
    found = []
    for client in client_ops.list_clients(conn, owner=_owner(user)):
        origin = origin_of(client.launch_url) if client.launch_url else None
        if origin and client.launch_url:
            found.append(LaunchableApp(client.client_id, origin, client.launch_url))
    return found


def _owner(user: User) -> str | None:
    """Whose registered apps ``user`` launches: a vendor's own (by ``smart_client_owners``), else None (all)."""
    return user.id if user.role == "vendor" else None


def app_for_link(apps: list[LaunchableApp], url: str) -> str | None:
    """The app a CDS card's SMART link opens: the one whose launch URL is the link's (its query aside, since a
    service may add its own parameters).  None when no registered app has that launch URL."""
    wanted = _without_query(url)
    return next((a.client_id for a in apps if _without_query(a.launch_url) == wanted), None)


def _without_query(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower(), parts.path or "/"


def launch_app(
    conn: Connection,
    state: Any,  # app.state: its FHIR interactions find the user's Practitioner
    user: User,
    client_id: str,
    sandbox_id: str,
    patient_id: str,
    *,
    root: str,
    policy: SmartPolicy | None,
    app_context: str | None = None,
) -> tuple[str, str]:
    """A new EHR launch of the app for the patient: ``(the URL to open, its origin)``.  NotFound for an app that
    is not registered or has no launch URL; Invalid for a patient that is not in the sandbox."""
    client = client_ops.find_client(conn, client_id)
    origin = origin_of(client.launch_url) if client and client.launch_url else None
    owner = _owner(user)
    if owner is not None and client is not None and client_ops.client_owners(conn).get(client_id) != owner:
        client = None  # another vendor's app: as if there were none, so a vendor learns nothing of others' apps
    if client is None or origin is None:
        raise NotFound(f"There is no app '{client_id}' with a launch URL")
    fhir_user = practitioner_of(conn, state, sandbox_id, user.email)
    launch, iss = create_launch(
        conn, client_id, sandbox_id, patient_id, user=fhir_user, root=root, policy=policy, app_context=app_context
    )
    url = client_ops.launch_url(client, launch, iss)
    assert url is not None  # the client has a launch URL
    return url, origin
