"""The HL7 v2 translator follows the outbox with a cursor (consumer ``hl7v2-translate`` in ``outbox_cursors``), as
every other consumer does, instead of marking each event done: ``ix_outbox_pending`` (``done_at, seq``) goes.

Marking rewrote every outbox row a second time, and on PostgreSQL the index of events not done filled with the
dead versions of the rows marked since the last vacuum, which every poll walked: under transaction Bundle ingest
the translator's poll took 77 ms, a core of PostgreSQL's time (pg_stat_statements).

The cursor starts where the marks left off: just before the oldest event not marked done (or at the newest
event if every one was), so nothing is translated twice and nothing skipped.  ``done_at`` and ``claimed_by`` stay,
unused: a process of the release before, still running beside the upgraded database, keeps marking rows (without
the index, its polls read more); while both kinds of process translate, an event may be translated by each.

Revision 0005, after 0004.  Written by `ehr-sandbox db revision`, then reviewed:
see docs/migrations.md.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"

CONSUMER = "hl7v2-translate"


def upgrade() -> None:
    bind = op.get_bind()
    outbox = sa.table("outbox", sa.column("seq", sa.Integer), sa.column("done_at", sa.String))
    cursors = sa.table(
        "outbox_cursors",
        sa.column("consumer", sa.String),
        sa.column("last_seq", sa.Integer),
        sa.column("updated_at", sa.String),
    )
    exists = bind.execute(sa.select(cursors.c.consumer).where(cursors.c.consumer == CONSUMER)).first()
    if exists is None:
        oldest_pending = bind.execute(sa.select(sa.func.min(outbox.c.seq)).where(outbox.c.done_at.is_(None))).scalar()
        newest = bind.execute(sa.select(sa.func.max(outbox.c.seq))).scalar()
        last = oldest_pending - 1 if oldest_pending is not None else (newest or 0)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")  # as ``outbox.advance`` stamps it
        bind.execute(sa.insert(cursors).values(consumer=CONSUMER, last_seq=last, updated_at=now))
    op.drop_index("ix_outbox_pending", table_name="outbox", if_exists=True)
