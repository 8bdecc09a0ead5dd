"""The JSON API end to end on the real app: upload, job status, results, downloads, refusals."""

from __future__ import annotations

import gzip
import io
import json
import re
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from spineseg.imaging.io import load_volume
from tests.conftest import make_phantom
from tests.web.conftest import WebEnv
from tests.web.web_helpers import bearer

JOB_TIMEOUT_S = 120


def wait_for_job(env: WebEnv, job_id: str, token: str) -> dict:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job = env.client.get(f"/api/jobs/{job_id}", headers=bearer(token)).json()
        if job["status"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {JOB_TIMEOUT_S} s: {job}")


def dicom_parts(folder: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"dicom/{p.name}", p.read_bytes(), "application/dicom")) for p in sorted(folder.iterdir())]


def phantom_nifti(tmp_path: Path) -> tuple[bytes, bytes]:
    volume, mask = make_phantom()
    ct = nib.Nifti1Image(volume.array, volume.affine)
    truth = nib.Nifti1Image(mask, volume.affine)
    nib.save(ct, str(tmp_path / "ct.nii.gz"))
    nib.save(truth, str(tmp_path / "truth.nii.gz"))
    return (tmp_path / "ct.nii.gz").read_bytes(), (tmp_path / "truth.nii.gz").read_bytes()


def test_health_needs_no_login_and_names_the_model(web_env: WebEnv) -> None:
    response = web_env.client.get("/api/health")
    assert response.status_code == 200
    assert response.json()["production_model"] == "test-untrained"


