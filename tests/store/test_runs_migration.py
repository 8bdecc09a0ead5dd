"""Migration 0006 (runs are kept): a study made before it keeps its results and files, now as
its newest done job's run; the other jobs stay without results; later runs get folders of
their own."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from spineseg.services.runs import current_run, output_dir_for, run_files
from spineseg.store.database import MIGRATIONS_DIR, Database, migrate
from spineseg.store.models import Study

STUDY = "a" * 32
OLD_DONE, NEWEST_DONE, FAILED_LATER = "1" * 32, "2" * 32, "3" * 32


def _config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url)
    return config


def test_a_study_from_before_runs_keeps_its_results_as_its_newest_done_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(_config(url), "0005")
    metrics = {"dice": 0.938, "volume_pred_ml": 41.0, "volume_truth_ml": 40.0}
    summary = {"spine_volume_ml": 41.0, "model_version": "v-old"}
    start = datetime(2026, 11, 1, tzinfo=UTC)
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text(
            "INSERT INTO studies (id, name, input_kind, input_path, created_at, model_id, site, spine_volume_ml, "
            "dice, summary, metrics) VALUES (:id, 'old study', 'nifti', '/x/ct.nii.gz', :at, 'v-old', '', 41.0, "
            "0.938, :summary, :metrics)"),
            {"id": STUDY, "at": start, "summary": json.dumps(summary), "metrics": json.dumps(metrics)})
        for offset, (job_id, status) in enumerate(((OLD_DONE, "done"), (NEWEST_DONE, "done"),
                                                   (FAILED_LATER, "failed"))):
            connection.execute(sa.text(
                "INSERT INTO jobs (id, study_id, kind, status, progress, stage, cancel_requested, created_at) "
                "VALUES (:id, :study, 'segment', :status, 1.0, :status, 0, :at)"),
                {"id": job_id, "study": STUDY, "status": status, "at": start + timedelta(hours=offset)})
    engine.dispose()

    migrate(url)
    database = Database(url)
    with database.session() as session:
        study = session.get(Study, STUDY)
        jobs = {job.id: job for job in study.jobs}
        newest = jobs[NEWEST_DONE]
        assert (newest.output_dir, newest.model_version, newest.metrics, newest.summary, newest.dice) == (
            "outputs", "v-old", metrics, summary, 0.938)
        assert jobs[OLD_DONE].metrics is None and jobs[OLD_DONE].output_dir is None
        assert jobs[FAILED_LATER].metrics is None
        assert current_run(study) is newest
        # migration 0009 records it as the current run, by the rule it was shown by
        assert (study.metrics, study.model_id, study.pinned_job_id) == (metrics, "v-old", NEWEST_DONE)
        assert study.current_choice["reason"] == "newest_done"
        studies_dir = tmp_path / "studies"
        assert run_files(studies_dir, newest).mask == studies_dir / STUDY / "outputs" / "mask.nii.gz"
        assert run_files(studies_dir, jobs[OLD_DONE]).folder == studies_dir / STUDY / output_dir_for(OLD_DONE)
    database.dispose()
    command.downgrade(_config(url), "0005")  # and back, losing the study's own columns nothing
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT dice FROM studies")).scalar() == 0.938
    engine.dispose()
