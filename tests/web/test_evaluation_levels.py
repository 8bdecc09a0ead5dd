"""Level scores on the evaluation (API, CSV, page) for a study whose truth names every vertebra:
a real upload of ts-abdomen-small (P1, TotalSegmentator ids T11..L2) with its truth, segmented by
the shipped default model; a binary truth of the same scan gets no level scores, with a reason."""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from spineseg.imaging.io import load_labels
from spineseg.imaging.volume import Volume
from spineseg.metrics.levels import named_only, score_levels
from spineseg.web.app import create_app
from tests.conftest import CASES
from tests.web.conftest import WebEnv
from tests.web.test_api_studies import wait_for_job
from tests.web.test_sessions_and_pages import logged_in_client
from tests.web.web_helpers import add_user, bearer, make_settings

NIFTI = "application/gzip"
TRUE_LEVELS = {"T11", "T12", "L1", "L2"}  # ts-abdomen-small's truth: TotalSegmentator 30..33


@pytest.fixture(scope="module")
def shipped_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebEnv]:
    """The real app on an empty registry: the shipped default model is production."""
    settings = make_settings(tmp_path_factory.mktemp("levels-eval"), max_upload_bytes=64 * 2**20)
    tokens = {role: add_user(settings, role, role) for role in ("clinician", "researcher")}
    with TestClient(create_app(settings)) as client:
        yield WebEnv(settings, client, tokens)


def _upload(env: WebEnv, ct: bytes, truth_name: str, truth: bytes) -> str:
    token = env.tokens["clinician"]
    parts = [("files", ("ct.nii.gz", ct, NIFTI)), ("truth", (truth_name, truth, NIFTI))]
    response = env.client.post("/api/studies", files=parts, headers=bearer(token))
    assert response.status_code in (200, 201, 202), response.text
    ids = response.json()
    assert wait_for_job(env, ids["job_id"], token)["status"] == "done"
    return ids["study_id"]


@pytest.fixture(scope="module")
def studies(shipped_env: WebEnv) -> dict[str, str]:
    if not CASES.is_dir():
        pytest.skip(f"shared data not found at {CASES} (set SPINESEG_SHARED_DATA)")
    folder = CASES / "ts-abdomen-small"
    ct = (folder / "ct.nii.gz").read_bytes()
    labels = nib.load(str(folder / "labels.nii.gz"))
    binary = nib.Nifti1Image((np.asarray(labels.dataobj) > 0).astype(np.uint8), labels.affine)
    return {"levels": _upload(shipped_env, ct, "labels.nii.gz", (folder / "labels.nii.gz").read_bytes()),
            "binary": _upload(shipped_env, ct, "binary.nii.gz", gzip.compress(binary.to_bytes()))}


def test_level_scores_in_the_evaluation_json_match_the_run_levels_against_the_truth(
        shipped_env: WebEnv, studies: dict[str, str], shared_cases: Path) -> None:
    client, token = shipped_env.client, shipped_env.tokens["researcher"]
    data = client.get("/api/evaluation", params={"ids": studies["levels"]}, headers=bearer(token)).json()
    scores = data["cases"][0]["levels"]
    assert set(scores["per_vertebra"]) == TRUE_LEVELS and scores["true_vertebrae"] == 4
    # The same scores again, from the run's levels.nii.gz download and the truth file.
    study = client.get(f"/api/studies/{studies['levels']}", headers=bearer(token)).json()
    download = client.get(study["downloads"]["levels"], headers=bearer(token))
    image = nib.Nifti1Image.from_bytes(gzip.decompress(download.content))
    levels = np.asarray(image.dataobj).astype(np.int32)
    truth = load_labels(shared_cases / "ts-abdomen-small" / "labels.nii.gz",
                        Volume(np.zeros(levels.shape, np.float32), image.affine)).vertebrae
    expected = score_levels(named_only(levels), truth, image.affine)
    assert scores["identification_rate"] == pytest.approx(expected.identification_rate)
    for entry in expected.per_vertebra.values():
        got = scores["per_vertebra"][entry["name"]]
        assert got["dice"] == pytest.approx(entry["dice"]) and got["identified"] == entry["identified"]
    # The shipped model's mask of P1 is named from its T12 (bench/levels.py): some vertebra is found.
    assert scores["named"] is True and scores["identified"] >= 1
    assert max(e["dice"] for e in scores["per_vertebra"].values()) > 0.5
    pooled = data["levels"]
    assert pooled["cases"] == 1 and pooled["identified"] == scores["identified"]
    assert list(pooled["per_vertebra"]) == ["T11", "T12", "L1", "L2"]  # head to foot


def test_level_csv_and_page_show_each_vertebra_and_a_binary_truth_gets_none(
        shipped_env: WebEnv, studies: dict[str, str]) -> None:
    client, token = shipped_env.client, shipped_env.tokens["researcher"]
    both = f"{studies['levels']},{studies['binary']}"
    table = client.get("/api/evaluation/levels.csv", params={"ids": both}, headers=bearer(token))
    assert table.status_code == 200
    rows = list(csv.DictReader(io.StringIO(table.text)))
    assert {r["vertebra"] for r in rows} == TRUE_LEVELS and {r["study_id"] for r in rows} == {studies["levels"]}
    assert all(r["identified"] in ("yes", "no") and 0.0 <= float(r["dice"]) <= 1.0 for r in rows)

    data = client.get("/api/evaluation", params={"ids": both}, headers=bearer(token)).json()
    by_id = {case["study_id"]: case for case in data["cases"]}
    assert by_id[studies["binary"]]["levels"] is None and by_id[studies["binary"]]["metrics"]["dice"] is not None
    refused = client.get("/api/evaluation/levels.csv", params={"ids": studies["binary"]}, headers=bearer(token))
    assert refused.status_code == 404 and "does not name each vertebra" in refused.json()["detail"]

    client = logged_in_client(shipped_env, "researcher")
    page = client.get("/evaluation", params={"ids": both})
    assert page.status_code == 200 and 'id="levels-table"' in page.text
    assert all(f'data-vertebra="{name}"' in page.text for name in TRUE_LEVELS)
    assert "/api/evaluation/levels.csv?ids=" in page.text
    alone = client.get("/evaluation", params={"ids": studies["binary"]})
    assert "None of the chosen studies has level scores" in alone.text