def test_dicom_folder_upload_segments_on_the_input_grid(web_env: WebEnv, shared_cases: Path) -> None:
    token = web_env.tokens["clinician"]
    folder = shared_cases / "ts-dicom-thorax" / "dicom"
    response = web_env.client.post("/api/studies", files=dicom_parts(folder), headers=bearer(token))
    assert response.status_code == 202, response.text
    ids = response.json()
    job = wait_for_job(web_env, ids["job_id"], token)
    assert job["status"] == "done", job
    assert job["progress"] == 1.0

    study = web_env.client.get(f"/api/studies/{ids['study_id']}", headers=bearer(token)).json()
    assert study["input_kind"] == "dicom" and study["model_id"] == "test-untrained"
    assert study["summary"]["shape"] == [512, 512, 20]

    mask_response = web_env.client.get(study["downloads"]["mask"], headers=bearer(token))
    assert mask_response.status_code == 200
    mask = nib.Nifti1Image.from_bytes(gzip.decompress(mask_response.content))
    reference = load_volume(folder)
    assert mask.shape == reference.shape
    np.testing.assert_allclose(mask.affine, reference.affine, atol=1e-4)

    seg = web_env.client.get(study["downloads"]["seg"], headers=bearer(token))
    assert seg.status_code == 200, seg.text
    dataset = pydicom.dcmread(io.BytesIO(seg.content))
    assert dataset.Modality == "SEG"
    assert int(dataset.NumberOfFrames) == 20
    stored = sorted((web_env.settings.studies_dir / ids["study_id"] / "input").rglob("*.dcm"))
    assert len(stored) == 20  # the series as stored: de-identified, UIDs replaced (docs/deidentification.md)
    source_uids = {pydicom.dcmread(p, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID for p in stored}
    referenced = {item.ReferencedSOPInstanceUID
                  for item in dataset.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == source_uids

    overlays = web_env.client.get(study["downloads"]["overlays"], headers=bearer(token))
    assert overlays.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(overlays.content)).namelist()
    assert names and all(n.endswith(".png") for n in names)

    summary = web_env.client.get(study["downloads"]["summary"], headers=bearer(token)).json()
    assert summary["model_version"] == "test-untrained"


def test_nifti_with_truth_reports_metrics_and_no_dicom_seg(web_env: WebEnv, tmp_path: Path) -> None:
    token = web_env.tokens["researcher"]
    ct, truth = phantom_nifti(tmp_path)
    response = web_env.client.post(
        "/api/studies",
        files=[("files", ("phantom.nii.gz", ct, "application/gzip")), ("truth", ("truth.nii.gz", truth, "x"))],
        headers=bearer(token),
    )
    assert response.status_code == 202, response.text
    ids = response.json()
    assert wait_for_job(web_env, ids["job_id"], token)["status"] == "done"
    study = web_env.client.get(f"/api/studies/{ids['study_id']}", headers=bearer(token)).json()
    metrics = study["metrics"]
    for key in ("dice", "iou", "precision", "recall", "specificity", "f1", "hd95_mm", "tp", "tn", "fp", "fn"):
        assert key in metrics
    _volume, true_mask = make_phantom()
    assert metrics["tp"] + metrics["fn"] == int(true_mask.sum())
    assert metrics["tp"] + metrics["fp"] + metrics["tn"] + metrics["fn"] == true_mask.size

    seg = web_env.client.get(f"/api/studies/{ids['study_id']}/seg.dcm", headers=bearer(token))
    assert seg.status_code == 404
    assert "not DICOM" in seg.json()["detail"]
    truth_file = web_env.client.get(study["downloads"]["truth"], headers=bearer(token))
    assert truth_file.status_code == 200


def test_bad_file_is_refused_naming_it(web_env: WebEnv) -> None:
    response = web_env.client.post(
        "/api/studies", files=[("files", ("broken.nii.gz", b"this is not a nifti file", "x"))],
        headers=bearer(web_env.tokens["clinician"]))
    assert response.status_code == 422
    body = response.json()
    assert "broken.nii.gz" in body["detail"] and body["field"] == "files"
    assert str(web_env.settings.data_dir) not in json.dumps(body)


def test_bad_truth_is_refused_naming_the_truth_field(web_env: WebEnv, tmp_path: Path) -> None:
    ct, _truth = phantom_nifti(tmp_path)
    response = web_env.client.post(
        "/api/studies",
        files=[("files", ("ct.nii.gz", ct, "x")), ("truth", ("labels.nii.gz", b"garbage", "x"))],
        headers=bearer(web_env.tokens["clinician"]))
    assert response.status_code == 422
    assert response.json()["field"] == "truth" and "labels.nii.gz" in response.json()["detail"]


def test_no_files_is_a_clear_error(web_env: WebEnv) -> None:
    response = web_env.client.post("/api/studies", data={"note": "x"}, files=[("truth", ("", b"", "x"))],
                                   headers=bearer(web_env.tokens["clinician"]))
    assert response.status_code == 422
    assert "no file was uploaded" in response.json()["detail"]


def test_upload_past_the_limit_is_413_and_leaves_nothing(web_env: WebEnv) -> None:
    big = b"\0" * (web_env.settings.max_upload_bytes + 1024)
    response = web_env.client.post("/api/studies", files=[("files", ("big.nii.gz", big, "x"))],
                                   headers=bearer(web_env.tokens["clinician"]))
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]
    studies_dir = web_env.settings.studies_dir
    leftovers = [p for p in studies_dir.iterdir()] if studies_dir.exists() else []
    listed = {s["id"] for s in web_env.client.get("/api/studies", headers=bearer(web_env.tokens["viewer"])).json()}
    assert {p.name for p in leftovers} <= listed


@pytest.mark.parametrize("path", ["/api/studies", "/api/jobs/abc", "/api/studies/abc/mask.nii.gz", "/docs"])
def test_anonymous_requests_are_refused(web_env: WebEnv, path: str) -> None:
    response = web_env.client.get(path)
    assert response.status_code == 401


def test_wrong_token_is_refused(web_env: WebEnv) -> None:
    assert web_env.client.get("/api/studies", headers=bearer("sst_not-a-token")).status_code == 401


def test_viewer_cannot_upload_but_can_list(web_env: WebEnv, tmp_path: Path) -> None:
    ct, _truth = phantom_nifti(tmp_path)
    token = web_env.tokens["viewer"]
    response = web_env.client.post("/api/studies", files=[("files", ("ct.nii.gz", ct, "x"))], headers=bearer(token))
    assert response.status_code == 403
    assert "viewer" in response.json()["detail"]
    assert web_env.client.get("/api/studies", headers=bearer(token)).status_code == 200


