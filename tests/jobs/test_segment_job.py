"""The segment job run directly (no web): outputs on disk, metrics with a truth, failure
stored on the job for a bad file, cancellation noticed at a progress step."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import pytest

from spineseg.jobs.segment_job import JobCancelled, ProgressReporter, run_segment_job
from spineseg.registry import Registry
from spineseg.services.runs import run_files
from spineseg.store.database import Database, open_database
from spineseg.store.studies import claim_job, create_job, create_study, get_job, get_study, new_id, request_cancel
from tests.conftest import make_phantom
from tests.web.web_helpers import make_settings, register_test_model


@pytest.fixture
def setup(tmp_path: Path) -> tuple:
    settings = make_settings(tmp_path / "data")
    register_test_model(settings)
    return settings, open_database(settings.sqlalchemy_url), Registry(settings.registry_dir)


def _queue(database: Database, input_path: Path, truth_path: Path | None = None) -> tuple[str, str]:
    with database.session() as session:
        study_id = new_id()
        create_study(session, study_id=study_id, owner_id=None, name=input_path.name, input_kind="nifti",
                     input_path=str(input_path), truth_path=str(truth_path) if truth_path else None)
        return study_id, create_job(session, study_id=study_id).id


def test_job_writes_outputs_and_metrics(setup: tuple, tmp_path: Path) -> None:
    settings, database, registry = setup
    volume, mask = make_phantom()
    nib.save(nib.Nifti1Image(volume.array, volume.affine), str(tmp_path / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(mask, volume.affine), str(tmp_path / "truth.nii.gz"))
    study_id, job_id = _queue(database, tmp_path / "ct.nii.gz", tmp_path / "truth.nii.gz")
    assert run_segment_job(job_id, settings=settings, database=database, registry=registry) == "done"
    with database.session() as session:
        files = run_files(settings.studies_dir, get_job(session, job_id=job_id))
    assert files.folder == settings.studies_dir / study_id / "runs" / job_id
    for path in (files.ct, files.mask, files.truth_on_grid, files.summary):
        assert path.is_file(), path
    assert nib.load(str(files.mask)).shape == volume.shape
    # the viewer's copies are made by the job, so the result page's first view need not wait
    assert any((settings.studies_dir / study_id / "viewer").glob("ct*.nii.gz"))
    assert {p.name.split(".")[0].split("-")[0] for p in (files.folder / "viewer").glob("*.nii.gz")} >= {"mask", "truth"}
    with database.session() as session:
        study = get_study(session, study_id=study_id)
        assert study.metrics["tp"] + study.metrics["fn"] == int(mask.sum())
        assert study.model_id == "test-untrained"
    # a second run of the same id (a duplicate queue entry) does nothing
    assert run_segment_job(job_id, settings=settings, database=database, registry=registry) == "skipped"


def test_bad_input_fails_the_job_with_the_reason(setup: tuple, tmp_path: Path) -> None:
    settings, database, registry = setup
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"garbage")
    _study_id, job_id = _queue(database, bad)
    assert run_segment_job(job_id, settings=settings, database=database, registry=registry) == "failed"
    with database.session() as session:
        job = get_job(session, job_id=job_id)
        assert job.status == "failed" and "bad.nii.gz" in job.error


def test_progress_reporter_raises_after_a_cancel_request(setup: tuple, tmp_path: Path) -> None:
    _settings, database, _registry = setup
    _study_id, job_id = _queue(database, tmp_path / "x.nii.gz")
    with database.session() as session:
        claim_job(session, job_id=job_id)
    reporter = ProgressReporter(database, job_id)
    reporter.report(0.3, "segmenting", force=True)
    with database.session() as session:
        assert request_cancel(session, job_id=job_id) == "running"
    with pytest.raises(JobCancelled):
        reporter.report(0.4, "segmenting", force=True)


def test_a_job_failing_on_tampered_weights_names_the_cause_without_server_paths(setup: tuple,
                                                                                 tmp_path: Path) -> None:
    settings, database, registry = setup
    volume, _mask = make_phantom()
    nib.save(nib.Nifti1Image(volume.array, volume.affine), str(tmp_path / "ct.nii.gz"))
    _study_id, job_id = _queue(database, tmp_path / "ct.nii.gz")
    weights = settings.registry_dir / "versions" / "test-untrained" / "weights.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    assert run_segment_job(job_id, settings=settings, database=database, registry=registry) == "failed"
    with database.session() as session:
        error = get_job(session, job_id=job_id).error
    assert "sha256" in error and "test-untrained" in error
    assert str(settings.data_dir) not in error and str(tmp_path) not in error and "/" not in error.split(":")[-1]


def test_a_stopping_server_puts_the_running_job_back_in_the_queue(setup: tuple, tmp_path: Path) -> None:
    settings, database, registry = setup
    volume, _mask = make_phantom()
    nib.save(nib.Nifti1Image(volume.array, volume.affine), str(tmp_path / "ct.nii.gz"))
    _study_id, job_id = _queue(database, tmp_path / "ct.nii.gz")
    status = run_segment_job(job_id, settings=settings, database=database, registry=registry, stopping=lambda: True)
    assert status == "queued"
    with database.session() as session:
        job = get_job(session, job_id=job_id)
        assert job.status == "queued" and job.finished_at is None
    assert run_segment_job(job_id, settings=settings, database=database, registry=registry) == "done"
