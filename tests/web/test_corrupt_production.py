"""A registry whose production weights are damaged on disk (issue 30.6): work that cannot run
is refused with the reason (503), never accepted to fail later; the model routes answer with
the reason, never 500; the remedy (promote another version) works and work is taken again."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from spineseg.config import Settings
from spineseg.model.card import CARD_FILE, ModelCard
from spineseg.model.network import build_network, save_weights
from spineseg.registry import Registry
from spineseg.web.app import create_app
from tests.web.conftest import WebEnv
from tests.web.test_api_studies import phantom_nifti, wait_for_job
from tests.web.web_helpers import UNTRAINED_ARCHITECTURE, add_user, bearer, make_settings, register_test_model

SPARE = "test-spare"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, backends: Callable[[Settings], Settings]) -> Iterator[WebEnv]:
    settings = backends(make_settings(tmp_path_factory.mktemp("corrupt-production")))
    register_test_model(settings)
    folder = settings.data_dir / "spare-model"
    torch.manual_seed(7)
    save_weights(build_network(UNTRAINED_ARCHITECTURE), folder / "weights.safetensors")
    card = ModelCard(id=SPARE, architecture=UNTRAINED_ARCHITECTURE)
    (folder / CARD_FILE).write_text(card.to_json())
    Registry(settings.registry_dir).register(folder / "weights.safetensors", card, actor="test")
    tokens = {"clinician": add_user(settings, "cleo", "clinician"),
              "researcher": add_user(settings, "rosa", "researcher"), "admin": add_user(settings, "ada", "admin")}
    with TestClient(create_app(settings)) as client:
        yield WebEnv(settings, client, tokens)


def _damage(weights: Path) -> None:
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of a tensor: still parses, wrong hash
    weights.write_bytes(bytes(data))


def _refused_for_the_weights(response: object, status: int = 503) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert "test-untrained" in detail and "sha256" in detail, detail
    assert "/" + "tmp" not in detail  # no server path


def test_work_is_refused_with_the_reason_until_another_version_is_promoted(env: WebEnv, tmp_path: Path) -> None:
    clinician = bearer(env.tokens["clinician"])
    ct, _truth = phantom_nifti(tmp_path)
    files = [("files", ("ct.nii.gz", ct, "application/gzip"))]
    before = env.client.post("/api/studies", files=files, headers=clinician)
    assert before.status_code == 202, before.text
    study_id = before.json()["study_id"]
    assert wait_for_job(env, before.json()["job_id"], env.tokens["clinician"])["status"] == "done"
    announced = env.client.post("/api/uploads", json={"files": [{"name": "ct.nii.gz", "size": len(ct)}]},
                                headers=clinician).json()
    assert env.client.put(f"/api/uploads/{announced['upload_id']}/files/0?offset=0", content=ct,
                          headers=clinician).json()["complete"]

    _damage(env.settings.registry_dir / "versions" / "test-untrained" / "weights.safetensors")
    health = env.client.app.state.health.check_now().to_json()
    assert health["status"] == "unavailable" and health["checks"]["production_model"]["status"] == "fail"

    _refused_for_the_weights(env.client.post("/api/studies", files=files, headers=clinician))
    _refused_for_the_weights(env.client.post("/api/uploads", json={"files": [{"name": "a.nii.gz", "size": 9}]},
                                             headers=clinician))
    _refused_for_the_weights(env.client.post(f"/api/uploads/{announced['upload_id']}/complete", headers=clinician))
    _refused_for_the_weights(env.client.post(f"/api/studies/{study_id}/rerun", json={}, headers=clinician))
    runs = env.client.get(f"/api/studies/{study_id}/runs", headers=clinician).json()
    assert len(runs) == 1  # nothing was queued to fail
    kept = env.client.get(f"/api/uploads/{announced['upload_id']}", headers=clinician).json()
    assert kept["status"] == "uploading" and kept["received_bytes"] == len(ct)  # the upload waits, intact

    # the model routes say what is wrong instead of 500
    researcher = bearer(env.tokens["researcher"])
    shown = env.client.get("/api/models/test-untrained", headers=researcher)
    assert shown.status_code == 200, shown.text
    assert shown.json()["weights"]["verified"] is False and "sha256" in shown.json()["weights"]["problem"]
    assert env.client.get(f"/api/models/{SPARE}", headers=researcher).json()["weights"] == {
        "verified": True, "problem": None}
    _refused_for_the_weights(env.client.get("/api/models/test-untrained/export", headers=researcher), 409)
    assert env.client.patch("/api/models/test-untrained", json={"display_name": "damaged"},
                            headers=researcher).status_code == 200
    review = env.client.get(f"/api/models/{SPARE}/promotion", headers=researcher)
    assert review.status_code == 200, review.text
    assert any("test-untrained cannot be used" in w for w in review.json()["warnings"]), review.json()
    assert env.client.get("/api/models", headers=researcher).status_code == 200

    # the remedy: promote the spare (the admin forces: it has no validation figures); work is taken again
    promoted = env.client.post(f"/api/models/{SPARE}/promote", json={"force": True, "confirm": True},
                               headers=bearer(env.tokens["admin"]))
    assert promoted.status_code == 200, promoted.text
    completed = env.client.post(f"/api/uploads/{announced['upload_id']}/complete", headers=clinician)
    assert completed.status_code == 202, completed.text
    rerun = env.client.post(f"/api/studies/{study_id}/rerun", json={}, headers=clinician)
    assert rerun.status_code == 202 and rerun.json()["model_version"] == SPARE, rerun.text
    assert wait_for_job(env, rerun.json()["job_id"], env.tokens["clinician"])["status"] == "done"
    _refused_for_the_weights(env.client.post(f"/api/studies/{study_id}/rerun", json={"version": "test-untrained"},
                                             headers=clinician))
