"""The token and quantity value indexes lead with the value and end with the parameter: ``ix_sp_token_value``
is ``(layer_id, resource_type, code, system, resource_id, param)`` and ``ix_sp_quantity_value``
``(layer_id, resource_type, code, low, resource_id, param)`` (both were ``(layer_id, resource_type, param,
...)``).  An Observation gives the same coding under four parameters (code, combo-code and the code components
of two composites) and the same quantity under four; with the parameter last, one resource's copies share a
leaf page.  A 10-entry transaction Bundle (an Encounter and nine Observations) wrote 242 WAL pages on SQLite
to a store of 1,000 patients (bench.population) with the old indexes, 169 with these (291 and 187 with both
indexes freshly built), and the CPU of storing it in process went from 5.7 to 4.5 ms (the write transaction's
from 3.4 to 2.3 ms); on PostgreSQL the server's CPU for it went from 3.0 to 2.7 ms.

Each index is dropped and built again, in the upgrade's transaction: on PostgreSQL that blocks writes to the
table while it builds (seconds on 100k resources).  Processes of the release before keep working beside the
upgraded database: the SQL is the same, only its plan uses the new columns.

Revision 0004, after 0003.  Written by `ehr-sandbox db revision`, then reviewed:
see docs/migrations.md.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"

_INDEXES = {
    "ix_sp_token_value": ("sp_token", ["layer_id", "resource_type", "code", "resource_id", "system", "param"]),
    "ix_sp_quantity_value": ("sp_quantity", ["layer_id", "resource_type", "code", "low", "resource_id", "param"]),
}


def upgrade() -> None:
    bind = op.get_bind()
    for name, (table, columns) in _INDEXES.items():
        op.drop_index(name, table_name=table, if_exists=True)
        op.create_index(name, table, columns, unique=False)
    # SQLite keeps its planner's statistics per index and drops them with the index: on a store analyzed after a
    # load, the new index without any took a patient's category search from 0.6 ms to 3 s (every vital-signs row
    # read for each of the patient's Observations).  PostgreSQL's statistics are per column and stay.
    if bind.dialect.name == "sqlite" and sa.inspect(bind).has_table("sqlite_stat1"):
        for _, (table, _) in _INDEXES.items():
            op.execute(f"ANALYZE {table}")
