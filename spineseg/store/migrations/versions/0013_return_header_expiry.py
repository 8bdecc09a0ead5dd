"""The DICOM listener's return identity expires (issue 30 item 1): ``pacs_links`` gets
``return_header_expires_at``, after which the sealed patient and study attributes a result
needs to be filed beside its original are erased even if it was never sent
(``store.pacs_links.erase_expired_headers``). ``return_header`` itself now holds a sealed
token (``services.sealing``), not the attributes.

Revision ID: 0013
Revises: 0012 (corrections)
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pacs_links") as batch:
        batch.add_column(sa.Column("return_header_expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pacs_links") as batch:
        batch.drop_column("return_header_expires_at")
