"""Issue 32 item 3, the loop closed end to end: a correction saved through the API on a real run,
a dataset of every corrected study made in one step, a real (tiny) training run on it started
through the API, the new version's card naming the correction it saw (study and version), and
the evaluation marking that study as seen in training for a run of the new version only.
The shared tptbox-lumbar case: its CT segmented by the tiny base network, its real VerSe labels
saved as the correction."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Callable, Iterator

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from spineseg.config import Settings
from spineseg.web.app import create_app
from tests.conftest import CASES
from tests.web.conftest import WebEnv
from tests.web.training_helpers import BASE_VERSION, register_tiny_base, wait_for_job, wait_for_run
from tests.web.web_helpers import add_user, bearer, make_settings

CASE = CASES / "tptbox-lumbar"
TINY = {"epochs": 1, "steps_per_epoch": 3, "batch_size": 2, "patch_size": 64}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, backends: Callable[[Settings], Settings]) -> Iterator[WebEnv]:
    if not CASE.is_dir():
        pytest.skip(f"shared data not found at {CASE} (set SPINESEG_SHARED_DATA)")
    settings = backends(make_settings(tmp_path_factory.mktemp("loop-data"), max_upload_bytes=64 * 2**20))
    register_tiny_base(settings)
    tokens = {"clinician": add_user(settings, "carla", "clinician"),
              "researcher": add_user(settings, "rosa", "researcher")}
    with TestClient(create_app(settings)) as client:
        yield WebEnv(settings, client, tokens)


def test_a_correction_trains_a_version_whose_card_names_it_and_the_evaluation_marks_it(env: WebEnv) -> None:
    clinician, researcher = bearer(env.tokens["clinician"]), bearer(env.tokens["researcher"])
    ct = next(CASE.glob("*_ct.nii.gz"))
    upload = env.client.post("/api/studies", files=[("files", ("ct.nii.gz", ct.read_bytes(), "application/gzip"))],
                             data={"name": "lumbar loop"}, headers=clinician)
    assert upload.status_code == 202, upload.text
    assert wait_for_job(env.client, upload.json()["job_id"], env.tokens["clinician"], 180)["status"] == "done"
    study_id = upload.json()["study_id"]
    base_run = env.client.get(f"/api/studies/{study_id}/runs", headers=clinician).json()[0]
    assert base_run["model_version"] == BASE_VERSION

    truth = nib.load(str(next(CASE.glob("*_seg-vert_*_msk.nii.gz"))))
    labels = np.asarray(truth.dataobj).astype(np.int16)
    saved = env.client.post(f"/api/studies/{study_id}/corrections", params={"run": base_run["id"], "edit_seconds": 30},
                            content=gzip.compress(nib.Nifti1Image(labels, truth.affine).to_bytes()),
                            headers=clinician | {"Content-Type": "application/octet-stream"})
    assert saved.status_code == 201, saved.text
    version = saved.json()["version"]

    dataset = env.client.post("/api/datasets", json={"name": "corrected studies"}, headers=researcher).json()
    added = env.client.post(f"/api/datasets/{dataset['id']}/cases/from-corrections", headers=researcher)
    assert added.status_code == 201, added.text
    assert [a["study_id"] for a in added.json()["added"]] == [study_id]
    case = added.json()["dataset"]["cases"][0]
    split = env.client.put(f"/api/datasets/{dataset['id']}/split", json={"patients": {case["patient"]: "train"}},
                           headers=researcher)
    assert split.status_code == 200, split.text

    started = env.client.post("/api/training", headers=researcher,
                              json={"dataset_id": dataset["id"], "base": BASE_VERSION, "settings": TINY})
    assert started.status_code in (201, 202), started.text
    run = wait_for_run(env.client, started.json()["id"], env.tokens["researcher"])
    assert run["status"] == "done", run
    trained = env.client.get(f"/api/models/{run['version_id']}", headers=researcher).json()
    manifest = trained["card"]["dataset"]["manifest"]
    print("card manifest of", run["version_id"], json.dumps(manifest, indent=1))
    # exactly the one correction it saw: the study (its id's first 8 characters) and the version
    assert [(m["name"], m["split"]) for m in manifest] == [(f"study {study_id[:8]} correction v{version}",
                                                           "train")]
    assert manifest[0]["patient"] == case["patient"]

    rerun = env.client.post(f"/api/studies/{study_id}/rerun", json={"version": run["version_id"]}, headers=clinician)
    assert rerun.status_code == 202, rerun.text
    assert wait_for_job(env.client, rerun.json()["job_id"], env.tokens["clinician"], 180)["status"] == "done"
    new_run = rerun.json()["run_id"]

    def row(model: str) -> dict:
        got = env.client.get("/api/evaluation", params={"ids": study_id, "model": model}, headers=researcher)
        assert got.status_code == 200, got.text
        return got.json()["cases"][0]

    marked, unmarked = row(run["version_id"]), row(BASE_VERSION)
    assert marked["run_id"] == new_run and marked["truth"] == f"correction v{version}"
    assert marked["in_training"] is True
    assert unmarked["run_id"] == base_run["id"] and unmarked["in_training"] is False
    for model, seen in ((run["version_id"], "yes"), (BASE_VERSION, "no")):  # the CSV says the same
        got = env.client.get("/api/evaluation.csv", params={"ids": study_id, "model": model}, headers=researcher)
        line = next(csv.DictReader(io.StringIO(got.text)))
        assert (line["truth"], line["in_training"]) == (f"correction v{version}", seen)
    listed = env.client.get(f"/api/studies/{study_id}/corrections", headers=researcher).json()
    # the base version never saw it; the version trained on the correction did
    assert listed["runs_in_training"] == {base_run["id"]: False, new_run: True}
    excluded = env.client.get("/api/evaluation", headers=researcher,
                              params={"ids": study_id, "model": run["version_id"], "exclude_training": "true"}).json()
    assert excluded["cases_in_means"] == 0
