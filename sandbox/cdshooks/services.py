"""The CDS services a sandbox calls: registrations (one discovery URL each) and the services they list.

Every sandbox has the built-in demo services (registration ``builtin``, served by this app at
``/cds-services``) unless they were removed from it; vendors add their own by discovery URL.  A service
is named by its registration and its id (``builtin/penicillin-allergy-order-select``): two vendors may
well both call a service ``patient-greeter``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
from sqlalchemy import Connection, delete, insert, select, update

from sandbox.fhir.values import instant_now
from sandbox.store.admin_errors import Conflict, Invalid, NotFound
from sandbox.store.schema import cds_registrations

BUILTIN = "builtin"
DISCOVERY_PATH = "/cds-services"
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


@dataclass(frozen=True)
class ServiceDef:
    """One service as its discovery document describes it."""

    id: str
    hook: str
    description: str
    title: str | None = None
    prefetch: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "hook": self.hook, "description": self.description}
        if self.title:
            data["title"] = self.title
        if self.prefetch:
            data["prefetch"] = self.prefetch
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServiceDef:
        return cls(data["id"], data["hook"], data["description"], data.get("title"), data.get("prefetch"))


@dataclass(frozen=True)
class Registration:
    id: str
    discovery_url: str  # for the built-in services: the path, relative to our base URL
    services: tuple[ServiceDef, ...]
    builtin: bool = False
    created_at: str | None = None
    refreshed_at: str | None = None

    def discovery(self, root: str) -> str:
        return root.rstrip("/") + DISCOVERY_PATH if self.builtin else self.discovery_url

    def endpoint(self, root: str, service_id: str) -> str:
        """``{baseUrl}/cds-services/{id}``: the discovery URL and the service's id."""
        return f"{self.discovery(root).rstrip('/')}/{quote(service_id, safe='')}"

    def to_json(self, root: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "discovery_url": self.discovery(root),
            "builtin": self.builtin,
            "created_at": _instant(self.created_at),
            "refreshed_at": _instant(self.refreshed_at),
            "services": [{**s.to_json(), "endpoint": self.endpoint(root, s.id)} for s in self.services],
        }


def _instant(value: str | None) -> str | None:
    return value[:23] + "Z" if value else None


def builtin_registration() -> Registration:
    from sandbox.cdshooks.demo_services import SERVICES  # the demo services' own discovery document

    return Registration(BUILTIN, DISCOVERY_PATH, tuple(SERVICES), builtin=True)


def check_discovery_url(url: Any) -> str:
    if not isinstance(url, str) or not url.strip():
        raise Invalid("'discovery_url' is required: the service's {baseUrl}/cds-services URL")
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise Invalid(f"'{url}' is not an absolute http(s) URL without query or fragment")
    if not parts.path.endswith(DISCOVERY_PATH):
        raise Invalid(f"'{url}' is not a discovery URL: CDS Hooks serves discovery at {{baseUrl}}/cds-services")
    return url


def listing(conn: Connection, sandbox_id: str) -> list[Registration]:
    """The sandbox's registrations: the built-in one first (unless removed), then the vendors', by id."""
    r = cds_registrations.c
    rows = conn.execute(select(cds_registrations).where(r.sandbox_id == sandbox_id).order_by(r.id)).all()
    builtin_off = any(row.id == BUILTIN and not row.enabled for row in rows)
    found = [] if builtin_off else [builtin_registration()]
    return found + [_registration(row) for row in rows if row.id != BUILTIN]


def get(conn: Connection, sandbox_id: str, registration_id: str) -> Registration:
    for registration in listing(conn, sandbox_id):
        if registration.id == registration_id:
            return registration
    raise NotFound(f"Sandbox '{sandbox_id}' has no CDS service registration '{registration_id}'")


def for_hook(conn: Connection, sandbox_id: str, hook: str) -> list[tuple[Registration, ServiceDef]]:
    return [(reg, s) for reg in listing(conn, sandbox_id) for s in reg.services if s.hook == hook]


