"""Issue 29 item 3, the server's half: the uncertainty map's viewer copy (``/viewer/uncertainty.nii``)
is the run's uncertainty.nii.gz on the viewer CT's grid, voxel for voxel, like the label copies."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

from spineseg.imaging.viewer_copy import viewer_labels
from spineseg.services import viewer_files
from spineseg.store.files import StudyFiles
from tests.web.conftest import WebEnv
from tests.web.test_api_studies import phantom_nifti, wait_for_job
from tests.web.web_helpers import bearer


def _nifti(content: bytes) -> nib.Nifti1Image:
    """A NIfTI from a response's bytes: the viewer's copies arrive inflated, the download as .nii.gz."""
    return nib.Nifti1Image.from_bytes(gzip.decompress(content) if content[:2] == b"\x1f\x8b" else content)


def test_uncertainty_viewer_copy_is_the_map_on_the_viewer_grid(web_env: WebEnv, tmp_path: Path) -> None:
    token = web_env.tokens["clinician"]
    ct, _truth = phantom_nifti(tmp_path)
    response = web_env.client.post("/api/studies", files=[("files", ("phantom.nii.gz", ct, "application/gzip"))],
                                   headers=bearer(token))
    assert response.status_code == 202, response.text
    ids = response.json()
    assert wait_for_job(web_env, ids["job_id"], token)["status"] == "done"
    base = f"/api/studies/{ids['study_id']}/viewer"
    copy = web_env.client.get(f"{base}/uncertainty.nii", headers=bearer(token))
    assert copy.status_code == 200, copy.text
    mask = _nifti(web_env.client.get(f"{base}/mask.nii", headers=bearer(token)).content)
    image = _nifti(copy.content)
    assert image.shape == mask.shape and np.allclose(image.affine, mask.affine)
    # the same voxels as the downloadable map, cropped and reoriented as the CT copy is
    study = web_env.client.get(f"/api/studies/{ids['study_id']}", headers=bearer(token)).json()
    source = _nifti(web_env.client.get(study["downloads"]["uncertainty"], headers=bearer(token)).content)
    root = StudyFiles.of(web_env.settings.studies_dir, ids["study_id"]).root
    _ct, box = viewer_files.ct_copy(root, Path("unused"))
    expected, _affine = viewer_labels(np.asarray(source.dataobj), source.affine, box)
    np.testing.assert_array_equal(np.asarray(image.dataobj), expected)
    assert 0 < int(np.asarray(image.dataobj).max()) <= 100  # percent, somewhere unsure
    # a value map has no outline; an unknown name lists the files there are
    outline = web_env.client.get(f"{base}/uncertainty-outline.nii", headers=bearer(token))
    assert outline.status_code == 404 and "uncertainty.nii" in outline.text