def test_dicom_zip_upload_is_read_as_a_series(web_env: WebEnv, shared_cases: Path) -> None:
    folder = shared_cases / "ts-dicom-thorax" / "dicom"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, f"series/{path.name}")
    token = web_env.tokens["clinician"]
    response = web_env.client.post("/api/studies", files=[("files", ("thorax.zip", buffer.getvalue(), "x"))],
                                   headers=bearer(token))
    assert response.status_code == 202, response.text
    study = web_env.client.get(f"/api/studies/{response.json()['study_id']}", headers=bearer(token)).json()
    assert study["input_kind"] == "dicom"
    assert study["name"].startswith(f"Study {study['id'][:8]}")  # never the file's name (it may carry PHI)


def test_several_files_that_are_not_dicom_are_refused_without_server_paths(web_env: WebEnv) -> None:
    token = web_env.tokens["clinician"]
    response = web_env.client.post("/api/studies", headers=bearer(token), files=[
        ("files", ("scan/a.dcm", b"not dicom at all", "x")), ("files", ("scan/b.dcm", b"nor this", "x"))])
    assert response.status_code == 422
    assert str(web_env.settings.data_dir) not in json.dumps(response.json())
    mixed = web_env.client.post("/api/studies", headers=bearer(token), files=[
        ("files", ("a.dcm", b"x", "x")), ("files", ("b.nii.gz", b"y", "x"))])
    assert mixed.status_code == 422 and "b.nii.gz" in mixed.json()["detail"]


def test_not_multipart_is_415(web_env: WebEnv) -> None:
    response = web_env.client.post("/api/studies", json={"files": []}, headers=bearer(web_env.tokens["clinician"]))
    assert response.status_code == 415 and "multipart" in response.json()["detail"]


def test_security_headers_and_no_caching_of_api_answers(web_env: WebEnv) -> None:
    response = web_env.client.get("/api/studies", headers=bearer(web_env.tokens["viewer"]))
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"


def test_dicom_with_nifti_truth_is_scored_through_the_affines(web_env: WebEnv, shared_cases: Path) -> None:
    case = shared_cases / "ts-dicom-thorax"
    token = web_env.tokens["researcher"]
    parts = [*dicom_parts(case / "dicom"), ("truth", ("labels.nii.gz", (case / "labels.nii.gz").read_bytes(), "x"))]
    response = web_env.client.post("/api/studies", files=parts, headers=bearer(token))
    assert response.status_code == 202, response.text
    assert wait_for_job(web_env, response.json()["job_id"], token)["status"] == "done"
    study = web_env.client.get(f"/api/studies/{response.json()['study_id']}", headers=bearer(token)).json()
    truth = web_env.client.get(study["downloads"]["truth"], headers=bearer(token))
    truth_mask = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(truth.content)).dataobj)
    assert truth_mask.any()  # T11/T12 landed on the CT grid
    assert study["metrics"]["tp"] + study["metrics"]["fn"] == int(truth_mask.sum())


def test_openapi_document_lists_the_api(web_env: WebEnv) -> None:
    document = web_env.client.get("/openapi.json", headers=bearer(web_env.tokens["viewer"])).json()
    paths = document["paths"]
    for path in ("/api/studies", "/api/jobs/{job_id}", "/api/studies/{study_id}/mask.nii.gz",
                 "/api/studies/{study_id}/seg.dcm", "/api/studies/{study_id}/mesh.stl", "/api/health"):
        assert path in paths, path
    upload = paths["/api/studies"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(upload["properties"]) == {"files", "truth", "name", "site", "pixel_mm"}
    assert web_env.client.get("/docs", headers=bearer(web_env.tokens["viewer"])).status_code == 200


def test_api_docs_page_uses_only_vendored_assets(web_env: WebEnv) -> None:
    page = web_env.client.get("/docs", headers=bearer(web_env.tokens["viewer"])).text
    scripts = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert scripts and all(s.startswith(("/static/", "data:")) for s in scripts), scripts
    for asset in scripts:
        if asset.startswith("/static/"):
            assert web_env.client.get(asset).status_code == 200, asset
