"""A DICOM study uploaded in the browser or over the API keeps, on the server only, what its
results need to fit the original images (issue 28 item 2): the map from each stored (replaced)
UID to the original one and the original patient / study attributes, sealed together
(``services.sealing``: a copy of the database alone reads nothing). They are put back into a
SEG or RTSTRUCT download only when a clinician or admin asks for the original series, and that
is audited (``services.original_series``). Never shown in the API or written to a stored file.

Revision ID: 0011
Revises: 0010 (promotion proposals)
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "original_series",
        sa.Column("study_id", sa.String(32), sa.ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("sealed", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("original_series")
