"""Studies that came from a PACS (DICOMweb or the DICOM network) keep, on the server only, the
link back to their source: the endpoint or calling AE, the original Study and Series Instance
UIDs and the map from each stored (replaced) UID to the original one, so a result can be sent
back referencing the images the PACS holds. Never shown in the API or written to an output.

Revision ID: 0007
Revises: 0006 (study runs)
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pacs_links",
        sa.Column("study_id", sa.String(32), sa.ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("series_uid", sa.String(64), nullable=False),
        sa.Column("uid_map", sa.JSON(), nullable=False),
        sa.Column("return_header", sa.JSON(), nullable=True),
        sa.Column("sent_job_id", sa.String(32), nullable=True),
        sa.Column("send_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("pacs_links")
