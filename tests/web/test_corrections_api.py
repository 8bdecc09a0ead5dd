"""Corrections through the API (issue 32): a saved edit is a new truth version of the study,
never overwritten, its file voxel for voxel what was sent (also when sent as the viewer's
canonical crop), its effort measured against what the edit started from, bad labels refused
with the field named, and viewers may not save. Real app, the shared tptbox-lumbar case (its
real VerSe labels play the corrected truth) segmented by the test model."""

from __future__ import annotations

import csv
import gzip
import io

import nibabel as nib
import numpy as np
import pytest

from spineseg.imaging.viewer_copy import canonical
from tests.conftest import CASES
from tests.web.conftest import WebEnv
from tests.web.test_api_studies import wait_for_job
from tests.web.web_helpers import bearer

CASE = CASES / "tptbox-lumbar"


def _nifti_bytes(array: np.ndarray, affine: np.ndarray) -> bytes:
    return gzip.compress(nib.Nifti1Image(array, affine).to_bytes())


def _read(content: bytes) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(content))


@pytest.fixture(scope="module")
def study(web_env: WebEnv) -> dict:
    if not CASE.is_dir():
        pytest.skip(f"shared data not found at {CASE} (set SPINESEG_SHARED_DATA)")
    token = web_env.tokens["clinician"]
    ct = next(CASE.glob("*_ct.nii.gz"))
    files = [("files", ("ct.nii.gz", ct.read_bytes(), "application/gzip"))]
    response = web_env.client.post("/api/studies", files=files,
                                   data={"name": "tptbox for corrections"}, headers=bearer(token))
    assert response.status_code == 202, response.text
    assert wait_for_job(web_env, response.json()["job_id"], token)["status"] == "done"
    study_id = response.json()["study_id"]
    run_id = web_env.client.get(f"/api/studies/{study_id}/runs", headers=bearer(token)).json()[0]["id"]
    truth = nib.load(str(next(CASE.glob("*_seg-vert_*_msk.nii.gz"))))
    return {"id": study_id, "run": run_id, "truth": np.asarray(truth.dataobj).astype(np.int16),
            "affine": truth.affine}


def _save(env: WebEnv, study: dict, body: bytes, role: str = "clinician", **query: object):
    params = {"run": study["run"], **query}
    return env.client.post(f"/api/studies/{study['id']}/corrections", content=body, params=params,
                           headers=bearer(env.tokens[role]) | {"Content-Type": "application/octet-stream"})


def _run_levels(env: WebEnv, study: dict) -> np.ndarray:
    got = env.client.get(f"/api/studies/{study['id']}/runs/{study['run']}/levels.nii.gz",
                         headers=bearer(env.tokens["viewer"]))
    assert got.status_code == 200
    return np.asarray(_read(got.content).dataobj).astype(np.int32)


def test_a_saved_correction_is_version_one_with_its_effort_and_the_file_as_sent(web_env: WebEnv, study: dict) -> None:
    truth = study["truth"]
    saved = _save(web_env, study, _nifti_bytes(truth, study["affine"]), edit_seconds=42.5, note="L3 was split")
    assert saved.status_code == 201, saved.text
    body = saved.json()
    assert body["version"] == 1 and body["created_by"] == "clinician" and body["run_id"] == study["run"]
    assert body["model_version"] == "test-untrained" and body["edit_seconds"] == 42.5 and body["latest"]
    before = _run_levels(web_env, study)
    assert body["effort"]["voxels_changed"] == int(np.count_nonzero(before != truth))
    assert body["effort"]["labelled_voxels"] == int(np.count_nonzero((before > 0) | (truth > 0)))
    assert [v["name"] for v in body["vertebrae"]] == ["L2", "L3", "L4"]  # recomputed from the corrected labels
    assert all(v["volume_ml"] > 0 and v["measures"]["hu_mean"] is not None for v in body["vertebrae"])
    stored = _read(web_env.client.get(body["download"], headers=bearer(web_env.tokens["viewer"])).content)
    assert np.array_equal(np.asarray(stored.dataobj), truth)
    assert np.allclose(stored.affine, study["affine"], atol=1e-4)


