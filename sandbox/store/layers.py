"""Sandboxes as layers: what a sandbox sees and where its writes go.

A sandbox's own layer holds its writes and deletion tombstones; below it lies
its baseline, immutable and shared.  A resource is visible from the top-most
layer that has a row for it, so an update or delete in the sandbox hides the
baseline's version, and a reset (deleting the sandbox layer's rows) brings it
back.  Creating a sandbox is one row; resetting never copies the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, select

from sandbox.store.schema import layers

DEFAULT_SANDBOX = "default"


@dataclass(frozen=True)
class View:
    """The layers of one sandbox, top first.  Writes go to ``layers[0]``."""

    sandbox_id: str
    layers: tuple[str, ...]
    # Resource types the overlay is known, for one search, to hold nothing of (``search_sql.quiet_types``):
    # the sandbox sees the baseline's resources of these types as they are.
    quiet: frozenset[str] = frozenset()

    @property
    def overlay(self) -> str:
        return self.layers[0]

    @property
    def layered(self) -> bool:
        return len(self.layers) > 1


class UnknownSandbox(LookupError):
    pass


def resolve_view(conn: Connection, sandbox_id: str) -> View:
    row = conn.execute(
        select(layers.c.id, layers.c.kind, layers.c.baseline_id).where(layers.c.id == sandbox_id)
    ).first()
    if row is None or row.kind != "sandbox":
        raise UnknownSandbox(sandbox_id)
    return View(sandbox_id, (row.id, row.baseline_id) if row.baseline_id else (row.id,))


def hold_sandbox(conn: Connection, sandbox_id: str) -> None:
    """``UnknownSandbox`` unless the sandbox exists; if it does, it cannot be deleted before this transaction ends.

    For writes of rows keyed by the sandbox's id outside its layers (SMART launches, codes, tokens): a delete
    removes those rows, and one written by a transaction that saw the sandbox just before the delete committed
    would outlive it, and be honoured by a new sandbox of that id.  On PostgreSQL ``FOR KEY SHARE`` waits for a
    delete (or reset) in flight, which holds the row ``FOR UPDATE``, and then finds no row; the writes that only
    hold the row the same way are not held up by it.  SQLite's write transactions already take turns.
    """
    row = conn.execute(
        select(layers.c.kind).where(layers.c.id == sandbox_id).with_for_update(read=True, key_share=True)
    ).first()
    if row is None or row.kind != "sandbox":
        raise UnknownSandbox(sandbox_id)
