"""Promotions need a second person: a proposal to make a version production waits for an
admin's approval (issue 28; ``services.promotions``, ``SPINESEG_PROMOTION_APPROVAL``).

Revision ID: 0010
Revises: 0009 (current run choice)
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "promotion_proposals",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version_id", sa.String(128), nullable=False, index=True),
        sa.Column("production_id", sa.String(128), nullable=True),
        sa.Column("proposed_by", sa.String(64), nullable=False),
        sa.Column("proposed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confirm", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("force", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending", index=True),
        sa.Column("decided_by", sa.String(64), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("note", sa.Text(), nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_table("promotion_proposals")
