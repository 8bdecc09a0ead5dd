"""No stray paths or blanks: the shipped model's card names its cases by dataset-relative names,
and what a researcher sees of a real training run (its page and log, the card of the version
it registered, the models page, the promotion page, the dataset page) shows no absolute server
path, no Python ``None`` and no empty slot such as "with  in"."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from spineseg.model.card import ModelCard, sha256_file
from spineseg.registry import shipped_default_dir
from spineseg.web.app import create_app
from tests.conftest import REPO
from tests.web.conftest import WebEnv
from tests.web.test_sessions_and_pages import HTML
from tests.web.training_helpers import BASE_VERSION, TINY_SETTINGS, case_parts, register_tiny_base, wait_for_run
from tests.web.web_helpers import add_user, bearer, make_settings

ABSOLUTE = re.compile(r"(?<![\w.:/~-])/(?:work|tmp|home|root|srv|var|usr|opt|mnt|data)/")
BLANKS = [re.compile(r"\bNone\b"), re.compile(r"\bwith\s{2,}in\b"), re.compile(r"\b(?:with|from|on|by) +(?:[,;.)]|$)",
                                                                            re.M)]


def stray(text: str, where: str, *folders: Path) -> list[str]:
    """What is wrong in ``text``: absolute paths (generic or one of ``folders``) and blanks."""
    problems = [f"{where}: absolute path {m.group(0)!r} near {text[max(0, m.start() - 40):m.end() + 40]!r}"
                for m in ABSOLUTE.finditer(text)]
    problems += [f"{where}: names {folder}" for folder in folders if str(folder) in text]
    problems += [f"{where}: blank {m.group(0)!r} near {text[max(0, m.start() - 60):m.end() + 20]!r}"
                 for pattern in BLANKS for m in pattern.finditer(text)]
    return problems


def test_the_shipped_card_names_cases_relative_to_the_dataset_and_its_weights_still_verify() -> None:
    folder = shipped_default_dir()
    text = (folder / "card.json").read_text()
    assert stray(text, "card.json", REPO, REPO.parent) == []
    card = ModelCard.read(folder / "card.json")
    for entry in card.dataset["manifest"]:
        for key in ("ct", "labels"):
            assert entry[key].startswith(entry["name"] + "/") and not Path(entry[key]).is_absolute(), entry
    assert sha256_file(folder / "weights.safetensors") == card.weights_sha256


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebEnv]:
    settings = make_settings(tmp_path_factory.mktemp("stray-data"))
    register_tiny_base(settings)
    tokens = {"researcher": add_user(settings, "rolf", "researcher")}
    with TestClient(create_app(settings)) as client:
        yield WebEnv(settings, client, tokens)


def test_a_training_run_shows_no_server_path_and_no_blank(env: WebEnv, tmp_path: Path) -> None:
    headers = bearer(env.tokens["researcher"])
    dataset = env.client.post("/api/datasets", json={"name": "stray-set"}, headers=headers).json()
    for patient, seed in (("A", 1), ("B", 2)):
        added = env.client.post(f"/api/datasets/{dataset['id']}/cases", files=case_parts(tmp_path / patient, seed),
                                data={"patient": patient, "name": f"case-{patient}"}, headers=headers)
        assert added.status_code == 201, added.text
    split = env.client.put(f"/api/datasets/{dataset['id']}/split", headers=headers,
                           json={"patients": {"A": "train", "B": "val"}})
    assert split.status_code == 200, split.text
    started = env.client.post("/api/training", headers=headers, json={
        "dataset_id": dataset["id"], "base": BASE_VERSION, "settings": TINY_SETTINGS | {"epochs": 1},
        "notes": "stray-path check"})
    assert started.status_code == 202, started.text
    run = wait_for_run(env.client, started.json()["id"], env.tokens["researcher"])
    assert run["status"] == "done", run
    version_id = run["version_id"]

    log = env.client.get(f"/api/training/{run['id']}/log", headers=headers).text
    assert "segmented" in log and "warmup_steps 1" in log  # the lines this test is about are there
    assert re.search(r"segmented \S+ with the model being trained in", log), log
    shown = {
        "run log": log,
        "run page": env.client.get(f"/training/{run['id']}", headers=headers | HTML).text,
        "run API": json.dumps(env.client.get(f"/api/training/{run['id']}", headers=headers).json()),
        "version API": json.dumps(env.client.get(f"/api/models/{version_id}", headers=headers).json()),
        "models page": env.client.get("/models", headers=headers | HTML).text,
        "promotion page": env.client.get(f"/models/{version_id}/promote", headers=headers | HTML).text,
        "dataset page": env.client.get(f"/datasets/{dataset['id']}", headers=headers | HTML).text,
        "training page": env.client.get("/training", headers=headers | HTML).text,
    }
    assert 'id="run-notes"' in shown["run page"] and "stray-path check" in shown["run page"]  # run notes shown
    data_dir = env.settings.data_dir.resolve()
    problems = [p for where, text in shown.items() for p in stray(text, where, data_dir, tmp_path, REPO)]
    assert problems == []
    card = env.client.get(f"/api/models/{version_id}", headers=headers).json()["card"]
    assert {(e["name"], e["ct"]) for e in card["dataset"]["manifest"]} == {("case-A", "case-A/ct.nii.gz"),
                                                                          ("case-B", "case-B/ct.nii.gz")}
