"""The processes that serve no HTTP: ``ehr-sandbox worker`` (the outbox consumers) and ``ehr-sandbox mllp``
(the HL7 v2 listener).

``ehr-sandbox serve`` runs both inside the web process, which is all a laptop
needs.  A deployment with several web processes runs them with ``serve
--no-worker`` and starts these separately: any number of outbox workers share
the work (each outbox consumer's cursor is held by one worker at a time and
skipped by the others, with ``FOR UPDATE SKIP LOCKED``; deliveries are leased
one by one), so each committed event is handled once, by whichever worker is
free.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from sandbox.concurrency import run_in_threadpool
from sandbox.config import Settings
from sandbox.fhir.interactions import Interactions
from sandbox.fhir.search_params import registry
from sandbox.hl7v2.service import Hl7v2Service
from sandbox.store.database import Database
from sandbox.store.repository import Repository

_log = logging.getLogger("ehr_sandbox.worker")


def housekeeping(db: Database) -> list[Callable[[], object]]:
    """The periodic chores of the background loop that ``serve`` and ``worker`` both run (the task re-check loop,
    ``tasks.live``): each is called on every poll and runs when it is due.  Safe with several workers at once."""
    from sandbox.auth.sweep import SmartSweep

    return [SmartSweep(db)]


def interactions_for(settings: Settings, db: Database) -> Interactions:
    """The service layer a non-HTTP process writes and reads through (the same one the app builds)."""
    reg = registry()
    return Interactions(
        Repository(reg), reg, default_count=settings.default_page_size, max_count=settings.max_page_size
    )


class OutboxConsumers:
    """HL7 v2 outbound delivery and task re-checks: the work that follows commits; and the housekeeping chores."""

    def __init__(
        self, db: Database, fhir: Interactions, *, interval: float = 0.5, demo_lab: tuple[str, int] | None = None
    ) -> None:
        from tasks.live import start_live_checks  # the task engine loads the packs: only where it runs

        self._start_live_checks = start_live_checks
        self.db = db
        self.fhir = fhir
        self.interval = interval
        self.hl7v2 = Hl7v2Service(db, fhir)
        host, lab_port = demo_lab if demo_lab is not None else ("", None)
        self.hl7v2.configure(host=host, mllp_port=None, deliver=True, demo_lab_port=lab_port)
        self._checker = None

    async def start(self) -> None:
        await self.hl7v2.start()
        if self.hl7v2.worker is not None:
            self.hl7v2.worker.interval = self.interval
        self._checker = await run_in_threadpool(
            self._start_live_checks, self.db, self.fhir, chores=housekeeping(self.db)
        )
        self._checker.interval = self.interval
        if self.hl7v2.worker is not None:  # a delivery's ACK changes the HL7 v2 log that task checks may read
            self.hl7v2.worker.on_sent = self._checker.poke

    async def stop(self) -> None:
        await self.hl7v2.stop()
        if self._checker is not None:
            await run_in_threadpool(self._checker.stop)
            self._checker = None


async def _until_signalled(started: Callable[[], None]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started()
    await stop.wait()


def _prepared(settings: Settings) -> tuple[Database, Interactions]:
    from sandbox.app import ensure_default_sandbox  # pulls in FastAPI: only when a command runs

    db = Database(settings.database_url)
    db.create_schema()
    ensure_default_sandbox(db)
    return db, interactions_for(settings, db)


def run_outbox_worker(
    settings: Settings,
    *,
    interval: float,
    started: Callable[[], None],
    demo_lab: tuple[str, int] | None = None,
) -> None:
    """Consume the outbox until SIGTERM or SIGINT, then finish the batch in hand and return; ``demo_lab`` (host,
    port) also runs the built-in demo lab, for deployments whose deliveries run where no ``serve`` runs it."""
    db, fhir = _prepared(settings)

    async def main() -> None:
        consumers = OutboxConsumers(db, fhir, interval=interval, demo_lab=demo_lab)
        await consumers.start()
        try:
            await _until_signalled(started)
        finally:
            await consumers.stop()

    try:
        asyncio.run(main())
    finally:
        db.dispose()


def run_mllp_listener(settings: Settings, *, host: str, port: int, started: Callable[[], None]) -> None:
    """Accept HL7 v2 over MLLP until SIGTERM or SIGINT (what ``serve`` does beside HTTP, alone)."""
    db, fhir = _prepared(settings)

    async def main() -> None:
        service = Hl7v2Service(db, fhir)
        service.configure(host=host, mllp_port=port, deliver=False)
        await service.start()
        try:
            await _until_signalled(started)
        finally:
            await service.stop()

    try:
        asyncio.run(main())
    finally:
        db.dispose()
