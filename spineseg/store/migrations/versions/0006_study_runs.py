"""Every segmentation is a run, and runs are kept: a segment job carries its own results
(summary, metrics, spine volume, Dice), the settings it ran with and its output folder; a
study may pin one run as its current one; a resumable upload carries the study's name and site.

Existing studies lose nothing: the results stored on the study move onto its newest finished
job, whose output folder stays where the files already are (``outputs``); every later run
writes ``runs/<job id>``.

Revision ID: 0006
Revises: 0005 (patient pseudonym)
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

LEGACY_OUTPUT_DIR = "outputs"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("settings", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("output_dir", sa.String(64), nullable=True))
        batch.add_column(sa.Column("spine_volume_ml", sa.Float(), nullable=True))
        batch.add_column(sa.Column("dice", sa.Float(), nullable=True))
        batch.add_column(sa.Column("summary", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("metrics", sa.JSON(), nullable=True))
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("pinned_job_id", sa.String(32), nullable=True))
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("study_name", sa.String(100), nullable=False, server_default=""))
        batch.add_column(sa.Column("study_site", sa.String(100), nullable=False, server_default=""))
    _move_results_onto_jobs()


def _move_results_onto_jobs() -> None:
    """Each study's stored results become its newest done job's run (output folder: the old
    ``outputs``); the study's model id names that run's version when the job named none."""
    bind = op.get_bind()
    studies = sa.table("studies", sa.column("id"), sa.column("model_id"), sa.column("spine_volume_ml"),
                       sa.column("dice"), sa.column("summary", sa.JSON()), sa.column("metrics", sa.JSON()))
    jobs = sa.table("jobs", sa.column("id"), sa.column("study_id"), sa.column("status"), sa.column("created_at"),
                    sa.column("model_version"), sa.column("output_dir"), sa.column("spine_volume_ml"),
                    sa.column("dice"), sa.column("summary", sa.JSON()), sa.column("metrics", sa.JSON()))
    for study in bind.execute(sa.select(studies)).mappings().all():
        newest_done = bind.execute(sa.select(jobs.c.id, jobs.c.model_version)
                                   .where(jobs.c.study_id == study["id"], jobs.c.status == "done")
                                   .order_by(jobs.c.created_at.desc()).limit(1)).first()
        if newest_done is None:
            continue
        bind.execute(sa.update(jobs).where(jobs.c.id == newest_done.id).values(
            output_dir=LEGACY_OUTPUT_DIR, spine_volume_ml=study["spine_volume_ml"], dice=study["dice"],
            summary=study["summary"], metrics=study["metrics"],
            model_version=newest_done.model_version or study["model_id"]))


def downgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("study_site")
        batch.drop_column("study_name")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("pinned_job_id")
    with op.batch_alter_table("jobs") as batch:
        for column in ("metrics", "summary", "dice", "spine_volume_ml", "output_dir", "settings"):
            batch.drop_column(column)