def test_a_second_save_is_a_new_version_and_the_first_stays(web_env: WebEnv, study: dict) -> None:
    first = _read(web_env.client.get(f"/api/studies/{study['id']}/corrections/1/labels.nii.gz",
                                     headers=bearer(web_env.tokens["viewer"])).content)
    edited = study["truth"].copy()
    edited[edited == 23] = 0  # L4 marked not a vertebra
    saved = _save(web_env, study, _nifti_bytes(edited, study["affine"]), role="researcher", base=1)
    assert saved.status_code == 201, saved.text
    body = saved.json()
    assert body["version"] == 2 and body["base_version"] == 1 and body["created_by"] == "researcher"
    assert body["effort"]["removed"] == ["L4"]
    assert body["effort"]["voxels_changed"] == int(np.count_nonzero(study["truth"] == 23))
    again = _read(web_env.client.get(f"/api/studies/{study['id']}/corrections/1/labels.nii.gz",
                                     headers=bearer(web_env.tokens["viewer"])).content)
    assert np.array_equal(np.asarray(again.dataobj), np.asarray(first.dataobj))
    listed = web_env.client.get(f"/api/studies/{study['id']}/corrections", headers=bearer(web_env.tokens["viewer"]))
    assert [v["version"] for v in listed.json()["versions"]] == [1, 2]
    assert listed.json()["truth"]["kind"] == "correction" and listed.json()["truth"]["version"] == 2


def test_the_viewers_canonical_crop_lands_on_the_voxels_it_was_drawn_on(web_env: WebEnv, study: dict) -> None:
    truth = study["truth"]
    view, can_affine = canonical(truth, study["affine"])
    box = (slice(3, view.shape[0] - 2), slice(1, view.shape[1] - 1), slice(0, view.shape[2] - 4))
    crop = np.ascontiguousarray(view[box]).astype(np.uint8)
    crop_affine = can_affine.copy()
    crop_affine[:3, 3] = (can_affine @ np.r_[[b.start for b in box], 1.0])[:3]
    saved = _save(web_env, study, _nifti_bytes(crop, crop_affine), base=1)
    assert saved.status_code == 201, saved.text
    stored = _read(web_env.client.get(saved.json()["download"], headers=bearer(web_env.tokens["viewer"])).content)
    assert np.array_equal(np.asarray(stored.dataobj), truth)  # outside the crop: version 1's labels (the base)
    assert saved.json()["effort"]["voxels_changed"] == 0


@pytest.mark.parametrize(("change", "words"), [
    ("unnamed", "unnamed 1"), ("value", "not allowed"), ("grid", "not the voxels of the run's mask"),
    ("empty", "empty"), ("text", "label"),
])
def test_bad_labels_are_refused_naming_the_field(web_env: WebEnv, study: dict, change: str, words: str) -> None:
    listed = lambda: web_env.client.get(f"/api/studies/{study['id']}/corrections",  # noqa: E731
                                        headers=bearer(web_env.tokens["viewer"])).json()["versions"]
    before = len(listed())
    labels, affine = study["truth"].copy(), study["affine"].copy()
    if change == "unnamed":
        labels[labels == 22] = 101
    elif change == "value":
        labels[labels == 22] = 77
    elif change == "grid":
        affine[:3, 3] += 0.5 * affine[:3, 0]  # half a voxel along the first axis
    raw = {"empty": b"", "text": b"not a nifti file at all" * 20}
    body = raw[change] if change in raw else _nifti_bytes(labels, affine)
    refused = _save(web_env, study, body)
    assert refused.status_code == 422, refused.text
    assert words in refused.json()["detail"]
    assert refused.json()["field"] in ("labels", None) or "labels" in refused.json()["detail"]
    assert len(listed()) == before


