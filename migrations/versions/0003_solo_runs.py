"""jobs.solo_runs: the deliveries of a job that entered the engine alone (workers/isolation.py)

Revision ID: 0003_solo_runs
Revises: 0002_i13_cache_audit
Create Date: 2026-12-09 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_solo_runs"
down_revision = "0002_i13_cache_audit"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("solo_runs", sa.Integer(), server_default="0",
                                    nullable=False))


def downgrade() -> None:
    op.drop_column("jobs", "solo_runs")
