"""``smart_launches.app_context``: the ``appContext`` of the CDS card's SMART link an EHR launch came from, which
the token response hands the app (CDS Hooks 2.0).  Nullable, so processes of the release before keep working
beside the upgraded database (they never write it).

Revision 0003, after 0002.  Written by `ehr-sandbox db revision`, then reviewed:
see docs/migrations.md.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    # If missing only, as 0002 does: a database adopted from before migrations has the tables of the build that
    # adopts it, this column included.
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("smart_launches")}
    if "app_context" in columns:
        return
    with op.batch_alter_table("smart_launches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("app_context", sa.Text(), nullable=True))
