"""Group commit: writes that arrive while one batch is being written wait and go together in the next.

Used for HL7 v2 messages from every MLLP connection (``sandbox.hl7v2.service``) and for planned transaction
Bundles POSTed to a FHIR base on SQLite (``sandbox.fhir.bundle_routes``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from sandbox.concurrency import run_in_threadpool

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """While one batch is being applied (in the thread pool, one transaction), the items that arrive wait,
    and go together in the next one, up to ``limit``.  A lone sender's item goes at once, in a batch of one.

    One batch at a time: on SQLite the writers take turns anyway, and there each item as its own
    transaction cost more as senders were added (more threads, handoffs and commits for the same writes).
    ``apply`` answers each item of a batch, in order, once the batch has committed: it isolates one item's
    failure from the others' itself (a savepoint each), so an exception out of it is a bug, and every
    sender of that batch gets it.
    """

    def __init__(self, apply: Callable[[Sequence[Item]], list[Result]], limit: int) -> None:
        self.apply = apply
        self.limit = limit
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        return await future

    @property
    def waiting(self) -> int:
        """How many items wait for the next batch."""
        return len(self._waiting)

    async def drain(self) -> None:
        """Wait for the batches already taken on (stopping: their senders' futures still get answers)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[: self.limit], self._waiting[self.limit :]
                try:
                    results = await run_in_threadpool(self.apply, [item for item, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():  # its sender may have gone (connection closed, server stopping)
                        future.set_result(result)
        finally:
            self._task = None
