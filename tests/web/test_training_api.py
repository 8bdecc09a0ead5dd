"""The train-from-the-browser loop through the API on the real app: a researcher builds a
dataset, fine-tunes the production version in a background process, watches progress, sees
the new version with its parent, compares, promotes, and a new study uses it."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from spineseg.config import Settings
from spineseg.registry import Registry
from spineseg.web.app import create_app
from tests.conftest import make_phantom
from tests.web.conftest import WebEnv
from tests.web.training_helpers import (
    BASE_VERSION,
    TINY_SETTINGS,
    case_parts,
    register_tiny_base,
    wait_for_job,
    wait_for_run,
)
from tests.web.web_helpers import add_user, bearer, make_settings


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, backends: Callable[[Settings], Settings]) -> Iterator[WebEnv]:
    settings = backends(make_settings(tmp_path_factory.mktemp("train-data")))
    register_tiny_base(settings)
    tokens = {role: add_user(settings, name, role) for name, role in (("rita", "researcher"), ("carl", "clinician"))}
    tokens = {"researcher": tokens["researcher"], "clinician": tokens["clinician"]}
    with TestClient(create_app(settings)) as client:
        yield WebEnv(settings, client, tokens)


def make_dataset(env: WebEnv, name: str, cases: list[tuple[str, str, int]], tmp_path: Path) -> dict:
    """Create ``name`` and upload one phantom case per (patient, site, seed)."""
    headers = bearer(env.tokens["researcher"])
    created = env.client.post("/api/datasets", json={"name": name}, headers=headers)
    assert created.status_code == 201, created.text
    dataset = created.json()
    for patient, site, seed in cases:
        parts = case_parts(tmp_path / f"{name}-{patient}", seed)
        added = env.client.post(f"/api/datasets/{dataset['id']}/cases", files=parts,
                                data={"patient": patient, "site": site, "name": f"case-{patient}",
                                      "convention": "totalsegmentator"}, headers=headers)
        assert added.status_code == 201, added.text
    return env.client.get(f"/api/datasets/{dataset['id']}", headers=headers).json()


def test_researcher_fine_tunes_compares_promotes_and_a_new_study_uses_it(env: WebEnv, tmp_path: Path) -> None:
    headers = bearer(env.tokens["researcher"])
    dataset = make_dataset(env, "phantoms", [("P1", "north", 1), ("P2", "south", 2), ("P3", "north", 3),
                                             ("P4", "south", 4)], tmp_path)
    assert dataset["counts"]["cases"] == 4 and dataset["counts"]["patients"] == 4
    assert dataset["sites"] == {"north": 2, "south": 2}
    assert dataset["cases"][0]["coverage"]["levels"] == ["L2"]
    assert dataset["coverage"]["slices_with_spine"] == 4 * 16
    split = env.client.put(f"/api/datasets/{dataset['id']}/split", headers=headers,
                           json={"patients": {"P1": "train", "P2": "val", "P3": "test", "P4": "test"}})
    assert split.status_code == 200, split.text
    assert split.json()["counts"] | {} == {"cases": 4, "patients": 4, "train": 1, "val": 1, "test": 2}

    started = env.client.post("/api/training", headers=headers,
                              json={"dataset_id": dataset["id"], "base": BASE_VERSION, "settings": TINY_SETTINGS})
    assert started.status_code == 202, started.text
    seen: list[dict] = []
    run = wait_for_run(env.client, started.json()["id"], env.tokens["researcher"], seen)
    assert run["status"] == "done", run
    assert run["progress"] == 1.0 and run["step"] == run["total_steps"] == 4
    assert [h["epoch"] for h in run["history"]] == [1, 2]
    assert all(0.0 <= h["val_dice"] <= 1.0 for h in run["history"])
    assert run["losses"] and all(loss > 0 for _step, loss in run["losses"])
    assert any(r["status"] in ("queued", "running") for r in seen)
    new_id = run["version_id"]

    listed = env.client.get("/api/models", headers=headers).json()
    new = next(v for v in listed["versions"] if v["id"] == new_id)
    assert new["parent_id"] == BASE_VERSION and not new["is_production"]
    assert new["dataset"] == {"id": dataset["id"], "name": "phantoms"} and new["created_by"] == "rita"
    assert new["hyperparameters"]["steps_per_epoch"] == 2
    assert listed["lineage"][0]["id"] == BASE_VERSION
    assert [c["id"] for c in listed["lineage"][0]["children"]] == [new_id]
    card = env.client.get(f"/api/models/{new_id}", headers=headers).json()["card"]
    assert {c["split"] for c in card["dataset"]["manifest"]} == {"train", "val", "test"}
    assert (card["dataset"]["name"], card["dataset"]["id"], card["dataset"]["trained_by"]) == (
        "phantoms", dataset["id"], "rita")

    locked = env.client.put(f"/api/datasets/{dataset['id']}/split", headers=headers, json={"patients": {"P3": "train"}})
    assert locked.status_code == 409 and new_id in locked.json()["detail"]

    compared = env.client.post("/api/models/compare", headers=headers,
                               json={"versions": [BASE_VERSION, new_id], "dataset_id": dataset["id"]})
    assert compared.status_code == 200, compared.text
    result = compared.json()
    assert [c["case"] for c in result["cases"]] == ["case-P3", "case-P4"]
    for case in result["cases"]:
        assert set(case["dice"]) == {BASE_VERSION, new_id} and all(s > 0 for s in case["seconds"].values())
    assert set(result["versions"][new_id]["dice_by_site"]) == {"north", "south"}
    assert result["versions"][new_id]["bland_altman_dice"]["n"] == 2
    assert "seconds_minus_reference" in result["versions"][new_id]
    plot = env.client.get(result["plots"][new_id], headers=headers)
    assert plot.status_code == 200 and plot.content[:8] == b"\x89PNG\r\n\x1a\n"

    review = env.client.get(f"/api/models/{new_id}/promotion", headers=headers).json()
    assert review["comparable"] and review["candidate"]["cases"] == review["production"]["cases"] == ["case-P2"]
    assert review["candidate"]["source"] == review["production"]["source"] == "computed"  # base was never validated
    promoted = env.client.post(f"/api/models/{new_id}/promote", headers=headers, json={"confirm": True})
    assert promoted.status_code == 200 and promoted.json()["production"] == new_id
    last = promoted.json()["history"][-1]
    assert (last["action"], last["version_id"], last["previous_id"], last["actor"]) == (
        "promote", new_id, BASE_VERSION, "rita")

    clinician = env.tokens["clinician"]
    volume, _mask = make_phantom()
    import nibabel as nib

    nib.save(nib.Nifti1Image(volume.array, volume.affine), str(tmp_path / "new.nii.gz"))
    upload = env.client.post("/api/studies", files=[("files", ("new.nii.gz", (tmp_path / "new.nii.gz").read_bytes(),
                                                               "application/gzip"))], headers=bearer(clinician))
    assert upload.status_code == 202, upload.text
    assert wait_for_job(env.client, upload.json()["job_id"], clinician)["status"] == "done"
    study = env.client.get(f"/api/studies/{upload.json()['study_id']}", headers=bearer(clinician)).json()
    assert study["model_id"] == new_id

    rerun = env.client.post(f"/api/studies/{study['id']}/rerun", json={"version": BASE_VERSION},
                            headers=bearer(clinician))
    assert rerun.status_code == 202, rerun.text
    assert wait_for_job(env.client, rerun.json()["job_id"], clinician)["status"] == "done"
    # an older version's re-run does not replace the study's result (issue 28); choosing it does
    assert env.client.get(f"/api/studies/{study['id']}", headers=bearer(clinician)).json()["model_id"] == new_id
    chosen = env.client.put(f"/api/studies/{study['id']}/current-run", json={"run_id": rerun.json()["run_id"]},
                            headers=bearer(clinician))
    assert chosen.status_code == 200, chosen.text
    assert env.client.get(f"/api/studies/{study['id']}", headers=bearer(clinician)).json()["model_id"] == BASE_VERSION

    rolled = env.client.post("/api/models/rollback", headers=headers)
    assert rolled.status_code == 200 and rolled.json()["production"] == BASE_VERSION
    assert rolled.json()["history"][-1]["action"] == "rollback"

    exported = env.client.get(f"/api/models/{new_id}/export", headers=headers)
    assert exported.status_code == 200
    assert sorted(zipfile.ZipFile(io.BytesIO(exported.content)).namelist()) == ["card.json", "weights.safetensors"]
    again = env.client.post("/api/models/import", files=[("files", ("v.zip", exported.content, "application/zip"))],
                            headers=headers)
    assert again.status_code == 422 and "already exists" in again.json()["detail"]


def test_clinician_cannot_train_or_manage_datasets_and_models(env: WebEnv) -> None:
    headers = bearer(env.tokens["clinician"])
    for method, path, body in (("post", "/api/training", {"dataset_id": "x", "base": "scratch"}),
                               ("post", "/api/datasets", {"name": "mine"}), ("get", "/api/models", None),
                               ("post", f"/api/models/{BASE_VERSION}/promote", None)):
        response = env.client.request(method.upper(), path, json=body, headers=headers)
        assert response.status_code == 403, (path, response.text)
        assert "researcher" in response.json()["detail"]
    assert env.client.get("/api/training").status_code == 401


def test_cancelling_leaves_the_registry_as_it_was_and_runs_queue_one_at_a_time(env: WebEnv, tmp_path: Path) -> None:
    headers = bearer(env.tokens["researcher"])
    registry = Registry(env.settings.registry_dir)
    before = registry.version_ids(), registry.production_id()
    dataset = make_dataset(env, "to-cancel", [("Q1", "north", 5), ("Q2", "north", 6)], tmp_path)
    long_run = {"epochs": 50, "steps_per_epoch": 100, "batch_size": 2, "patch_size": 32}
    body = {"dataset_id": dataset["id"], "base": BASE_VERSION, "settings": long_run}
    first = env.client.post("/api/training", headers=headers, json=body).json()
    second = env.client.post("/api/training", headers=headers, json=body).json()
    assert second["status"] == "queued"

    running = wait_until(env, first["id"], lambda r: r["status"] == "running" and r["eta_seconds"] is not None)
    assert running["eta_seconds"] > 0 and running["step"] > 1
    queued = env.client.get(f"/api/training/{second['id']}", headers=headers).json()
    assert queued["status"] == "queued" and queued["queue_position"] == 1

    cancelled_queued = env.client.post(f"/api/training/{second['id']}/cancel", headers=headers).json()
    assert cancelled_queued["status"] == "cancelled"
    assert env.client.post(f"/api/training/{first['id']}/cancel", headers=headers).json()["cancel_requested"]
    final = wait_for_run(env.client, first["id"], env.tokens["researcher"])
    assert final["status"] == "cancelled" and final["version_id"] is None
    assert (registry.version_ids(), registry.production_id()) == before
    log_text = env.client.get(f"/api/training/{first['id']}/log", headers=headers).text
    assert "training from tiny-base on dataset 'to-cancel'" in log_text and "nothing was registered" in log_text
    after = env.client.get(f"/api/datasets/{dataset['id']}", headers=headers).json()
    assert after["locked_by"] is None and after["split_editable"]


def test_a_run_cancelled_while_its_trainer_starts_is_cancelled_not_failed(env: WebEnv, tmp_path: Path) -> None:
    """Issue 28: the scheduler's SIGTERM backstop ended a trainer still importing (before it
    listens for the signal), and the run was listed as failed, "training process exited with
    code -15". A run whose process ends after a cancel request is cancelled."""
    headers = bearer(env.tokens["researcher"])
    registry = Registry(env.settings.registry_dir)
    before = registry.version_ids()
    dataset = make_dataset(env, "cancel-early", [("E1", "north", 7), ("E2", "north", 8)], tmp_path)
    body = {"dataset_id": dataset["id"], "base": BASE_VERSION,
            "settings": {"epochs": 50, "steps_per_epoch": 100, "batch_size": 2, "patch_size": 32}}
    run = env.client.post("/api/training", headers=headers, json=body).json()
    wait_until(env, run["id"], lambda r: r["status"] == "running")  # claimed; its process is starting
    asked = env.client.post(f"/api/training/{run['id']}/cancel", headers=headers)
    assert asked.status_code == 200 and asked.json()["cancel_requested"]
    final = wait_for_run(env.client, run["id"], env.tokens["researcher"])
    assert final["status"] == "cancelled", final
    assert "exited with code" not in final["error"] and "nothing was registered" in final["error"]
    assert final["version_id"] is None and registry.version_ids() == before
    listed = {r["id"]: r for r in env.client.get("/api/training", headers=headers).json()}
    assert listed[run["id"]]["status"] == "cancelled"
    unknown = env.client.post(f"/api/training/{'0' * 32}/cancel", headers=headers)
    assert unknown.status_code == 404 and "0" * 32 in unknown.json()["detail"]


def wait_until(env: WebEnv, run_id: str, condition, timeout_s: float = 60) -> dict:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = env.client.get(f"/api/training/{run_id}", headers=bearer(env.tokens["researcher"])).json()
        if condition(run):
            return run
        assert run["status"] in ("queued", "running"), run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} never reached the condition: {run}")
