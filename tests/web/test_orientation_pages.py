"""Orientation-proof pages (issue 10 item 3): counts, the overlay slider's range and every slider
position follow the patient's inferior-superior axis whatever the storage order: a P-I-R NIfTI
(tptbox) and a DICOM series whose files come in shuffled order under shuffled names."""

from __future__ import annotations

import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spineseg.imaging.io import load_volume
from spineseg.imaging.resample import to_canonical
from tests.web.conftest import WebEnv
from tests.web.test_api_studies import wait_for_job
from tests.web.test_sessions_and_pages import logged_in_client
from tests.web.web_helpers import bearer


def finished_study(env: WebEnv, files: list, token: str) -> dict:
    response = env.client.post("/api/studies", files=files, headers=bearer(token))
    assert response.status_code == 202, response.text
    job = wait_for_job(env, response.json()["job_id"], token)
    assert job["status"] == "done", job
    return env.client.get(f"/api/studies/{response.json()['study_id']}", headers=bearer(token)).json()


def check_every_axial_position(env: WebEnv, study: dict, token: str, axial_count: int, mask_path: Path) -> None:
    summary = study["summary"]
    assert summary["axial_slice_count"] == axial_count
    mask = nib.load(str(mask_path))
    ornt = nib.orientations.io_orientation(mask.affine)
    canonical = nib.orientations.apply_orientation(np.asarray(mask.dataobj), ornt)
    assert summary["slices_with_spine_count"] == int(canonical.any(axis=(0, 1)).sum())
    page = logged_in_client(env, "clinician").get(f"/studies/{study['id']}")
    assert f"{summary['slices_with_spine_count']} of {axial_count} axial" in page.text
    base = f"/api/studies/{study['id']}/overlay.png"
    for k in range(axial_count):  # every slider position answers, the last one included
        response = env.client.get(f"{base}?slice={k}", headers=bearer(token))
        assert response.status_code == 200, (k, response.text)
        assert response.headers["X-Slice"] == str(k) and response.headers["X-Slice-Count"] == str(axial_count)
    beyond = env.client.get(f"{base}?slice={axial_count}", headers=bearer(token))
    assert beyond.status_code == 422 and f"0..{axial_count - 1}" in beyond.text


@pytest.mark.slow
def test_pir_nifti_counts_along_inferior_superior(web_env: WebEnv, shared_cases: Path, tmp_path: Path) -> None:
    token = web_env.tokens["clinician"]
    ct = shared_cases / "tptbox-lumbar" / "sub-ct_label-22_ct.nii.gz"
    assert nib.aff2axcodes(nib.load(str(ct)).affine) == ("P", "I", "R")
    study = finished_study(web_env, [("files", ("ct.nii.gz", ct.read_bytes(), "application/gzip"))], token)
    mask = tmp_path / "mask.nii.gz"
    mask.write_bytes(web_env.client.get(study["downloads"]["mask"], headers=bearer(token)).content)
    check_every_axial_position(web_env, study, token, 47, mask)  # 47 = the I axis, not the 73 of R


@pytest.mark.slow
def test_shuffled_dicom_series_counts_its_slices(web_env: WebEnv, shared_cases: Path, tmp_path: Path) -> None:
    token = web_env.tokens["clinician"]
    folder = shared_cases / "ts-dicom-thorax" / "dicom"
    paths = sorted(folder.iterdir())
    random.Random(4).shuffle(paths)
    files = [("files", (f"dicom/{n:03d}.dcm", p.read_bytes(), "application/dicom")) for n, p in enumerate(paths)]
    study = finished_study(web_env, files, token)
    canonical, _ornt = to_canonical(load_volume(folder))
    mask = tmp_path / "mask.nii.gz"
    mask.write_bytes(web_env.client.get(study["downloads"]["mask"], headers=bearer(token)).content)
    check_every_axial_position(web_env, study, token, canonical.shape[2], mask)
