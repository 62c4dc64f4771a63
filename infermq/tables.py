"""Every PostgreSQL table, defined once (SQLAlchemy Core). Alembic's migrations create them.

Tables carry no schema name: the connection's ``search_path`` picks the schema, which is how
tests isolate themselves.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("idempotency_key", String(200), unique=True, nullable=True),
    Column("tenant", String(64), nullable=True),
    Column("task_type", String(32), nullable=False),
    Column("model", String(64), nullable=True),
    Column("priority", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    # Deliveries that entered the engine alone, as a suspect (workers/isolation.py).
    Column("solo_runs", Integer, nullable=False, server_default="0"),
    Column("input", JSONB, nullable=False),
    Column("params", JSONB, nullable=False),
    Column("timeout_s", Float, nullable=False),
    Column("session_id", String(64), nullable=True),
    Column("session_seq", Integer, nullable=True),
    Column("webhook_url", Text, nullable=True),
    Column("route_reason", Text, nullable=True),
    Column("result", JSONB, nullable=True),
    Column("error", Text, nullable=True),
    Column("cache", String(16), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Index("ix_jobs_created_at", "created_at"),
    Index("ix_jobs_session", "session_id", "session_seq"),
)

job_transitions = Table(
    "job_transitions",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("job_id", String(36), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("detail", Text, nullable=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_job_transitions_job", "job_id"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=True),
    Column("state", String(16), nullable=False),
    Column("version", Integer, nullable=False, server_default="0"),
    Column("model_history", JSONB, nullable=False, server_default="[]"),
    Column("context_zlib", LargeBinary, nullable=True),
    Column("turns", Integer, nullable=False, server_default="0"),
    Column("next_seq", Integer, nullable=False, server_default="0"),
    Column("done_seq", Integer, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_active_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_sessions_state_active", "state", "last_active_at"),
)

webhook_outbox = Table(
    "webhook_outbox",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("job_id", String(36), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("url", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    Index("ix_webhook_outbox_job", "job_id"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("key_hash", String(128), unique=True, nullable=False),
    Column("tenant", String(64), nullable=False),
    Column("priority_ceiling", Integer, nullable=False, server_default="9"),
    Column("rate_per_minute", Integer, nullable=False, server_default="600"),
    Column("webhook_secret", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

# The live cache audit (issue 13): counts per namespace, task type and model, and the switch
# that turns a task type's semantic tier off fleet-wide (every worker reads it per look-up).
cache_audit_counts = Table(
    "cache_audit_counts",
    metadata,
    Column("namespace", String(64), primary_key=True),
    Column("task_type", String(32), primary_key=True),
    Column("model", String(128), primary_key=True),
    Column("agreed", BigInteger, nullable=False, server_default="0"),
    Column("disagreed", BigInteger, nullable=False, server_default="0"),
    Column("starved", BigInteger, nullable=False, server_default="0"),
    Column("failed", BigInteger, nullable=False, server_default="0"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

cache_tier_switches = Table(
    "cache_tier_switches",
    metadata,
    Column("namespace", String(64), primary_key=True),
    Column("task_type", String(32), primary_key=True),
    Column("semantic_enabled", Boolean, nullable=False),
    Column("reason", Text, nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
