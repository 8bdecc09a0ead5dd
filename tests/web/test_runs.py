"""Runs are kept (issue 10): a re-run adds a run and never touches another's files or metrics;
each run's outputs download under /runs/<id>/; the study's URLs follow its current run, which
changes only when a person chooses one or an announced production re-run ends (issue 28: a
re-run with an older version never replaces it); two runs compare; the evaluation names the
model version. Real app, real segmentations of the shared ts-abdomen-small case."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from spineseg.model.card import CARD_FILE, ModelCard
from spineseg.model.network import build_network, save_weights
from spineseg.registry import Registry
from tests.conftest import CASES
from tests.web.conftest import WebEnv
from tests.web.test_api_studies import wait_for_job
from tests.web.web_helpers import UNTRAINED_ARCHITECTURE, bearer

SECOND_VERSION = "test-untrained-b"


def register_second_version(env: WebEnv) -> str:
    """Another untrained network (other weights), registered but not production."""
    folder = env.settings.data_dir / "untrained-model-b"
    torch.manual_seed(1234)
    save_weights(build_network(UNTRAINED_ARCHITECTURE), folder / "weights.safetensors")
    card = ModelCard(id=SECOND_VERSION, architecture=UNTRAINED_ARCHITECTURE)
    (folder / CARD_FILE).write_text(card.to_json())
    registry = Registry(env.settings.registry_dir)
    return registry.register(folder / "weights.safetensors", card, make_production=False, actor="test").id


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _upload(env: WebEnv, token: str, case: Path, name: str) -> dict:
    files = [("files", ("ct.nii.gz", (case / "ct.nii.gz").read_bytes(), "application/gzip")),
             ("truth", ("labels.nii.gz", (case / "labels.nii.gz").read_bytes(), "application/gzip"))]
    response = env.client.post("/api/studies", files=files, data={"name": name, "site": "Site A"},
                               headers=bearer(token))
    assert response.status_code == 202, response.text
    assert wait_for_job(env, response.json()["job_id"], token)["status"] == "done"
    return response.json()


@pytest.fixture(scope="module")
def two_runs(web_env: WebEnv) -> dict:
    """One study segmented by production, then re-run with the second version."""
    if not CASES.is_dir():
        pytest.skip(f"shared data not found at {CASES} (set SPINESEG_SHARED_DATA)")
    shared_cases = CASES
    token = web_env.tokens["clinician"]
    register_second_version(web_env)
    ids = _upload(web_env, token, shared_cases / "ts-abdomen-small", "runs case")
    study_id, first_run = ids["study_id"], ids["job_id"]
    study_dir = web_env.settings.studies_dir / study_id
    web_env.client.get(f"/api/studies/{study_id}/mesh.stl", headers=bearer(token))  # made on demand, in run 1
    before = web_env.client.get(f"/api/studies/{study_id}", headers=bearer(token)).json()
    files_before = _hashes(study_dir / "runs" / first_run)
    rerun = web_env.client.post(f"/api/studies/{study_id}/rerun", json={"version": SECOND_VERSION},
                                headers=bearer(token))
    assert rerun.status_code == 202, rerun.text
    assert wait_for_job(web_env, rerun.json()["job_id"], token)["status"] == "done"
    return {"study_id": study_id, "first": first_run, "second": rerun.json()["run_id"], "before": before,
            "files_before": files_before, "study_dir": study_dir, "token": token}


def test_a_rerun_keeps_the_first_runs_metrics_and_files_byte_identical(web_env: WebEnv, two_runs: dict) -> None:
    token, study_id = two_runs["token"], two_runs["study_id"]
    assert "mesh.stl" in two_runs["files_before"] and "mask.nii.gz" in two_runs["files_before"]
    assert _hashes(two_runs["study_dir"] / "runs" / two_runs["first"]) == two_runs["files_before"]
    study = web_env.client.get(f"/api/studies/{study_id}", headers=bearer(token)).json()
    runs = {run["id"]: run for run in study["runs"]}
    assert [run["id"] for run in study["runs"]] == [two_runs["second"], two_runs["first"]]  # newest first
    first_before = next(r for r in two_runs["before"]["runs"] if r["id"] == two_runs["first"])
    assert runs[two_runs["first"]]["metrics"] == first_before["metrics"] == two_runs["before"]["metrics"]
    assert runs[two_runs["first"]]["model_version"] == "test-untrained"  # resolved when queued, not None
    assert runs[two_runs["first"]]["settings"]["requested"] == "production"
    assert runs[two_runs["second"]]["model_version"] == SECOND_VERSION
    assert set(runs[two_runs["first"]]) >= {"id", "model_version", "created", "status", "metrics"}
    # the second run wrote its own folder; the two masks differ (other weights)
    first_mask = web_env.client.get(f"/api/studies/{study_id}/runs/{two_runs['first']}/mask.nii.gz",
                                    headers=bearer(token))
    second_mask = web_env.client.get(f"/api/studies/{study_id}/runs/{two_runs['second']}/mask.nii.gz",
                                     headers=bearer(token))
    assert first_mask.status_code == second_mask.status_code == 200
    assert first_mask.content == (two_runs["study_dir"] / "runs" / two_runs["first"] / "mask.nii.gz").read_bytes()
    assert second_mask.content == (two_runs["study_dir"] / "runs" / two_runs["second"] / "mask.nii.gz").read_bytes()
    assert sorted(p.name for p in (two_runs["study_dir"] / "runs").iterdir()) == sorted(
        [two_runs["first"], two_runs["second"]])


def test_a_rerun_with_another_version_leaves_the_studys_result_as_it_was(web_env: WebEnv, two_runs: dict) -> None:
    token, study_id, client = two_runs["token"], two_runs["study_id"], web_env.client
    first_dir = two_runs["study_dir"] / "runs" / two_runs["first"]
    study = client.get(f"/api/studies/{study_id}", headers=bearer(token)).json()
    assert study["current_run"] == two_runs["first"] and study["model_id"] == "test-untrained"
    assert study["current_run_reason"]["reason"] == "first_done" and study["current_run_reason"]["text"]
    assert study["metrics"] == two_runs["before"]["metrics"]
    assert client.get(f"/api/studies/{study_id}/mask.nii.gz", headers=bearer(token)).content == \
        (first_dir / "mask.nii.gz").read_bytes()
    runs = {run["id"]: run for run in study["runs"]}
    assert runs[two_runs["first"]]["current"] and not runs[two_runs["second"]]["current"]
    listed = client.get("/api/studies", headers=bearer(token)).json()
    row = next(s for s in (listed["studies"] if isinstance(listed, dict) else listed) if s["id"] == study_id)
    assert row["model_id"] == "test-untrained" and row["current_run"] == two_runs["first"]

    refused = client.post(f"/api/studies/{study_id}/rerun", json={"version": SECOND_VERSION, "make_current": True},
                          headers=bearer(token))
    assert refused.status_code == 422 and refused.json()["field"] == "make_current", refused.text
    assert SECOND_VERSION in refused.json()["detail"]
    not_a_bool = client.post(f"/api/studies/{study_id}/rerun", json={"make_current": "perhaps"}, headers=bearer(token))
    assert not_a_bool.status_code == 422
    assert len(client.get(f"/api/studies/{study_id}/runs", headers=bearer(token)).json()) == 2  # nothing queued


def test_the_study_urls_follow_the_run_a_person_chooses(web_env: WebEnv, two_runs: dict) -> None:
    token, study_id, client = two_runs["token"], two_runs["study_id"], web_env.client
    first_dir = two_runs["study_dir"] / "runs" / two_runs["first"]
    second_dir = two_runs["study_dir"] / "runs" / two_runs["second"]
    pinned = client.put(f"/api/studies/{study_id}/current-run", json={"run_id": two_runs["second"]},
                        headers=bearer(token))
    assert pinned.status_code == 200 and pinned.json()["current_run"] == two_runs["second"]
    assert pinned.json()["current_run_reason"]["reason"] == "chosen"
    study = client.get(f"/api/studies/{study_id}", headers=bearer(token)).json()
    assert study["model_id"] == SECOND_VERSION
    assert study["current_run_reason"]["reason"] == "chosen" and study["current_run_reason"]["by"] == "clinician"
    assert client.get(f"/api/studies/{study_id}/mask.nii.gz", headers=bearer(token)).content == \
        (second_dir / "mask.nii.gz").read_bytes()
    assert study["downloads"]["mask"] == f"/api/studies/{study_id}/mask.nii.gz"
    assert study["runs"][1]["downloads"]["mask"] == f"/api/studies/{study_id}/runs/{two_runs['first']}/mask.nii.gz"

    unknown = client.put(f"/api/studies/{study_id}/current-run", json={"run_id": "f" * 32}, headers=bearer(token))
    assert unknown.status_code == 422 and unknown.json()["field"] == "run"
    assert client.get(f"/api/studies/{study_id}/runs/{'f' * 32}/mask.nii.gz", headers=bearer(token)).status_code == 404
    viewer = client.put(f"/api/studies/{study_id}/current-run", json={"run_id": two_runs["first"]},
                        headers=bearer(web_env.tokens["viewer"]))
    assert viewer.status_code == 403
    back = client.put(f"/api/studies/{study_id}/current-run", json={"run_id": two_runs["first"]},
                      headers=bearer(token))
    assert back.json()["current_run"] == two_runs["first"]
    study = client.get(f"/api/studies/{study_id}", headers=bearer(token)).json()
    assert study["model_id"] == "test-untrained" and study["metrics"] == two_runs["before"]["metrics"]
    assert client.get(f"/api/studies/{study_id}/mask.nii.gz", headers=bearer(token)).content == \
        (first_dir / "mask.nii.gz").read_bytes()


def test_two_runs_compare_by_dice_and_volume(web_env: WebEnv, two_runs: dict) -> None:
    token, study_id = two_runs["token"], two_runs["study_id"]
    response = web_env.client.get(f"/api/studies/{study_id}/runs/compare",
                                  params={"first": two_runs["first"], "second": two_runs["second"]},
                                  headers=bearer(token))
    assert response.status_code == 200, response.text
    data = response.json()
    masks = [np.asarray(nib.load(str(two_runs["study_dir"] / "runs" / run / "mask.nii.gz")).dataobj) > 0
             for run in (two_runs["first"], two_runs["second"])]
    expected = 2 * np.logical_and(*masks).sum() / (masks[0].sum() + masks[1].sum())
    assert data["dice"] == pytest.approx(float(expected))
    assert data["differing_voxels"] == int(np.count_nonzero(masks[0] != masks[1])) > 0
    runs = {r["id"]: r for r in web_env.client.get(f"/api/studies/{study_id}/runs", headers=bearer(token)).json()}
    assert data["volume_difference_ml"] == pytest.approx(
        runs[two_runs["second"]]["spine_volume_ml"] - runs[two_runs["first"]]["spine_volume_ml"], abs=2e-3)
    same = web_env.client.get(f"/api/studies/{study_id}/runs/compare",
                              params={"first": two_runs["first"], "second": two_runs["first"]}, headers=bearer(token))
    assert same.json()["dice"] == 1.0 and same.json()["volume_difference_ml"] == 0


def test_a_rerun_defaults_to_production_and_refuses_an_unknown_version(web_env: WebEnv, two_runs: dict) -> None:
    token, study_id = two_runs["token"], two_runs["study_id"]
    unknown = web_env.client.post(f"/api/studies/{study_id}/rerun", json={"version": "no-such"}, headers=bearer(token))
    assert unknown.status_code == 404 and "no-such" in unknown.text
    before = web_env.client.get(f"/api/studies/{study_id}", headers=bearer(token)).json()["current_run"]
    default = web_env.client.post(f"/api/studies/{study_id}/rerun", json={}, headers=bearer(token))
    assert default.status_code == 202 and default.json()["model_version"] == "test-untrained"
    assert wait_for_job(web_env, default.json()["job_id"], token)["status"] == "done"
    assert _hashes(two_runs["study_dir"] / "runs" / two_runs["first"]) == two_runs["files_before"]
    # not announced as the new result: the study's result stays the run it was
    assert web_env.client.get(f"/api/studies/{study_id}", headers=bearer(token)).json()["current_run"] == before


def test_an_announced_production_rerun_becomes_the_result_when_done(web_env: WebEnv, two_runs: dict) -> None:
    token, study_id, client = two_runs["token"], two_runs["study_id"], web_env.client
    announced = client.post(f"/api/studies/{study_id}/rerun", json={"version": "production", "make_current": True},
                            headers=bearer(token))
    assert announced.status_code == 202, announced.text
    run_id = announced.json()["run_id"]
    assert announced.json()["model_version"] == "test-untrained"
    assert client.get(f"/api/studies/{study_id}", headers=bearer(token)).json()["current_run"] != run_id  # not yet
    assert wait_for_job(web_env, run_id, token)["status"] == "done"
    study = client.get(f"/api/studies/{study_id}", headers=bearer(token)).json()
    assert study["current_run"] == run_id
    assert study["current_run_reason"]["reason"] == "announced_rerun"
    assert study["current_run_reason"]["by"] == "clinician"
    assert next(r for r in study["runs"] if r["id"] == run_id)["make_current"] is True
    assert client.get(f"/api/studies/{study_id}/mask.nii.gz", headers=bearer(token)).content == \
        (two_runs["study_dir"] / "runs" / run_id / "mask.nii.gz").read_bytes()


def test_the_evaluation_csv_names_each_rows_model_version_and_filters_by_it(web_env: WebEnv, two_runs: dict,
                                                                            shared_cases: Path) -> None:
    token, client = web_env.tokens["researcher"], web_env.client
    other = _upload(web_env, web_env.tokens["clinician"], shared_cases / "ts-abdomen-small", "other case")
    ids = f"{two_runs['study_id']},{other['study_id']}"
    rows = list(csv.DictReader(io.StringIO(client.get("/api/evaluation.csv", params={"ids": ids},
                                                      headers=bearer(token)).text)))
    by_id = {row["study_id"]: row for row in rows if row["study_id"] not in ("mean", "sd")}
    runs = client.get(f"/api/studies/{two_runs['study_id']}/runs", headers=bearer(token)).json()
    current = next(r for r in runs if r["current"])  # the newest run, whichever tests re-ran the study before
    assert by_id[two_runs["study_id"]]["model_version"] == current["model_version"]
    assert by_id[two_runs["study_id"]]["run_id"] == current["id"]
    assert by_id[two_runs["study_id"]]["name"] == "runs case" and by_id[other["study_id"]]["site"] == "Site A"
    for study_id, row in by_id.items():  # the verdict of the run the row comes from, as the study API says it
        study = client.get(f"/api/studies/{study_id}", headers=bearer(token)).json()
        assert row["quality"] == study["quality_verdict"] and row["quality"] in ("ok", "review", "not assessable")

    filtered = client.get("/api/evaluation.csv", params={"ids": two_runs["study_id"], "model": SECOND_VERSION},
                          headers=bearer(token))
    row = next(csv.DictReader(io.StringIO(filtered.text)))
    assert row["model_version"] == SECOND_VERSION and row["run_id"] == two_runs["second"]
    second = client.get(f"/api/studies/{two_runs['study_id']}/runs", headers=bearer(token)).json()
    second_run = next(r for r in second if r["id"] == two_runs["second"])
    assert float(row["dice"]) == pytest.approx(second_run["metrics"]["dice"])
    missing = client.get("/api/evaluation.csv", params={"ids": other["study_id"], "model": SECOND_VERSION},
                         headers=bearer(token))
    assert missing.status_code == 404 and SECOND_VERSION in missing.text

    data = client.get("/api/evaluation", params={"ids": ids}, headers=bearer(token)).json()
    assert {p["name"] for p in data["bland_altman_points"]} == {"runs case", "other case"}
    page = client.get("/evaluation", params={"ids": ids, "model": SECOND_VERSION}, headers=bearer(token))
    assert page.status_code == 404  # the other study has no run by that version: said, not hidden
    page = client.get("/evaluation", params={"ids": two_runs["study_id"], "model": SECOND_VERSION},
                      headers=bearer(token))
    assert page.status_code == 200 and "Model version" in page.text
    assert f"?run={two_runs['second']}" in page.text and f"<code>{SECOND_VERSION}</code>" in page.text
