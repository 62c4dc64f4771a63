"""cache audit counts and the semantic tier switch

Revision ID: 0002_i13_cache_audit
Revises: 0001
Create Date: 2026-12-02 13:55:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_i13_cache_audit"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cache_audit_counts",
        sa.Column("namespace", sa.String(length=64), nullable=False),
        sa.Column("task_type", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("agreed", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("disagreed", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("starved", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("failed", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.PrimaryKeyConstraint("namespace", "task_type", "model"),
    )
    op.create_table(
        "cache_tier_switches",
        sa.Column("namespace", sa.String(length=64), nullable=False),
        sa.Column("task_type", sa.String(length=32), nullable=False),
        sa.Column("semantic_enabled", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.PrimaryKeyConstraint("namespace", "task_type"),
    )


def downgrade() -> None:
    op.drop_table("cache_tier_switches")
    op.drop_table("cache_audit_counts")
