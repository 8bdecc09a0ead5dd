"""Training from the service: datasets, dataset cases, training runs; a site tag on studies;
the model version a job was asked to use (re-runs).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("split", sa.JSON, nullable=False),
        sa.Column("locked_by", sa.String(128), nullable=True),
    )
    op.create_index("ix_datasets_name", "datasets", ["name"], unique=True)
    op.create_table(
        "dataset_cases",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("dataset_id", sa.String(32), sa.ForeignKey("datasets.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("patient", sa.String(100), nullable=False),
        sa.Column("site", sa.String(100), nullable=False),
        sa.Column("convention", sa.String(32), nullable=False),
        sa.Column("partial", sa.Boolean, nullable=False),
        sa.Column("ct_path", sa.Text, nullable=False),
        sa.Column("labels_path", sa.Text, nullable=False),
        sa.Column("source_study_id", sa.String(32), nullable=True),
        sa.Column("coverage", sa.JSON, nullable=False),
        sa.Column("added_by", sa.String(64), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_index("ix_dataset_cases_dataset_id", "dataset_cases", ["dataset_id"])
    op.create_table(
        "training_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("dataset_id", sa.String(32), sa.ForeignKey("datasets.id", ondelete="CASCADE"), nullable=False),
        sa.Column("base", sa.String(128), nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("notes", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(64), nullable=False),
        sa.Column("progress", sa.Float, nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("total_steps", sa.Integer, nullable=False),
        sa.Column("eta_seconds", sa.Float, nullable=True),
        sa.Column("losses", sa.JSON, nullable=False),
        sa.Column("history", sa.JSON, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("version_id", sa.String(128), nullable=True),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("created_by", sa.String(64), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("started_at", TZ, nullable=True),
        sa.Column("finished_at", TZ, nullable=True),
    )
    op.create_index("ix_training_runs_dataset_id", "training_runs", ["dataset_id"])
    op.create_index("ix_training_runs_status", "training_runs", ["status"])
    op.create_index("ix_training_runs_created_at", "training_runs", ["created_at"])
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("site", sa.String(100), nullable=False, server_default=""))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("model_version", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("model_version")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("site")
    for table in ("training_runs", "dataset_cases", "datasets"):
        op.drop_table(table)
