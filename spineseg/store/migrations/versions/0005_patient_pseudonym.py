"""De-identification on ingest: each study keeps its patient's pseudonym (a keyed hash, never
the identity), so one patient's studies can be grouped.

Revision ID: 0005
Revises: 0004 (audit chain, sessions)
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("patient_pseudonym", sa.String(32), nullable=True))
        batch.create_index("ix_studies_patient_pseudonym", ["patient_pseudonym"])


def downgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.drop_index("ix_studies_patient_pseudonym")
        batch.drop_column("patient_pseudonym")
