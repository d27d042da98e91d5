"""A resource's ``patient`` references and its ``code`` codings are also indexed together, one row per pair, in
the new table ``sp_combo`` (``schema.sp_combo``): ``Observation?patient=X&code=Y`` seeks to its matches instead
of probing the code of each of the patient's resources, and so no longer slows as the chart grows.

The upgrade makes the table and fills it from the index rows already stored (the same pairs the write path
makes: every ``patient`` reference row with a target id, with every ``code`` token row with a code, of the same
resource in the same layer), in the upgrade's transaction: on PostgreSQL that reads both index tables once
(seconds on 100k resources) and blocks writes meanwhile.

Processes of the release before, still running beside the upgraded database, write no combined rows: a
resource they write in that window is not found by a ``patient`` and ``code`` search of this release until it
is written again, or until ``ehr-sandbox db reindex --type ...`` (docs/migrations.md) works its rows out again.

Revision 0006, after 0005.  Written by `ehr-sandbox db revision`, then reviewed:
see docs/migrations.md.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"

# indexer.COMBOS at this revision; written out so the backfill does not change with a later release's pairs.
REFERENCE, TOKEN, NAME = "patient", "code", "patient+code"


def upgrade() -> None:
    bind = op.get_bind()
    if sa.inspect(bind).has_table("sp_combo"):
        # Made by this release's schema already (a database adopted from ``create_all``): its write path filled it.
        return
    op.create_table(
        "sp_combo",
        sa.Column("layer_id", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("grp", sa.Integer(), nullable=False),
        sa.Column("target_type", sa.String(length=64), nullable=True),
        sa.Column("target_id", sa.String(length=64), nullable=False),
        sa.Column("system", sa.Text(), nullable=True),
        sa.Column("code", sa.Text(), nullable=False),
    )
    op.create_index("ix_sp_combo_resource", "sp_combo", ["layer_id", "resource_type", "resource_id"])
    op.create_index(
        "ix_sp_combo_value",
        "sp_combo",
        ["layer_id", "resource_type", "target_id", "code", "resource_id", "system", "target_type", "param"],
    )
    keys = ("layer_id", "resource_type", "resource_id", "param")
    ref = sa.table("sp_reference", *(sa.column(name) for name in (*keys, "target_type", "target_id")))
    token = sa.table("sp_token", *(sa.column(name) for name in (*keys, "system", "code")))
    pairs = (
        sa.select(
            ref.c.layer_id,
            ref.c.resource_type,
            ref.c.resource_id,
            sa.literal(NAME),
            sa.literal(0),
            ref.c.target_type,
            ref.c.target_id,
            token.c.system,
            token.c.code,
        )
        .distinct()
        .join_from(
            ref,
            token,
            sa.and_(
                token.c.layer_id == ref.c.layer_id,
                token.c.resource_type == ref.c.resource_type,
                token.c.resource_id == ref.c.resource_id,
            ),
        )
        .where(ref.c.param == REFERENCE, ref.c.target_id.is_not(None))
        .where(token.c.param == TOKEN, token.c.code.is_not(None))
    )
    columns = ["layer_id", "resource_type", "resource_id", "param", "grp", "target_type", "target_id", "system", "code"]
    combo = sa.table("sp_combo", *(sa.column(name) for name in columns))
    bind.execute(combo.insert().from_select(columns, pairs))
    # A store analyzed after a load has SQLite planner statistics for every other index; without any for these
    # the planner may prefer another (PostgreSQL gathers its own as the table is used).
    if bind.dialect.name == "sqlite" and sa.inspect(bind).has_table("sqlite_stat1"):
        op.execute("ANALYZE sp_combo")
