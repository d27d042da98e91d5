"""Work out the search index rows of stored resources again: ``ehr-sandbox db reindex``.

For rows an earlier release did not write: revision 0006 fills the combined ``patient``/``code`` rows from the
rows already stored, but a resource written by a process of the release before while the upgraded database was
already in use has none until it is written again.  And for any later change to how rows are worked out.  Each
resource's rows are replaced by those its current version gives now; versions, history and the outbox are
untouched (the resource did not change, so no event goes out).

A layer at a time, in batches of ``batch`` resources, each its own write transaction that holds the layer as a
write does (a reset or delete in flight waits for it, or it for them) and, on PostgreSQL, the batch's resource
rows ``FOR UPDATE``: a write to one of them waits, so its own new rows are never replaced by rows of the
version before.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import false, select, tuple_

from sandbox.store.database import Database
from sandbox.store.repository import Repository, hold_layer
from sandbox.store.schema import layers, resources

BATCH = 500


@dataclass(frozen=True)
class Reindexed:
    resources: int
    layers: int


def reindex(db: Database, repo: Repository, *, types: Collection[str] = (), batch: int = BATCH) -> Reindexed:
    """Every current resource (of ``types``, if given) of every layer: its index rows worked out again."""
    with db.read() as conn:
        layer_ids = list(conn.execute(select(layers.c.id).order_by(layers.c.id)).scalars())
    total = touched = 0
    for layer_id in layer_ids:
        done = _reindex_layer(db, repo, layer_id, types, batch)
        total += done
        touched += done > 0
    return Reindexed(total, touched)


def _reindex_layer(db: Database, repo: Repository, layer_id: str, types: Collection[str], batch: int) -> int:
    r = resources
    after = ("", "")
    done = 0
    while True:
        with db.write() as conn:
            if not hold_layer(conn, layer_id):
                return done  # deleted meanwhile: nothing left to index
            where = [r.c.layer_id == layer_id, r.c.deleted == false(), tuple_(r.c.resource_type, r.c.id) > after]
            if types:
                where.append(r.c.resource_type.in_(sorted(types)))
            query = (
                select(r.c.resource_type, r.c.id, r.c.content)
                .where(*where)
                .order_by(r.c.resource_type, r.c.id)
                .limit(batch)
                .with_for_update()
            )
            stored = [(row.resource_type, row.id, row.content) for row in conn.execute(query)]
            if not stored:
                return done
            repo.rewrite_index_rows(conn, layer_id, stored)
        done += len(stored)
        after = stored[-1][:2]
