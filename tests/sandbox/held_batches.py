"""Holding a group committer's first batch (``sandbox.store.group_commit.Batcher``), so that tests can make items
queue for the next one and look at how they were grouped."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from sandbox.store.group_commit import Batcher

Item = TypeVar("Item")
Result = TypeVar("Result")


class HeldBatches(Generic[Item, Result]):
    """Holds the first batch in the thread pool until ``release``, so that what arrives meanwhile queues for the
    next one; records each batch's size.  ``apply`` is the batcher's own, to wrap further."""

    def __init__(self, batches: Batcher[Item, Result]) -> None:
        self.batches = batches
        self.sizes: list[int] = []
        self.released = threading.Event()
        self.apply: Callable[[Sequence[Item]], list[Result]] = batches.apply
        batches.apply = self._apply

    def _apply(self, batch: Sequence[Item]) -> list[Result]:
        self.sizes.append(len(batch))
        if len(self.sizes) == 1:
            assert self.released.wait(20)
        return self.apply(batch)

    def wait_for(self, condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 20
        while not condition():
            assert time.monotonic() < deadline, f"timed out: {self.sizes} {self.batches.waiting}"
            time.sleep(0.01)

    def queued(self, count: int) -> None:
        self.wait_for(lambda: self.batches.waiting == count)

    def release(self) -> None:
        self.released.set()