def test_a_viewer_may_not_save_and_an_unknown_run_is_named(web_env: WebEnv, study: dict) -> None:
    body = _nifti_bytes(study["truth"], study["affine"])
    refused = _save(web_env, study, body, role="viewer")
    assert refused.status_code == 403 and "correct" in refused.json()["detail"]
    unknown = web_env.client.post(f"/api/studies/{study['id']}/corrections", content=body, params={"run": "f" * 32},
                                  headers=bearer(web_env.tokens["clinician"]))
    assert unknown.status_code == 422 and "run" in unknown.json()["detail"]


def test_the_audit_trail_names_who_saved_which_version(web_env: WebEnv, study: dict) -> None:
    events = web_env.client.get("/api/audit", params={"action": "study.correct"},
                                headers=bearer(web_env.tokens["admin"]))
    assert events.status_code == 200, events.text
    assert "version 1 from run" in events.text and "clinician" in events.text


def _csv_row(env: WebEnv, study_id: str, first: str = "", **params: str) -> dict[str, str]:
    got = env.client.get("/api/evaluation.csv", params={"ids": study_id, **params},
                         headers=bearer(env.tokens["researcher"]))
    assert got.status_code == 200, got.text
    return next(r for r in csv.DictReader(io.StringIO(got.text)) if r["study_id"] == (first or study_id))


def test_the_evaluation_scores_the_run_against_the_newest_correction(web_env: WebEnv, study: dict) -> None:
    researcher = bearer(web_env.tokens["researcher"])
    versions = web_env.client.get(f"/api/studies/{study['id']}/corrections", headers=researcher).json()["versions"]
    latest = versions[-1]
    got = web_env.client.get("/api/evaluation", params={"ids": study["id"]}, headers=researcher)
    assert got.status_code == 200, got.text
    case = got.json()["cases"][0]
    assert case["truth"] == f"correction v{latest['version']}" and case["run_id"] == study["run"]
    assert case["correction_effort"]["voxels_changed"] == latest["effort"]["voxels_changed"]
    # the run's Dice against the newest correction, computed here from the files
    mask = _read(web_env.client.get(f"/api/studies/{study['id']}/runs/{study['run']}/mask.nii.gz",
                                    headers=researcher).content)
    truth = _read(web_env.client.get(latest["download"], headers=researcher).content)
    pred, true = np.asarray(mask.dataobj) > 0, np.asarray(truth.dataobj) > 0
    dice = 2 * np.count_nonzero(pred & true) / (np.count_nonzero(pred) + np.count_nonzero(true))
    assert case["metrics"]["dice"] == pytest.approx(dice, abs=1e-9)
    assert case["in_training"] is False
    row = _csv_row(web_env, study["id"])
    assert row["truth"] == f"correction v{latest['version']}" and row["in_training"] == "no"
    effort = latest["effort"]
    assert int(row["correction_voxels_changed"]) == effort["voxels_changed"]
    assert float(row["correction_share_changed"]) == pytest.approx(effort["share_changed"])
    assert int(row["correction_levels_renamed"]) == effort["levels_renamed"]
    assert row["correction_edit_s"] == ("" if latest["edit_seconds"] is None else str(latest["edit_seconds"]))
    page = web_env.client.get("/evaluation", params={"ids": study["id"]}, headers=researcher)
    assert page.status_code == 200 and f"correction v{latest['version']}" in page.text


