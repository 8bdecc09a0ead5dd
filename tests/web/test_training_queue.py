"""Training runs across server restarts: a queued run survives a stop, a running run stopped
with the server resumes from its last finished epoch; training from scratch; the OpenAPI
document lists the new routes; bad starts are refused with the reason."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from spineseg.registry import Registry
from spineseg.web.app import create_app
from tests.web.training_helpers import BASE_VERSION, TINY_SETTINGS, case_parts, register_tiny_base, wait_for_run
from tests.web.web_helpers import add_user, bearer, make_settings


def phantom_dataset(client: TestClient, token: str, tmp_path: Path, name: str = "restart") -> str:
    headers = bearer(token)
    dataset_id = client.post("/api/datasets", json={"name": name}, headers=headers).json()["id"]
    for patient, seed in (("R1", 1), ("R2", 2)):
        response = client.post(f"/api/datasets/{dataset_id}/cases", files=case_parts(tmp_path / patient, seed),
                               data={"patient": patient}, headers=headers)
        assert response.status_code == 201, response.text
    client.put(f"/api/datasets/{dataset_id}/split", json={"patients": {"R1": "train", "R2": "val"}}, headers=headers)
    return dataset_id


@pytest.mark.slow
def test_runs_survive_a_restart_and_a_stopped_run_resumes(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", workers=0)
    register_tiny_base(settings)
    token = add_user(settings, "rory", "researcher")
    headers = bearer(token)
    with TestClient(create_app(settings)) as client:  # no worker: the run waits in the queue
        dataset_id = phantom_dataset(client, token, tmp_path)
        body = {"dataset_id": dataset_id, "base": BASE_VERSION,
                "settings": {"epochs": 2, "steps_per_epoch": 20, "batch_size": 2, "patch_size": 32}}
        run_id = client.post("/api/training", json=body, headers=headers).json()["id"]
        time.sleep(1.0)
        assert client.get(f"/api/training/{run_id}", headers=headers).json()["status"] == "queued"

    running = settings.__class__(**{**settings.__dict__, "workers": 1})
    with TestClient(create_app(running)) as client:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            run = client.get(f"/api/training/{run_id}", headers=headers).json()
            if len(run["history"]) >= 1:
                break
            assert run["status"] in ("queued", "running"), run
            time.sleep(0.1)
        first_epoch = run["history"][0]
    # leaving the block stopped the server: the training process checkpointed and re-queued itself
    with TestClient(create_app(settings)) as client:
        stopped = client.get(f"/api/training/{run_id}", headers=headers).json()
    assert stopped["status"] == "queued" and "resumes" in stopped["stage"], stopped
    assert stopped["version_id"] is None and Registry(settings.registry_dir).version_ids() == [BASE_VERSION]

    with TestClient(create_app(running)) as client:
        final = wait_for_run(client, run_id, token)
        assert final["status"] == "done", final
        assert [h["epoch"] for h in final["history"]] == [1, 2]
        assert final["history"][0] == first_epoch  # kept from before the stop, not trained again
        log_text = client.get(f"/api/training/{run_id}/log", headers=headers).text
        assert "resumed from" in log_text
        card = client.get(f"/api/models/{final['version_id']}", headers=headers).json()["card"]
        assert card["parent_id"] == BASE_VERSION and card["metrics"]["epochs_run"] == 2


def test_scratch_training_bad_starts_and_the_api_document(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    register_tiny_base(settings)
    token = add_user(settings, "rory", "researcher")
    headers = bearer(token)
    with TestClient(create_app(settings)) as client:
        dataset_id = phantom_dataset(client, token, tmp_path, name="scratchy")
        for body, message in (({"dataset_id": "nope", "base": "scratch"}, "no dataset"),
                              ({"dataset_id": dataset_id, "base": "v-missing"}, "no model version 'v-missing'"),
                              ({"dataset_id": dataset_id, "base": "scratch", "settings": {"epochs": 0}}, "epochs")):
            refused = client.post("/api/training", json=body, headers=headers)
            assert refused.status_code == 422 and message in refused.json()["detail"], refused.text
        empty = client.post("/api/datasets", json={"name": "empty"}, headers=headers).json()["id"]
        refused = client.post("/api/training", json={"dataset_id": empty, "base": "scratch"}, headers=headers)
        assert refused.status_code == 422 and "has no cases" in refused.json()["detail"]

        started = client.post("/api/training", headers=headers,
                              json={"dataset_id": dataset_id, "base": "scratch", "settings": TINY_SETTINGS})
        run = wait_for_run(client, started.json()["id"], token)
        assert run["status"] == "done", run
        version = client.get(f"/api/models/{run['version_id']}", headers=headers).json()
        assert version["parent_id"] is None and version["architecture"] == "monai.UNet"
        tree = client.get("/api/models", headers=headers).json()["lineage"]
        assert {node["id"] for node in tree} == {BASE_VERSION, run["version_id"]}  # two roots

        document = client.get("/openapi.json", headers=headers).json()
        for path in ("/api/datasets", "/api/datasets/{dataset_id}/cases", "/api/datasets/{dataset_id}/split",
                     "/api/training", "/api/training/{run_id}", "/api/training/{run_id}/cancel", "/api/models",
                     "/api/models/compare", "/api/models/{version_id}/promote", "/api/models/rollback",
                     "/api/models/{version_id}/export", "/api/models/import", "/api/studies/{study_id}/rerun",
                     "/api/evaluation/by-site"):
            assert path in document["paths"], path
        upload = document["paths"]["/api/datasets/{dataset_id}/cases"]["post"]
        assert "patient" in upload["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]


def test_a_failed_run_names_the_problem_and_registers_nothing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    register_tiny_base(settings)
    token = add_user(settings, "rory", "researcher")
    with TestClient(create_app(settings)) as client:
        dataset_id = phantom_dataset(client, token, tmp_path, name="broken")
        case = client.get(f"/api/datasets/{dataset_id}", headers=bearer(token)).json()["cases"][0]
        ct_folder = settings.data_dir / "datasets" / dataset_id / case["id"] / "ct"
        for file in ct_folder.iterdir():
            file.unlink()  # the CT vanished from the disk after it was added
        started = client.post("/api/training", headers=bearer(token),
                              json={"dataset_id": dataset_id, "base": BASE_VERSION, "settings": TINY_SETTINGS})
        run = wait_for_run(client, started.json()["id"], token)
        assert run["status"] == "failed" and "no such file" in run["error"] and "ct.nii.gz" in run["error"]
        assert run["version_id"] is None
        assert Registry(settings.registry_dir).version_ids() == [BASE_VERSION]
        assert client.get(f"/api/datasets/{dataset_id}", headers=bearer(token)).json()["split_editable"]
