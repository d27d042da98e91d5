"""Alembic's environment.  It runs on the connection ``sandbox.store.migrations`` hands it, inside that
connection's transaction (and so under the caller's lock): there is no alembic.ini, no URL and no offline mode."""

from __future__ import annotations

from alembic import context

from sandbox.store.schema import metadata

if context.is_offline_mode():
    raise RuntimeError("ehr-sandbox runs its migrations on a live connection: use `ehr-sandbox db upgrade`")

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=metadata,
    # SQLite cannot ALTER most of a table: autogenerate writes changes as batch operations, which SQLite runs by
    # copying the table and PostgreSQL runs as plain ALTER TABLE.
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
