"""Indexes on the expiry of SMART launches, codes, tokens and remembered assertions (``jti``), which the
housekeeping sweep (``sandbox/auth/sweep.py``) deletes by ``expires_at``.

Revision 0002, after 0001.  Written by `ehr-sandbox db revision`, then reviewed:
see docs/migrations.md.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"

_INDEXES = {
    "smart_assertions": "ix_smart_assertions_expires",
    "smart_codes": "ix_smart_codes_expires",
    "smart_launches": "ix_smart_launches_expires",
    "smart_tokens": "ix_smart_tokens_expires",
}


def upgrade() -> None:
    # If missing only: a database made by a build from between the sweep and migrations has them already.
    for table, index in _INDEXES.items():
        op.create_index(index, table, ["expires_at"], unique=False, if_not_exists=True)
