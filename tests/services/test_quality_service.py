"""The quality verdict as a run's output: computed once by the segment job, kept in the run's
summary (database and summary.json), read by the studies list's JSON; odd input never fails it."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from spineseg.imaging.volume import Volume
from spineseg.jobs.segment_job import run_segment_job
from spineseg.metrics.quality import VERDICTS
from spineseg.registry import Registry
from spineseg.services.quality import assess_run, verdict_of
from spineseg.services.runs import run_files
from spineseg.store.database import open_database
from spineseg.store.studies import create_job, create_study, get_job, get_study, new_id
from spineseg.web.routes.api import study_json
from tests.conftest import make_phantom
from tests.web.web_helpers import make_settings, register_test_model


def test_finished_job_summary_carries_the_verdict(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    register_test_model(settings)
    database, registry = open_database(settings.sqlalchemy_url), Registry(settings.registry_dir)
    volume, _mask = make_phantom()
    nib.save(nib.Nifti1Image(volume.array, volume.affine), str(tmp_path / "ct.nii.gz"))
    with database.session() as session:
        study_id = new_id()
        create_study(session, study_id=study_id, owner_id=None, name="phantom", input_kind="nifti",
                     input_path=str(tmp_path / "ct.nii.gz"), truth_path=None)
        job_id = create_job(session, study_id=study_id).id
    assert run_segment_job(job_id, settings=settings, database=database, registry=registry) == "done"
    with database.session() as session:
        job = get_job(session, job_id=job_id)
        quality = job.summary["quality"]
        uncertainty = job.summary["uncertainty"]
        files = run_files(settings.studies_dir, job)
        on_disk = json.loads(files.summary.read_text())["quality"]
        mask = np.asarray(nib.load(files.mask).dataobj)
        u = np.asarray(nib.load(files.folder / uncertainty["map"]).dataobj)
        listed = study_json(session, get_study(session, study_id=study_id), full=False)
    assert quality["verdict"] in VERDICTS
    assert {c["check"] for c in quality["checks"]} >= {"ct_like", "slice_count", "mask_size"}
    # the phantom's six grey levels are no CT's: never "ok"
    assert quality["verdict"] != "ok" and quality["reasons"]
    assert on_disk["verdict"] == quality["verdict"]
    assert listed["quality_verdict"] == quality["verdict"]
    # the uncertainty map beside the mask, on its grid, and its figure over the mask's voxels
    assert u.shape == mask.shape and u.dtype == np.uint8 and u.max() <= 100
    if mask.any():
        assert uncertainty["mask_mean"] == round(float(u[mask > 0].mean()), 2)
    assert "uncertainty" in job.summary["stage_times_s"]


def test_odd_input_never_raises() -> None:
    volume = Volume(np.zeros((4, 4, 4), dtype=np.float32), np.eye(4))
    result = assess_run(volume, np.zeros((5, 5, 5), dtype=np.uint8))  # a mask on another grid
    assert result["verdict"] == "review"
    assert "could not run" in result["reasons"][0]
    assert verdict_of({"quality": result}) == "review"
    assert verdict_of({}) is None and verdict_of(None) is None