def find_service(conn: Connection, sandbox_id: str, registration_id: str, service_id: str) -> ServiceDef | None:
    reg = get(conn, sandbox_id, registration_id)
    return next((s for s in reg.services if s.id == service_id), None)


def add(
    conn: Connection,
    sandbox_id: str,
    discovery_url: str,
    services: list[ServiceDef],
    *,
    registration_id: str | None = None,
) -> Registration:
    r = cds_registrations.c
    existing = conn.execute(
        select(r.id).where(r.sandbox_id == sandbox_id, r.discovery_url == discovery_url, r.enabled)
    ).first()
    if existing is not None:
        raise Conflict(f"'{discovery_url}' is registered already, as '{existing.id}'; refresh it instead")
    if registration_id is None:
        registration_id = _free_id(conn, sandbox_id, _slug(discovery_url))
    elif not _ID.match(registration_id) or registration_id == BUILTIN:
        raise Invalid(f"'{registration_id}' is not a usable id (1-64 of A-Z a-z 0-9 - ., not '{BUILTIN}')")
    elif conn.execute(select(r.id).where(r.sandbox_id == sandbox_id, r.id == registration_id)).first():
        raise Conflict(f"Sandbox '{sandbox_id}' has a registration '{registration_id}' already")
    now = instant_now()[1]
    conn.execute(
        insert(cds_registrations).values(
            sandbox_id=sandbox_id,
            id=registration_id,
            discovery_url=discovery_url,
            enabled=True,
            created_at=now,
            refreshed_at=now,
            services=_services_json(services),
        )
    )
    return Registration(registration_id, discovery_url, tuple(services), created_at=now, refreshed_at=now)


def replace_services(conn: Connection, sandbox_id: str, registration_id: str, services: list[ServiceDef]) -> None:
    r = cds_registrations.c
    conn.execute(
        update(cds_registrations)
        .where(r.sandbox_id == sandbox_id, r.id == registration_id)
        .values(services=_services_json(services), refreshed_at=instant_now()[1])
    )


def remove(conn: Connection, sandbox_id: str, registration_id: str) -> None:
    """Forget a registration; for the built-in one, hide it from this sandbox (``restore_builtin`` undoes)."""
    get(conn, sandbox_id, registration_id)
    r = cds_registrations.c
    conn.execute(delete(cds_registrations).where(r.sandbox_id == sandbox_id, r.id == registration_id))
    if registration_id == BUILTIN:
        conn.execute(
            insert(cds_registrations).values(
                sandbox_id=sandbox_id,
                id=BUILTIN,
                discovery_url=DISCOVERY_PATH,
                enabled=False,
                created_at=instant_now()[1],
                services="[]",
            )
        )


def restore_builtin(conn: Connection, sandbox_id: str) -> Registration:
    r = cds_registrations.c
    conn.execute(delete(cds_registrations).where(r.sandbox_id == sandbox_id, r.id == BUILTIN))
    return builtin_registration()


def _services_json(services: list[ServiceDef]) -> str:
    return orjson.dumps([s.to_json() for s in services]).decode()


def _registration(row: Any) -> Registration:
    services = tuple(ServiceDef.from_json(s) for s in orjson.loads(row.services))
    return Registration(row.id, row.discovery_url, services, created_at=row.created_at, refreshed_at=row.refreshed_at)


def _slug(url: str) -> str:
    parts = urlsplit(url)
    path = parts.path[: -len(DISCOVERY_PATH)]
    return (re.sub(r"[^a-z0-9]+", "-", f"{parts.netloc}{path}".lower()).strip("-")[:56] or "service").rstrip("-")


def _free_id(conn: Connection, sandbox_id: str, base: str) -> str:
    r = cds_registrations.c
    taken = set(conn.execute(select(r.id).where(r.sandbox_id == sandbox_id)).scalars()) | {BUILTIN}
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    return candidate
