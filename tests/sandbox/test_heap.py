"""The web process freezes its startup heap once, so full garbage collections stop walking it."""

from __future__ import annotations

import gc

from fastapi.testclient import TestClient

from sandbox import heap


def test_starting_the_app_freezes_the_heap_once(client: TestClient) -> None:
    assert heap._frozen  # the client fixture started the app: its lifespan froze what the process held
    frozen = gc.get_freeze_count()
    assert frozen > 10_000  # the imports and the app, not a handful
    garbage = [{"n": n} for n in range(1000)]
    heap.freeze_startup_heap()
    # Once per process: later apps' objects (the 1,000 dicts above) stay collectable.  Frozen objects that
    # reference counting frees leave the count, so it may shrink, never grow.
    assert gc.get_freeze_count() <= frozen
    assert garbage