def test_every_corrected_study_into_a_dataset_and_the_trained_version_marks_it(web_env: WebEnv, study: dict,
                                                                               tmp_path) -> None:
    from spineseg.model.dataset import build_dataset, load_dataset
    from spineseg.services.datasets import case_specs
    from spineseg.store.database import open_database
    from spineseg.store.datasets import get_dataset, lock_dataset

    researcher = bearer(web_env.tokens["researcher"])
    dataset = web_env.client.post("/api/datasets", json={"name": "from corrections"}, headers=researcher).json()
    added = web_env.client.post(f"/api/datasets/{dataset['id']}/cases/from-corrections", headers=researcher)
    assert added.status_code == 201, added.text
    body = added.json()
    latest = web_env.client.get(f"/api/studies/{study['id']}/corrections", headers=researcher).json()["versions"][-1]
    assert [a["study_id"] for a in body["added"]] == [study["id"]] and body["refused"] == []
    case = body["dataset"]["cases"][0]
    assert case["convention"] == "verse" and case["source_study_id"] == study["id"]
    assert f"correction v{latest['version']}" in case["name"]
    assert case["coverage"]["levels"] == sorted({v["name"] for v in latest["vertebrae"]},
                                                key=lambda n: ["L2", "L3", "L4"].index(n))
    again = web_env.client.post(f"/api/datasets/{dataset['id']}/cases/from-corrections", headers=researcher)
    assert again.json()["added"] == []  # a study already held is not added twice
    database = open_database(web_env.settings.sqlalchemy_url)
    try:
        with database.session() as session:
            row = get_dataset(session, dataset_id=dataset["id"])
            specs = case_specs(row)  # what a training run builds its HDF5 from
            h5 = build_dataset(specs, tmp_path / "dataset.h5")
            _attributes, arrays = load_dataset(h5)
            assert [c.name for c in arrays] == [case["name"]] and arrays[0].mask.any()
            # the end of a training run on it: the dataset is locked to the version it made
            lock_dataset(session, dataset_id=dataset["id"], version_id="test-untrained",
                         frozen_split={case["patient"]: "train"})
    finally:
        database.dispose()
    marked = web_env.client.get("/api/evaluation", params={"ids": study["id"]}, headers=researcher).json()
    assert marked["cases"][0]["in_training"] is True and marked["cases_in_means"] == 1
    excluded = web_env.client.get("/api/evaluation", params={"ids": study["id"], "exclude_training": "true"},
                                  headers=researcher).json()
    assert excluded["cases_in_means"] == 0 and excluded["mean"]["dice"] is None
    assert _csv_row(web_env, study["id"])["in_training"] == "yes"
    assert _csv_row(web_env, study["id"], "mean")["dice"] != ""
    assert _csv_row(web_env, study["id"], "mean", exclude_training="true")["dice"] == ""  # no case left for the mean
    page = web_env.client.get("/evaluation", params={"ids": study["id"]}, headers=researcher)
    assert "seen in training" in page.text
    listed = web_env.client.get(f"/api/studies/{study['id']}/corrections", headers=researcher).json()
    assert listed["runs_in_training"] == {study["run"]: True}  # the result page's note reads this


def test_a_run_made_after_a_correction_is_scored_against_it(web_env: WebEnv, study: dict) -> None:
    clinician = bearer(web_env.tokens["clinician"])
    latest = web_env.client.get(f"/api/studies/{study['id']}/corrections", headers=clinician).json()["versions"][-1]
    queued = web_env.client.post(f"/api/studies/{study['id']}/rerun", json={}, headers=clinician)
    assert queued.status_code == 202, queued.text
    assert wait_for_job(web_env, queued.json()["job_id"], web_env.tokens["clinician"])["status"] == "done"
    run = queued.json()["run_id"]
    summary = web_env.client.get(f"/api/studies/{study['id']}/runs/{run}/summary.json", headers=clinician).json()
    assert summary["truth"]["kind"] == "correction" and summary["truth"]["version"] == latest["version"]
    mask = _read(web_env.client.get(f"/api/studies/{study['id']}/runs/{run}/mask.nii.gz", headers=clinician).content)
    truth = _read(web_env.client.get(latest["download"], headers=clinician).content)
    pred, true = np.asarray(mask.dataobj) > 0, np.asarray(truth.dataobj) > 0
    dice = 2 * np.count_nonzero(pred & true) / (np.count_nonzero(pred) + np.count_nonzero(true))
    assert summary["metrics"]["dice"] == pytest.approx(dice, abs=1e-9)
    assert set(summary["level_scores"]["per_vertebra"]) == {v["name"] for v in latest["vertebrae"]}
