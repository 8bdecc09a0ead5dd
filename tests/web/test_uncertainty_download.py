"""The run's uncertainty map through the API and on the result page."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

from tests.web.conftest import WebEnv
from tests.web.test_api_studies import phantom_nifti, wait_for_job
from tests.web.web_helpers import bearer


def test_map_is_offered_beside_the_mask(web_env: WebEnv, tmp_path: Path) -> None:
    token = web_env.tokens["clinician"]
    ct, _truth = phantom_nifti(tmp_path)
    ids = web_env.client.post("/api/studies", files=[("files", ("phantom.nii.gz", ct, "application/gzip"))],
                              headers=bearer(token)).json()
    assert wait_for_job(web_env, ids["job_id"], token)["status"] == "done"
    study = web_env.client.get(f"/api/studies/{ids['study_id']}", headers=bearer(token)).json()
    answer = web_env.client.get(study["downloads"]["uncertainty"], headers=bearer(token))
    assert answer.status_code == 200 and "uncertainty.nii.gz" in answer.headers["content-disposition"]
    u = nib.Nifti1Image.from_bytes(gzip.decompress(answer.content))
    mask = nib.Nifti1Image.from_bytes(gzip.decompress(
        web_env.client.get(study["downloads"]["mask"], headers=bearer(token)).content))
    assert u.shape == mask.shape and np.asarray(u.dataobj).max() <= 100
    assert study["summary"]["uncertainty"]["map"] == "uncertainty.nii.gz"
    page = web_env.client.get(f"/studies/{ids['study_id']}", headers=bearer(token))
    assert page.status_code == 200 and 'id="download-uncertainty"' in page.text


def test_a_run_without_a_map_says_so(web_env: WebEnv, tmp_path: Path) -> None:
    token = web_env.tokens["clinician"]
    ct, _truth = phantom_nifti(tmp_path)
    ids = web_env.client.post("/api/studies", files=[("files", ("phantom.nii.gz", ct, "application/gzip"))],
                              headers=bearer(token)).json()
    assert wait_for_job(web_env, ids["job_id"], token)["status"] == "done"
    study = web_env.client.get(f"/api/studies/{ids['study_id']}", headers=bearer(token)).json()
    run_folder = next(p for p in (web_env.settings.studies_dir / ids["study_id"]).rglob("uncertainty.nii.gz"))
    run_folder.unlink()  # as a run made before the map existed
    answer = web_env.client.get(study["downloads"]["uncertainty"], headers=bearer(token))
    assert answer.status_code == 404 and "missing from the study's outputs" in answer.text
