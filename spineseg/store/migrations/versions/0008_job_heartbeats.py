"""Jobs and training runs carry the worker that claimed them and its last heartbeat, so a job
whose worker died (kill -9, machine lost) is found by any live process and queued again, and a
worker that lost its claim cannot record a result.

Revision ID: 0008
Revises: 0007 (PACS links)
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("jobs", "training_runs"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("worker_id", sa.String(96), nullable=True))
            batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for table in ("jobs", "training_runs"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("heartbeat_at")
            batch.drop_column("worker_id")
