"""The HL7 v2 service of one app: the inbound processor, the MLLP listener, the outbound delivery worker and the
built-in demo lab (``demo_lab``) that outbound orders can be sent to.

``ehr-sandbox serve`` turns the listener, the worker and the lab on (``configure``)
before the app starts; tests and embedded uses start what they need.  Both
run on the app's event loop; database work goes to threads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from sandbox.concurrency import run_in_threadpool
from sandbox.fhir.context import Views
from sandbox.fhir.interactions import Interactions
from sandbox.hl7v2.demo_lab import DemoLab
from sandbox.hl7v2.inbound import Inbound, Result
from sandbox.hl7v2.mllp import Server
from sandbox.metrics import count_mllp
from sandbox.store.database import Database
from sandbox.store.group_commit import Batcher

if TYPE_CHECKING:
    from sandbox.hl7v2.delivery import Worker

DEFAULT_MLLP_PORT = 2575
LISTENER = "HL7 v2 MLLP listener"  # the listener's name in a ListenError


def mllp_port_from_env() -> int:
    raw = os.environ.get("EHR_SANDBOX_MLLP_PORT", str(DEFAULT_MLLP_PORT))
    if not raw.isdigit() or not 0 <= int(raw) <= 65535:
        raise ValueError(f"EHR_SANDBOX_MLLP_PORT must be a port number (0-65535), not '{raw}'")
    return int(raw)


BATCH_LIMIT = 50  # messages per transaction: enough to share a commit, few enough that their ACKs are not held long


class Hl7v2Service:
    def __init__(self, db: Database, fhir: Interactions, views: Views | None = None) -> None:
        self.db = db
        self.inbound = Inbound(db, fhir, views)
        self.batches: Batcher[bytes, Result] = Batcher(self.inbound.handle_batch, BATCH_LIMIT)
        self.fhir = fhir
        self.listen: tuple[str, int] | None = None
        self.deliver = False
        self.server: Server | None = None
        self.lab_listen: tuple[str, int] | None = None
        self.lab: DemoLab | None = None
        self.worker: Worker | None = None
        self.on_sent: Callable[[str], object] | None = None  # told of each delivery attempt (``deliver_due``)

    def configure(
        self, *, host: str, mllp_port: int | None, deliver: bool = True, demo_lab_port: int | None = None
    ) -> None:
        self.listen = (host, mllp_port) if mllp_port is not None else None
        self.deliver = deliver
        self.lab_listen = (host, demo_lab_port) if demo_lab_port is not None else None

    async def handle_frame(self, data: bytes) -> bytes | None:
        result = await self.batches.submit(data)
        count_mllp("inbound", data, result.code)
        return result.reply.encode("utf-8") if result.reply is not None else None

    def bind(self) -> None:
        """Take the configured listener's and demo lab's ports now (``ListenError`` when one is in use).
        ``ehr-sandbox serve`` calls it before the app starts, to say which port in one line; ``start`` calls
        it otherwise."""
        if self.listen is not None and self.server is None:
            server = Server(self.handle_frame, *self.listen, name=LISTENER)
            server.bind()
            self.server = server
        if self.lab_listen is not None and self.lab is None:
            lab = DemoLab(*self.lab_listen)
            lab.bind()
            self.lab = lab

    async def start(self) -> None:
        self.bind()
        if self.server is not None:
            await self.server.start()
        if self.lab is not None:
            await self.lab.start()
        if self.deliver and self.worker is None:
            from sandbox.hl7v2.delivery import Worker  # imports the outbound builders: only when delivering

            self.worker = Worker(self.db, self.fhir)
            self.worker.on_sent = self.on_sent
            self.worker.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None
        await self.batches.drain()
        if self.lab is not None:
            await self.lab.stop()
            self.lab = None
        if self.worker is not None:
            await run_in_threadpool(self.worker.stop)
            self.worker = None
