"""Corrections: a study's truth edited in the browser (or uploaded through the API) as a
versioned object, one row per saved version, none ever overwritten (issue 32;
``store.corrections``, ``services.corrections``).

Revision ID: 0012
Revises: 0011 (original series)
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "corrections",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("study_id", sa.String(32), sa.ForeignKey("studies.id", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=True),
        sa.Column("base_version", sa.Integer(), nullable=True),
        sa.Column("edit_seconds", sa.Float(), nullable=True),
        sa.Column("effort", sa.JSON(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("run_scores", sa.JSON(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False, server_default=""),
        sa.UniqueConstraint("study_id", "version", name="uq_corrections_study_version"),
    )


def downgrade() -> None:
    op.drop_table("corrections")
