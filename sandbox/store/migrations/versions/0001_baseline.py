"""The schema when migrations began: what ``metadata.create_all`` made at every start before them.

Every table and index is created only if it is missing.  On an empty database that is the whole schema; on a
database made before migrations (tables, no ``alembic_version``) it is what a start used to do, creating the
tables of releases newer than the database, and then ``sandbox.store.migrations.upgrade`` checks that the
result matches ``schema.py`` before it lets the stamp stand.

Generated with Alembic's autogenerate from ``schema.py`` and reviewed: the types are the generic SQLAlchemy ones,
so the same revision makes the schema on SQLite and on PostgreSQL (``outbox.seq``, an autoincrementing integer
key, is ``SERIAL`` there).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("token_hash"),
        sa.UniqueConstraint("id"),
        if_not_exists=True,
    )
    op.create_index("ix_api_tokens_user", "api_tokens", ["user_id"], if_not_exists=True)

    op.create_table(
        "bulk_export_files",
        sa.Column("layer_id", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("file_no", sa.Integer(), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("layer_id", "job_id", "file_no"),
        if_not_exists=True,
    )
    op.create_table(
        "bulk_export_jobs",
        sa.Column("layer_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("group_id", sa.String(length=64), nullable=True),
        sa.Column("patients", sa.Text(), nullable=True),
        sa.Column("types", sa.Text(), nullable=True),
        sa.Column("type_filters", sa.Text(), nullable=True),
        sa.Column("since", sa.String(length=32), nullable=True),
        sa.Column("output_format", sa.String(length=64), nullable=False),
        sa.Column("request_url", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("requires_token", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("transaction_time", sa.String(length=32), nullable=True),
        sa.Column("progress", sa.String(length=200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("finished_at", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("layer_id", "id"),
        if_not_exists=True,
    )
    op.create_index("ix_bulk_export_jobs_due", "bulk_export_jobs", ["status", "lease_until"], if_not_exists=True)

    op.create_table(
        "bulk_export_parts",
        sa.Column("layer_id", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("file_no", sa.Integer(), nullable=False),
        sa.Column("part_no", sa.Integer(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("layer_id", "job_id", "file_no", "part_no"),
        if_not_exists=True,
    )
    op.create_table(
        "cds_calls",
        sa.Column("layer_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("hook", sa.String(length=64), nullable=True),
        sa.Column("hook_instance", sa.String(length=64), nullable=True),
        sa.Column("registration_id", sa.String(length=64), nullable=True),
        sa.Column("service_id", sa.String(length=200), nullable=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("request", sa.Text(), nullable=True),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("cards", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("layer_id", "id"),
        if_not_exists=True,
    )
    op.create_index("ix_cds_calls_patient", "cds_calls", ["layer_id", "patient_id", "created_at"], if_not_exists=True)
    op.create_index("ix_cds_calls_time", "cds_calls", ["layer_id", "created_at"], if_not_exists=True)

    op.create_table(
        "cds_decisions",
        sa.Column("layer_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("card_key", sa.String(length=64), nullable=False),
        sa.Column("registration_id", sa.String(length=64), nullable=False),
        sa.Column("service_id", sa.String(length=200), nullable=False),
        sa.Column("hook", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("indicator", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("suggestions", sa.Text(), nullable=True),
        sa.Column("override_reason", sa.Text(), nullable=True),
        sa.Column("resources", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("feedback", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("layer_id", "id"),
        if_not_exists=True,
    )
    op.create_index("ix_cds_decisions_time", "cds_decisions", ["layer_id", "created_at"], if_not_exists=True)

    op.create_table(
        "cds_registrations",
        sa.Column("sandbox_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("discovery_url", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("refreshed_at", sa.String(length=32), nullable=True),
        sa.Column("services", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("sandbox_id", "id"),
        if_not_exists=True,
    )
    op.create_table(
        "cds_signing_keys",
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("kid", sa.String(length=100), nullable=False),
        sa.Column("private_jwk", sa.Text(), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("purpose"),
        if_not_exists=True,
    )
    op.create_table(
        "cohort_members",
        sa.Column("cohort_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("sandbox_id", sa.String(length=64), nullable=False),
        sa.Column("added_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("cohort_id", "user_id"),
        if_not_exists=True,
    )
    op.create_index("ix_cohort_members_sandbox", "cohort_members", ["sandbox_id"], if_not_exists=True)
    op.create_index("ix_cohort_members_user", "cohort_members", ["user_id", "sandbox_id"], if_not_exists=True)

    op.create_table(
        "cohort_packs",
        sa.Column("cohort_id", sa.String(length=64), nullable=False),
        sa.Column("pack_id", sa.String(length=64), nullable=False),
        sa.Column("assigned_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("cohort_id", "pack_id"),
        if_not_exists=True,
    )
    op.create_table(
        "cohorts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("trainer_id", sa.String(length=64), nullable=False),
        sa.Column("baseline_id", sa.String(length=64), nullable=True),
        sa.Column("sandbox_mode", sa.String(length=16), nullable=False),
        sa.Column("shared_sandbox_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        if_not_exists=True,
    )
    op.create_index("ix_cohorts_trainer", "cohorts", ["trainer_id"], if_not_exists=True)

    op.create_table(
        "fhir_requests",
        sa.Column("layer_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=48), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("layer_id", "id"),
        if_not_exists=True,
    )
    op.create_table(
        "hl7v2_control_ids",
        sa.Column("layer_id", sa.String(length=64), nullable=False),
        sa.Column("sender", sa.String(length=200), nullable=False),
        sa.Column("control_id", sa.String(length=200), nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("layer_id", "sender", "control_id"),
        if_not_exists=True,
    )
    op.create_table(
        "hl7v2_destinations",
        sa.Column("sandbox_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("message_types", sa.Text(), nullable=False),
        sa.Column("receiving_application", sa.String(length=200), nullable=False),
        sa.Column("receiving_facility", sa.String(length=200), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("sandbox_id", "id"),
        if_not_exists=True,
    )
    op.create_table(
        "hl7v2_messages",
        sa.Column("layer_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("message_type", sa.String(length=32), nullable=False),
        sa.Column("control_id", sa.String(length=200), nullable=False),
        sa.Column("peer", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("ack_code", sa.String(length=2), nullable=True),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("ack", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("resources", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.String(length=32), nullable=True),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("layer_id", "id"),
        if_not_exists=True,
    )
    op.create_index("ix_hl7v2_messages_control", "hl7v2_messages", ["layer_id", "control_id"], if_not_exists=True)
    op.create_index("ix_hl7v2_messages_due", "hl7v2_messages", ["status", "next_attempt_at"], if_not_exists=True)
    op.create_index("ix_hl7v2_messages_time", "hl7v2_messages", ["layer_id", "created_at"], if_not_exists=True)

    op.create_table(
        "layers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("baseline_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("last_activity", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        if_not_exists=True,
    )
    op.create_table(
        "outbox",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("layer_id", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("route", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("done_at", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("seq"),
        if_not_exists=True,
    )
    op.create_index("ix_outbox_pending", "outbox", ["done_at", "seq"], if_not_exists=True)

    op.create_table(
        "outbox_cursors",
        sa.Column("consumer", sa.String(length=64), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("consumer"),
        if_not_exists=True,
    )
    op.create_table(
        "resource_versions",
        sa.Column("layer_id", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.String(length=32), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("route", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("layer_id", "resource_type", "id", "version_id"),
        if_not_exists=True,
    )
    op.create_index(
        "ix_versions_type_updated",
        "resource_versions",
        ["layer_id", "resource_type", "last_updated"],
        if_not_exists=True,
    )
    op.create_index("ix_versions_updated", "resource_versions", ["layer_id", "last_updated"], if_not_exists=True)

    op.create_table(
        "resources",
        sa.Column("layer_id", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.String(length=32), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("layer_id", "resource_type", "id"),
        if_not_exists=True,
    )
    op.create_index("ix_resources_layer_updated", "resources", ["layer_id", "last_updated"], if_not_exists=True)
    op.create_index(
        "ix_resources_updated", "resources", ["layer_id", "resource_type", "last_updated"], if_not_exists=True
    )

    op.create_table(
        "smart_assertions",
        sa.Column("client_id", sa.String(length=200), nullable=False),
        sa.Column("jti", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "jti"),
        if_not_exists=True,
    )
    op.create_table(
        "smart_client_owners",
        sa.Column("client_id", sa.String(length=200), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("client_id"),
        if_not_exists=True,
    )
    op.create_index("ix_smart_client_owners_user_id", "smart_client_owners", ["user_id"], if_not_exists=True)

    op.create_table(
        "smart_clients",
        sa.Column("client_id", sa.String(length=200), nullable=False),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=True),
        sa.Column("redirect_uris", sa.Text(), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("jwks", sa.Text(), nullable=True),
        sa.Column("jwks_url", sa.Text(), nullable=True),
        sa.Column("auto_approve", sa.Boolean(), nullable=False),
        sa.Column("launch_url", sa.Text(), nullable=True),
        sa.Column("faults", sa.Text(), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("client_id"),
        if_not_exists=True,
    )
    op.create_table(
        "smart_codes",
        sa.Column("sandbox_id", sa.String(length=64), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=200), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("code_challenge", sa.String(length=128), nullable=False),
        sa.Column("grant", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.String(length=32), nullable=False),
        sa.Column("used", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("sandbox_id", "code_hash"),
        if_not_exists=True,
    )
    op.create_table(
        "smart_keys",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("private_jwk", sa.Text(), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("name"),
        if_not_exists=True,
    )
    op.create_table(
        "smart_launches",
        sa.Column("sandbox_id", sa.String(length=64), nullable=False),
        sa.Column("launch_hash", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=200), nullable=False),
        sa.Column("patient", sa.String(length=64), nullable=True),
        sa.Column("encounter", sa.String(length=64), nullable=True),
        sa.Column("fhir_user", sa.String(length=200), nullable=True),
        sa.Column("expires_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("sandbox_id", "launch_hash"),
        if_not_exists=True,
    )
    op.create_table(
        "smart_tokens",
        sa.Column("sandbox_id", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("grant_id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=200), nullable=False),
        sa.Column("grant", sa.Text(), nullable=False),
        sa.Column("issued_at", sa.String(length=32), nullable=False),
        sa.Column("expires_at", sa.String(length=32), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("sandbox_id", "token_hash"),
        if_not_exists=True,
    )
    op.create_index("ix_smart_tokens_grant", "smart_tokens", ["sandbox_id", "grant_id"], if_not_exists=True)

    op.create_table(
        "sp_date",
        sa.Column("layer_id", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("grp", sa.Integer(), nullable=False),
        sa.Column("low", sa.String(length=32), nullable=False),
        sa.Column("high", sa.String(length=32), nullable=False),
        if_not_exists=True,
    )
    op.create_index("ix_sp_date_resource", "sp_date", ["layer_id", "resource_type", "resource_id"], if_not_exists=True)
    op.create_index(
        "ix_sp_date_value",
        "sp_date",
        ["layer_id", "resource_type", "param", "low", "high", "resource_id"],
        if_not_exists=True,
    )

    op.create_table(
        "sp_number",
        sa.Column("layer_id", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("grp", sa.Integer(), nullable=False),
        sa.Column("low", sa.Float(), nullable=False),
        sa.Column("high", sa.Float(), nullable=False),
        if_not_exists=True,
    )
    op.create_index(
        "ix_sp_number_resource", "sp_number", ["layer_id", "resource_type", "resource_id"], if_not_exists=True
    )
    op.create_index(
        "ix_sp_number_value",
        "sp_number",
        ["layer_id", "resource_type", "param", "low", "high", "resource_id"],
        if_not_exists=True,
    )

    op.create_table(
        "sp_quantity",
        sa.Column("layer_id", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("grp", sa.Integer(), nullable=False),
        sa.Column("system", sa.Text(), nullable=True),
        sa.Column("code", sa.Text(), nullable=True),
        sa.Column("low", sa.Float(), nullable=False),
        sa.Column("high", sa.Float(), nullable=False),
        if_not_exists=True,
    )
    op.create_index(
        "ix_sp_quantity_resource", "sp_quantity", ["layer_id", "resource_type", "resource_id"], if_not_exists=True
    )
    op.create_index(
        "ix_sp_quantity_value",
        "sp_quantity",
        ["layer_id", "resource_type", "param", "code", "low", "resource_id"],
        if_not_exists=True,
    )

    op.create_table(
        "sp_reference",
        sa.Column("layer_id", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("grp", sa.Integer(), nullable=False),
        sa.Column("target_type", sa.String(length=64), nullable=True),
        sa.Column("target_id", sa.String(length=64), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("ident_system", sa.Text(), nullable=True),
        sa.Column("ident_value", sa.Text(), nullable=True),
        if_not_exists=True,
    )
    op.create_index(
        "ix_sp_reference_resource", "sp_reference", ["layer_id", "resource_type", "resource_id"], if_not_exists=True
    )
    op.create_index(
        "ix_sp_reference_value",
        "sp_reference",
        ["layer_id", "resource_type", "param", "target_id", "target_type", "resource_id"],
        if_not_exists=True,
    )

    op.create_table(
        "sp_string",
        sa.Column("layer_id", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("grp", sa.Integer(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("exact", sa.Text(), nullable=False),
        if_not_exists=True,
    )
    op.create_index(
        "ix_sp_string_resource", "sp_string", ["layer_id", "resource_type", "resource_id"], if_not_exists=True
    )
    op.create_index(
        "ix_sp_string_value",
        "sp_string",
        ["layer_id", "resource_type", "param", "value", "resource_id"],
        if_not_exists=True,
    )

    op.create_table(
        "sp_token",
        sa.Column("layer_id", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("grp", sa.Integer(), nullable=False),
        sa.Column("system", sa.Text(), nullable=True),
        sa.Column("code", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        if_not_exists=True,
    )
    op.create_index(
        "ix_sp_token_resource", "sp_token", ["layer_id", "resource_type", "resource_id"], if_not_exists=True
    )
    op.create_index(
        "ix_sp_token_value",
        "sp_token",
        ["layer_id", "resource_type", "param", "code", "system", "resource_id"],
        if_not_exists=True,
    )

    op.create_table(
        "sp_uri",
        sa.Column("layer_id", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("grp", sa.Integer(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        if_not_exists=True,
    )
    op.create_index("ix_sp_uri_resource", "sp_uri", ["layer_id", "resource_type", "resource_id"], if_not_exists=True)
    op.create_index(
        "ix_sp_uri_value", "sp_uri", ["layer_id", "resource_type", "param", "value", "resource_id"], if_not_exists=True
    )

    op.create_table(
        "subscription_notifications",
        sa.Column("layer_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("subscription_id", sa.String(length=64), nullable=False),
        sa.Column("event_seq", sa.Integer(), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.String(length=32), nullable=True),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.String(length=32), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("delivered_at", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("layer_id", "id"),
        if_not_exists=True,
    )
    op.create_index(
        "ix_subscription_notifications_due",
        "subscription_notifications",
        ["status", "next_attempt_at"],
        if_not_exists=True,
    )
    op.create_index(
        "ix_subscription_notifications_sub",
        "subscription_notifications",
        ["layer_id", "subscription_id", "created_at"],
        if_not_exists=True,
    )

    op.create_table(
        "task_attempts",
        sa.Column("sandbox_id", sa.String(length=64), nullable=False),
        sa.Column("trainee_id", sa.String(length=64), nullable=False),
        sa.Column("pack_id", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("cohort_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.String(length=32), nullable=False),
        sa.Column("ended_at", sa.String(length=32), nullable=True),
        sa.Column("context", sa.Text(), nullable=False),
        sa.Column("hints_used", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("max_score", sa.Float(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("results", sa.Text(), nullable=True),
        sa.Column("checked_at", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("sandbox_id", "trainee_id", "pack_id", "task_id", "attempt"),
        if_not_exists=True,
    )
    op.create_index("ix_task_attempts_active", "task_attempts", ["sandbox_id", "status"], if_not_exists=True)
    op.create_index("ix_task_attempts_cohort", "task_attempts", ["cohort_id", "trainee_id"], if_not_exists=True)

    op.create_table(
        "task_feedback",
        sa.Column("sandbox_id", sa.String(length=64), nullable=False),
        sa.Column("trainee_id", sa.String(length=64), nullable=False),
        sa.Column("pack_id", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("sandbox_id", "trainee_id", "pack_id", "task_id", "attempt"),
        if_not_exists=True,
    )
    op.create_index("ix_task_feedback_pack", "task_feedback", ["pack_id", "task_id"], if_not_exists=True)

    op.create_table(
        "users",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email"),
        if_not_exists=True,
    )
    op.create_table(
        "web_sessions",
        sa.Column("session_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("last_seen", sa.String(length=32), nullable=False),
        sa.Column("expires_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("session_hash"),
        if_not_exists=True,
    )
    op.create_index("ix_web_sessions_expires", "web_sessions", ["expires_at"], if_not_exists=True)
    op.create_index("ix_web_sessions_user", "web_sessions", ["user_id"], if_not_exists=True)
