"""A study's current run is recorded, with why, instead of derived: until now it was "the pinned
run, else the newest done one", so a re-run with any version (an older one included) silently
became the study's result (issue 28). Now ``pinned_job_id`` always names the current run and
``current_choice`` says why it is current (``services.runs``).

Existing studies keep what they showed: a study without a pin gets its newest done run as its
current one (reason ``newest_done``, the rule it was shown by); a pinned one keeps its pin
(reason ``chosen``).

Revision ID: 0009
Revises: 0008 (job heartbeats)
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("current_choice", sa.JSON(), nullable=True))
    bind = op.get_bind()
    studies = sa.table("studies", sa.column("id"), sa.column("pinned_job_id"),
                       sa.column("current_choice", sa.JSON()))
    jobs = sa.table("jobs", sa.column("id"), sa.column("study_id"), sa.column("kind"), sa.column("status"),
                    sa.column("created_at"))
    for study in bind.execute(sa.select(studies.c.id, studies.c.pinned_job_id)).mappings().all():
        if study["pinned_job_id"]:
            bind.execute(sa.update(studies).where(studies.c.id == study["id"]).values(
                current_choice={"reason": "chosen", "by": None, "at": None}))
            continue
        newest_done = bind.execute(sa.select(jobs.c.id).where(
            jobs.c.study_id == study["id"], jobs.c.kind == "segment", jobs.c.status == "done")
            .order_by(jobs.c.created_at.desc()).limit(1)).scalar()
        if newest_done is not None:
            bind.execute(sa.update(studies).where(studies.c.id == study["id"]).values(
                pinned_job_id=newest_done, current_choice={"reason": "newest_done", "by": None, "at": None}))


def downgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("current_choice")
