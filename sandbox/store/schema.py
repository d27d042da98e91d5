"""The tables.

Every table leads its key with ``layer_id``: a layer is either a sandbox's own
overlay of writes or an immutable baseline.  A sandbox sees its overlay first,
then its baseline minus what the overlay replaced or deleted (see ``layers.py``).
That keeps sandboxes apart in every query and is the distribution column should
one PostgreSQL ever not be enough.

Dates in index tables are fixed-width UTC strings (``YYYY-MM-DDTHH:MM:SS.ffffff``)
so that string order is time order on both SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

layers = Table(
    "layers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),  # "sandbox" or "baseline"
    Column("name", String(200), nullable=False),
    Column("baseline_id", String(64), nullable=True),  # a sandbox's baseline layer
    Column("created_at", String(32), nullable=False),
    # Stamped by a reset; ``sandboxes.get_layer`` reports the later of it and the layer's latest version.
    Column("last_activity", String(32), nullable=True),
)

# The current version of every resource in a layer, including deletion tombstones.
resources = Table(
    "resources",
    metadata,
    Column("layer_id", String(64), primary_key=True),
    Column("resource_type", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", String(32), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("content", LargeBinary, nullable=True),
    Index("ix_resources_updated", "layer_id", "resource_type", "last_updated"),
    Index("ix_resources_layer_updated", "layer_id", "last_updated"),
)

# Every version ever written, with who wrote it and through which route.
resource_versions = Table(
    "resource_versions",
    metadata,
    Column("layer_id", String(64), primary_key=True),
    Column("resource_type", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("version_id", Integer, primary_key=True),
    Column("last_updated", String(32), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("method", String(8), nullable=False),  # POST, PUT, PATCH, DELETE
    Column("content", LargeBinary, nullable=True),
    Column("actor", String(200), nullable=False),
    Column("route", String(32), nullable=False),  # fhir-api, web-ui, hl7v2, loader, ...
    Index("ix_versions_type_updated", "layer_id", "resource_type", "last_updated"),
    Index("ix_versions_updated", "layer_id", "last_updated"),
)

# Events for consumers after commit (task re-check, HL7 v2 outbound, subscriptions).
outbox = Table(
    "outbox",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("layer_id", String(64), nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("action", String(8), nullable=False),  # create, update, delete
    Column("actor", String(200), nullable=False),
    Column("route", String(32), nullable=False),
    Column("created_at", String(32), nullable=False),
    # Unused since migration 0005 (the HL7 v2 translator follows a cursor now, as every consumer does); kept so that
    # processes of the release before can still run beside an upgraded database until they are replaced.
    Column("claimed_by", String(64), nullable=True),
    Column("done_at", String(32), nullable=True),
)


def _index_table(name: str, *value_columns: Column, value_index: tuple[str, ...]) -> Table:
    """One search index table: which resource, which parameter, the value columns.

    ``grp`` ties together the components of one composite parameter value.
    Two indexes: value-first for search, resource-first for reindexing and joins.
    The value-first index is ``layer_id, resource_type`` and then ``value_index``, which
    holds ``param`` and ends with ``resource_id`` or with ``resource_id, param``: then
    ``id IN (SELECT resource_id ...)`` reads the index alone: on 100k resources that took
    a patient-scoped search on SQLite from about 170 ms to about 20 ms (no table lookup
    per matching row).
    """
    return Table(
        name,
        metadata,
        Column("layer_id", String(64), nullable=False),
        Column("resource_type", String(64), nullable=False),
        Column("resource_id", String(64), nullable=False),
        Column("param", String(100), nullable=False),
        Column("grp", Integer, nullable=False, default=0),
        *value_columns,
        Index(f"ix_{name}_value", "layer_id", "resource_type", *value_index),
        Index(f"ix_{name}_resource", "layer_id", "resource_type", "resource_id"),
    )


# The token and quantity indexes put the value before the parameter, and the parameter last: one Observation
# gives the same coding under code, combo-code and the code components of two composites, and the same
# quantity under four parameters, and so these rows of one resource sit side by side in one leaf page rather
# than in four places of the index.  A Bundle of an Encounter and nine Observations dirtied 242 pages of
# SQLite's WAL on a 100k-resource store, 169 this way (its CPU: see revision 0004).  A search names the
# parameter and, but for a token by system alone (``code=http://loinc.org|``), ``:text`` or a quantity without
# a unit, the value, so it still seeks straight to its rows; the parameter is checked in the index.  The token
# index has the resource before the system, so that a probe by code alone (``category=vital-signs`` under a
# patient) is one seek too.


sp_string = _index_table(
    "sp_string",
    Column("value", Text, nullable=False),  # normalized: case and accents folded
    Column("exact", Text, nullable=False),
    value_index=("param", "value", "resource_id"),
)
sp_token = _index_table(
    "sp_token",
    Column("system", Text, nullable=True),
    Column("code", Text, nullable=True),
    Column("text", Text, nullable=True),  # normalized display / CodeableConcept.text, for :text
    value_index=("code", "resource_id", "system", "param"),
)
sp_reference = _index_table(
    "sp_reference",
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("url", Text, nullable=True),  # absolute or canonical references, as written
    Column("ident_system", Text, nullable=True),  # Reference.identifier, for :identifier
    Column("ident_value", Text, nullable=True),
    value_index=("param", "target_id", "target_type", "resource_id"),
)
sp_date = _index_table(
    "sp_date",
    Column("low", String(32), nullable=False),
    Column("high", String(32), nullable=False),
    value_index=("param", "low", "high", "resource_id"),
)
sp_number = _index_table(
    "sp_number",
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    value_index=("param", "low", "high", "resource_id"),
)
sp_quantity = _index_table(
    "sp_quantity",
    Column("system", Text, nullable=True),
    Column("code", Text, nullable=True),
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    value_index=("code", "low", "resource_id", "param"),
)
sp_uri = _index_table(
    "sp_uri",
    Column("value", Text, nullable=False),
    value_index=("param", "value", "resource_id"),
)

# A patient's resources with a given code, as one row each: ``Observation?patient=X&code=Y`` (what a chart and
# every SMART app ask first) seeks straight to them.  Matched as two clauses, the patient's rows drove and the
# code was probed once for each of the patient's resources, so the search slowed as the chart grew (80 probes
# for 12 matches on the benchmark's charts; on PostgreSQL 0.48 of its 0.83 ms).  Rows are the cross product of
# a resource's ``patient`` references and its ``code`` codings (``indexer.COMBOS``), like HAPI's combo search
# parameters; ``search_sql`` uses them when a search has one plain value of each.
sp_combo = _index_table(
    "sp_combo",
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=False),
    Column("system", Text, nullable=True),
    Column("code", Text, nullable=False),
    value_index=("target_id", "code", "resource_id", "system", "target_type", "param"),
)

INDEX_TABLES: dict[str, Table] = {
    "string": sp_string,
    "token": sp_token,
    "reference": sp_reference,
    "date": sp_date,
    "number": sp_number,
    "quantity": sp_quantity,
    "uri": sp_uri,
    "combo": sp_combo,
}

# ---- accounts: global tables (not per layer), for people, their tokens and their cohorts ----------

users = Table(
    "users",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("email", String(320), nullable=False, unique=True),  # stored lower-cased
    Column("role", String(16), nullable=False),  # admin, trainer, trainee, vendor
    Column("password_hash", Text, nullable=True),  # argon2id; None: cannot sign in with a password
    Column("created_at", String(32), nullable=False),
)

# Only a hash of each token is kept: a leaked database does not leak working tokens.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # sha256 hex of the token
    Column("id", String(64), nullable=False, unique=True),  # public handle, to list and revoke
    Column("user_id", String(64), nullable=False),
    Column("label", String(200), nullable=False),
    Column("created_at", String(32), nullable=False),
    Index("ix_api_tokens_user", "user_id"),
)

cohorts = Table(
    "cohorts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("trainer_id", String(64), nullable=False),
    Column("baseline_id", String(64), nullable=True),
    Column("sandbox_mode", String(16), nullable=False),  # "private" (one per trainee) or "shared"
    Column("shared_sandbox_id", String(64), nullable=True),
    Column("created_at", String(32), nullable=False),
    Index("ix_cohorts_trainer", "trainer_id"),
)

# A roster line: who, and which sandbox they work in (their own, or the cohort's shared one).
cohort_members = Table(
    "cohort_members",
    metadata,
    Column("cohort_id", String(64), primary_key=True),
    Column("user_id", String(64), primary_key=True),
    Column("sandbox_id", String(64), nullable=False),
    Column("added_at", String(32), nullable=False),
    Index("ix_cohort_members_user", "user_id", "sandbox_id"),
    Index("ix_cohort_members_sandbox", "sandbox_id"),
)

# Web UI sign-in sessions (``accounts/sessions.py``).  Keyed by a hash of the cookie's secret, like API tokens:
# a leaked database holds no working session.  Times are index-form UTC strings, so string order is time order.
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("session_hash", String(64), primary_key=True),  # sha256 hex of the cookie's secret
    Column("user_id", String(64), nullable=False),
    Column("csrf_token", String(64), nullable=False),  # sent back in every form of this session
    Column("created_at", String(32), nullable=False),
    Column("last_seen", String(32), nullable=False),  # idle expiry counts from here
    Column("expires_at", String(32), nullable=False),  # absolute expiry, whatever the activity
    Index("ix_web_sessions_user", "user_id"),
    Index("ix_web_sessions_expires", "expires_at"),
)

# ---- HL7 v2: the message log, duplicate control ids, outbound destinations ---------------------------

# Every inbound and outbound message of a sandbox, with what was answered or received back.  Outbound rows
# are also the delivery queue: ``pending`` rows are claimed by a worker (``claimed_by`` until ``lease_until``),
# sent, and retried with backoff until an ACK comes back.
hl7v2_messages = Table(
    "hl7v2_messages",
    metadata,
    Column("layer_id", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("direction", String(8), nullable=False),  # "inbound" or "outbound"
    Column("created_at", String(32), nullable=False),
    Column("message_type", String(32), nullable=False),  # ADT^A04
    Column("control_id", String(200), nullable=False),  # MSH-10
    Column("peer", String(200), nullable=False),  # inbound: MSH-3^MSH-4; outbound: the destination id
    # inbound: accepted, error, rejected, duplicate; outbound: pending, delivered, error (AE/AR), failed, skipped
    Column("status", String(16), nullable=False),
    Column("ack_code", String(2), nullable=True),  # AA/AE/AR/CA/CE/CR answered (inbound) or received (outbound)
    Column("content", Text, nullable=False),
    Column("ack", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("resources", Text, nullable=True),  # JSON list: created/updated ("Patient/1/_history/2") or source
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", String(32), nullable=True),
    Column("claimed_by", String(64), nullable=True),
    Column("lease_until", String(32), nullable=True),
    Index("ix_hl7v2_messages_time", "layer_id", "created_at"),
    Index("ix_hl7v2_messages_control", "layer_id", "control_id"),
    Index("ix_hl7v2_messages_due", "status", "next_attempt_at"),
)

# Control ids (MSH-10) of messages already applied, per sandbox and sender: a resend is acknowledged, not re-applied.
hl7v2_control_ids = Table(
    "hl7v2_control_ids",
    metadata,
    Column("layer_id", String(64), primary_key=True),
    Column("sender", String(200), primary_key=True),
    Column("control_id", String(200), primary_key=True),
    Column("message_id", String(64), nullable=False),
)

# Where a sandbox's outbound messages go.  Keyed by ``sandbox_id``, not ``layer_id``: a vendor's interface
# configuration survives a reset of the sandbox's data.
hl7v2_destinations = Table(
    "hl7v2_destinations",
    metadata,
    Column("sandbox_id", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("port", Integer, nullable=False),
    Column("message_types", Text, nullable=False),  # comma-separated: ORM^O01,REF^I12,ADT^A08,ORU^R01
    Column("receiving_application", String(200), nullable=False),
    Column("receiving_facility", String(200), nullable=False),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created_at", String(32), nullable=False),
)

# ---- CDS Hooks: registered services, the signing key, the hook-call log and what users did with cards ---------

# A CDS service registration: one discovery URL and the services it listed.  Keyed by ``sandbox_id``, not
# ``layer_id``, as HL7 v2 destinations are: a vendor's registration survives a reset of the sandbox's data.
# The built-in demo services need no row; a row with ``enabled`` false hides them from one sandbox.
cds_registrations = Table(
    "cds_registrations",
    metadata,
    Column("sandbox_id", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("discovery_url", Text, nullable=False),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created_at", String(32), nullable=False),
    Column("refreshed_at", String(32), nullable=True),
    Column("services", Text, nullable=False),  # JSON: the discovery response's services, as validated
)

# The key that signs our calls to CDS services (ES384), one row per purpose; global, like users.
cds_signing_keys = Table(
    "cds_signing_keys",
    metadata,
    Column("purpose", String(32), primary_key=True),
    Column("kid", String(100), nullable=False),
    Column("private_jwk", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
)

# Every exchange with a CDS service made for a sandbox: discovery, a hook call, feedback.  Keyed by layer like
# the HL7 v2 message log: a reset of the sandbox clears its history with its data.
cds_calls = Table(
    "cds_calls",
    metadata,
    Column("layer_id", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),  # discovery, hook, feedback
    Column("hook", String(64), nullable=True),
    Column("hook_instance", String(64), nullable=True),
    Column("registration_id", String(64), nullable=True),
    Column("service_id", String(200), nullable=True),
    Column("url", Text, nullable=False),
    Column("actor", String(200), nullable=True),  # the user on whose behalf: "user:<id>"
    Column("patient_id", String(64), nullable=True),
    Column("created_at", String(32), nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("status", String(16), nullable=False),  # ok, http-error, timeout, unreachable, invalid
    Column("http_status", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("request", Text, nullable=True),  # JSON as sent (the FHIR access token masked)
    Column("response", Text, nullable=True),  # the body as received (cut at 256 KiB)
    Column("cards", Text, nullable=True),  # JSON: the valid cards, each with our own ``key``
    Index("ix_cds_calls_time", "layer_id", "created_at"),
    Index("ix_cds_calls_patient", "layer_id", "patient_id", "created_at"),
)

# What a user did with a card: accepted suggestions (and the resources written) or overrode it, with a reason.
cds_decisions = Table(
    "cds_decisions",
    metadata,
    Column("layer_id", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("call_id", String(64), nullable=False),
    Column("card_key", String(64), nullable=False),
    Column("registration_id", String(64), nullable=False),
    Column("service_id", String(200), nullable=False),
    Column("hook", String(64), nullable=False),
    Column("patient_id", String(64), nullable=True),
    Column("indicator", String(16), nullable=False),
    Column("outcome", String(16), nullable=False),  # accepted, overridden
    Column("suggestions", Text, nullable=True),  # JSON: the accepted suggestions' uuids (or indexes)
    Column("override_reason", Text, nullable=True),  # JSON: {"reason": Coding?, "userComment"?}
    Column("resources", Text, nullable=True),  # JSON: what the accepted actions wrote ("Type/id/_history/n")
    Column("actor", String(200), nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("feedback", String(16), nullable=True),  # sent, failed, not-sent (no card uuid)
    Index("ix_cds_decisions_time", "layer_id", "created_at"),
)

# ---- outbox consumers: how far each has read -----------------------------------------------------------

# One row per consumer that follows the outbox by position rather than by marking rows done (the HL7 v2
# translator marks rows done; a second consumer cannot share that mark).  See ``store/outbox.py``.
outbox_cursors = Table(
    "outbox_cursors",
    metadata,
    Column("consumer", String(64), primary_key=True),
    Column("last_seq", Integer, nullable=False),
    Column("updated_at", String(32), nullable=False),
)

# ---- tasks: attempts and their results ------------------------------------------------------------------

# One row per attempt of a trainee at a task in a sandbox.  Keyed by ``sandbox_id``, not ``layer_id``:
# a sandbox reset (a retry) must not erase the record of earlier attempts.
task_attempts = Table(
    "task_attempts",
    metadata,
    Column("sandbox_id", String(64), primary_key=True),
    Column("trainee_id", String(64), primary_key=True),
    Column("pack_id", String(64), primary_key=True),
    Column("task_id", String(64), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("cohort_id", String(64), nullable=True),
    Column("status", String(16), nullable=False),  # active, submitted, abandoned (replaced by a retry)
    Column("started_at", String(32), nullable=False),  # index form, UTC
    Column("ended_at", String(32), nullable=True),
    Column("context", Text, nullable=False),  # JSON: the placeholders fixed at start (patient, encounter)
    Column("hints_used", Integer, nullable=False, default=0),
    Column("score", Float, nullable=False, default=0.0),
    Column("max_score", Float, nullable=False, default=0.0),
    Column("passed", Boolean, nullable=False, default=False),
    Column("results", Text, nullable=True),  # JSON: one entry per check (status, points, message, feedback)
    Column("checked_at", String(32), nullable=True),
    Index("ix_task_attempts_cohort", "cohort_id", "trainee_id"),
    Index("ix_task_attempts_active", "sandbox_id", "status"),
)

# ---- cohorts: the task packs assigned to each ----------------------------------------------------------

# Which packs a cohort works through: the progress matrix's columns and the certificates.  Pack ids refer to
# the server's task library (``tasks/library.py``); a pack removed from the library later just stops showing.
cohort_packs = Table(
    "cohort_packs",
    metadata,
    Column("cohort_id", String(64), primary_key=True),
    Column("pack_id", String(64), primary_key=True),
    Column("assigned_at", String(32), nullable=False),
)

# ---- the FHIR request log (``sandbox/fhir/request_log.py``) ---------------------------------------------

# The latest FHIR calls made against each sandbox, for its vendor: written in batches after the responses,
# capped per sandbox.  Keyed by layer like the sandbox's data, so a reset or a delete clears it too.
# ``id`` is the recording time (index form) and a random suffix: string order is time order.
fhir_requests = Table(
    "fhir_requests",
    metadata,
    Column("layer_id", String(64), primary_key=True),
    Column("id", String(48), primary_key=True),
    Column("method", String(8), nullable=False),
    Column("url", Text, nullable=False),  # path and query as the client sent them
    Column("status", Integer, nullable=False),
    Column("duration_ms", Float, nullable=False),
)

# ---- SMART App Launch: clients, launches, codes, tokens, the signing key (``sandbox/auth/``) ----------------

# Launches, codes and tokens are keyed by ``sandbox_id``, not ``layer_id``: a reset of the sandbox's data keeps
# them (an app's session outlives a reset), a delete of the sandbox takes them (``store/sandboxes.py``).  Once past
# ``expires_at`` they, and used assertions, are deleted by the sweep (``auth/sweep.py``), whence the indexes.

# A registered app.  Global, not per sandbox: one registration launches in any sandbox the launch names.
smart_clients = Table(
    "smart_clients",
    metadata,
    Column("client_id", String(200), primary_key=True),
    Column("public", Boolean, nullable=False),
    Column("secret_hash", String(64), nullable=True),  # sha256 hex of a confidential client's client_secret
    Column("redirect_uris", Text, nullable=False),  # JSON list
    Column("scopes", Text, nullable=False),  # space-separated: the most the client may be granted
    Column("jwks", Text, nullable=True),  # JSON Web Key Set by value (private_key_jwt)
    Column("jwks_url", Text, nullable=True),  # or where to fetch it
    Column("auto_approve", Boolean, nullable=False, default=False),
    Column("launch_url", Text, nullable=True),  # where an EHR launch sends the browser (with launch and iss)
    Column("faults", Text, nullable=False, default="[]"),  # JSON list of injected faults (docs/smart.md)
    Column("created_at", String(32), nullable=False),
)

# Who registered a client through the vendor console (a table of its own, so databases made before it only gain
# a table): a vendor sees and changes only the clients it owns; clients registered with the admin token have none.
smart_client_owners = Table(
    "smart_client_owners",
    metadata,
    Column("client_id", String(200), primary_key=True),
    Column("user_id", String(64), nullable=False, index=True),
)

# An EHR launch: the context a "Launch app" button hands to the app as an opaque ``launch`` value.
smart_launches = Table(
    "smart_launches",
    metadata,
    Column("sandbox_id", String(64), primary_key=True),
    Column("launch_hash", String(64), primary_key=True),  # sha256 hex of the launch value
    Column("client_id", String(200), nullable=False),
    Column("patient", String(64), nullable=True),
    Column("encounter", String(64), nullable=True),
    Column("fhir_user", String(200), nullable=True),  # Practitioner/123
    Column("expires_at", String(32), nullable=False),
    # A CDS card's SMART link's appContext, for the token response.  Last: revision 0003 added it to the table.
    Column("app_context", Text, nullable=True),
    Index("ix_smart_launches_expires", "expires_at"),  # the sweep (``auth/sweep.py``)
)

# Authorization codes: one use each, minutes long.
smart_codes = Table(
    "smart_codes",
    metadata,
    Column("sandbox_id", String(64), primary_key=True),
    Column("code_hash", String(64), primary_key=True),
    Column("client_id", String(200), nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("code_challenge", String(128), nullable=False),
    Column("grant", Text, nullable=False),  # JSON: scopes and launch context, copied to the tokens
    Column("expires_at", String(32), nullable=False),
    Column("used", Boolean, nullable=False, default=False),
    Index("ix_smart_codes_expires", "expires_at"),
)

# Access and refresh tokens.  Only hashes: a leaked database holds no working token.  Tokens of one
# authorization share ``grant_id``, so revoking a refresh token ends the access tokens it produced.
smart_tokens = Table(
    "smart_tokens",
    metadata,
    Column("sandbox_id", String(64), primary_key=True),
    Column("token_hash", String(64), primary_key=True),
    Column("kind", String(8), nullable=False),  # access, refresh
    Column("grant_id", String(64), nullable=False),
    Column("client_id", String(200), nullable=False),
    Column("grant", Text, nullable=False),  # JSON: scopes and launch context
    Column("issued_at", String(32), nullable=False),
    Column("expires_at", String(32), nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
    Index("ix_smart_tokens_grant", "sandbox_id", "grant_id"),
    Index("ix_smart_tokens_expires", "expires_at"),
)

# ``jti`` of client assertions already used (private_key_jwt), kept until they expire: no replays.
smart_assertions = Table(
    "smart_assertions",
    metadata,
    Column("client_id", String(200), primary_key=True),
    Column("jti", String(200), primary_key=True),
    Column("expires_at", String(32), nullable=False),
    Index("ix_smart_assertions_expires", "expires_at"),
)

# The server's signing keys (id_token): created once by whichever worker starts first, shared by all.
smart_keys = Table(
    "smart_keys",
    metadata,
    Column("name", String(32), primary_key=True),  # "signing"
    Column("kid", String(64), nullable=False),
    Column("private_jwk", Text, nullable=False),  # JSON; a sandbox's key, not a production secret store
    Column("created_at", String(32), nullable=False),
)


# A trainee's answer to the one question asked after a task (web/chart): one per attempt, replaced if answered
# again.  Trainers read these next to the attempts (``tasks/feedback.py``).
task_feedback = Table(
    "task_feedback",
    metadata,
    Column("sandbox_id", String(64), primary_key=True),
    Column("trainee_id", String(64), primary_key=True),
    Column("pack_id", String(64), primary_key=True),
    Column("task_id", String(64), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("rating", Integer, nullable=False),  # 1 (not useful) .. 5 (very useful)
    Column("comment", Text, nullable=True),
    Column("created_at", String(32), nullable=False),
    Index("ix_task_feedback_pack", "pack_id", "task_id"),
)


# ---- bulk data export: jobs and their NDJSON output ------------------------------------------------------

# One row per $export kick-off.  ``layer_id`` is the sandbox the export reads (its overlay layer's id), so a
# reset or a deleted sandbox takes its exports with it.  Any worker answers status and serves files: the job's
# state and its output live here, not in a worker's memory or disk.  Jobs are claimed with a lease like
# outbound HL7 v2 messages, so a worker that dies mid-export lets another start the job again.
bulk_export_jobs = Table(
    "bulk_export_jobs",
    metadata,
    Column("layer_id", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("level", String(16), nullable=False),  # system, patient, group
    Column("group_id", String(64), nullable=True),
    Column("patients", Text, nullable=True),  # JSON list of Patient ids from the `patient` parameter
    Column("types", Text, nullable=True),  # comma-separated _type, None: every type
    Column("type_filters", Text, nullable=True),  # JSON list of _typeFilter searches (Type?query)
    Column("since", String(32), nullable=True),  # index form
    Column("output_format", String(64), nullable=False),
    Column("request_url", Text, nullable=False),
    Column("actor", String(200), nullable=False),  # who kicked off: status and files answer them only
    Column("requires_token", Boolean, nullable=False),
    Column("status", String(16), nullable=False),  # queued, running, completed, failed
    Column("transaction_time", String(32), nullable=True),  # index form, set when the run starts
    Column("progress", String(200), nullable=True),
    Column("error", Text, nullable=True),  # why a failed job failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("claimed_by", String(64), nullable=True),
    Column("lease_until", String(32), nullable=True),
    Column("created_at", String(32), nullable=False),
    Column("finished_at", String(32), nullable=True),
    Index("ix_bulk_export_jobs_due", "status", "lease_until"),
)

# The output files of an export: one per resource type (``OperationOutcome`` files are the manifest's errors).
bulk_export_files = Table(
    "bulk_export_files",
    metadata,
    Column("layer_id", String(64), primary_key=True),
    Column("job_id", String(64), primary_key=True),
    Column("file_no", Integer, primary_key=True),
    Column("resource_type", String(64), nullable=False),
    Column("count", Integer, nullable=False),
)

# A file's content in parts of a few hundred lines: written as the export goes, streamed in order when served,
# so neither side holds a whole file in memory.
bulk_export_parts = Table(
    "bulk_export_parts",
    metadata,
    Column("layer_id", String(64), primary_key=True),
    Column("job_id", String(64), primary_key=True),
    Column("file_no", Integer, primary_key=True),
    Column("part_no", Integer, primary_key=True),
    Column("content", LargeBinary, nullable=False),
)

# ---- subscriptions: notifications queued for rest-hook channels -------------------------------------------

# One row per (subscription, matching write): queued by the outbox consumer in the same transaction that moves
# its cursor, then sent with a lease and retried with backoff, like outbound HL7 v2 messages.  Keyed by the
# sandbox's layer, so a reset drops the queue along with the Subscription resources it served.
subscription_notifications = Table(
    "subscription_notifications",
    metadata,
    Column("layer_id", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("subscription_id", String(64), nullable=False),
    Column("event_seq", Integer, nullable=False),  # the outbox event that matched
    Column("resource_type", String(64), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # pending, delivered, failed, skipped
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", String(32), nullable=True),
    Column("claimed_by", String(64), nullable=True),
    Column("lease_until", String(32), nullable=True),
    Column("http_status", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("created_at", String(32), nullable=False),
    Column("delivered_at", String(32), nullable=True),
    Index("ix_subscription_notifications_due", "status", "next_attempt_at"),
    Index("ix_subscription_notifications_sub", "layer_id", "subscription_id", "created_at"),
)
