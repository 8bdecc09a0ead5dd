"""Helpers for the training/model tests: a data directory whose production model is a tiny
real network (fast to fine-tune and to segment with), phantom cases to upload, polling."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from spineseg.config import Settings
from spineseg.model.card import ModelCard
from spineseg.registry import Registry
from tests.conftest import make_model_folder
from tests.model.conftest import write_phantom_case
from tests.web.web_helpers import bearer

BASE_VERSION = "tiny-base"
TINY_SETTINGS = {"epochs": 2, "steps_per_epoch": 2, "batch_size": 2, "patch_size": 32}
RUN_TIMEOUT_S = 120


def register_tiny_base(settings: Settings, version_id: str = BASE_VERSION, *, seed: int = 0) -> str:
    """A tiny untrained network (``TINY_ARCHITECTURE``) registered as production."""
    folder = make_model_folder(settings.data_dir / f"{version_id}-src", model_id=version_id, seed=seed)
    settings.registry_dir.mkdir(parents=True, exist_ok=True)
    card = ModelCard.read(folder / "card.json")
    return Registry(settings.registry_dir).register(folder / "weights.safetensors", card, make_production=True,
                                                    actor="test").id


def case_parts(folder: Path, seed: int) -> list[tuple[str, tuple[str, bytes, str]]]:
    """Multipart parts of a phantom case: the CT as ``files`` and its labels as ``truth``."""
    ct, labels = write_phantom_case(folder, seed=seed)
    return [("files", ("ct.nii.gz", ct.read_bytes(), "application/gzip")),
            ("truth", ("labels.nii.gz", labels.read_bytes(), "application/gzip"))]


def wait_for_run(client: TestClient, run_id: str, token: str, seen: list[dict] | None = None) -> dict:
    """Poll the run until it ends; every answer is appended to ``seen`` when given."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        run = client.get(f"/api/training/{run_id}", headers=bearer(token)).json()
        if seen is not None:
            seen.append(run)
        if run["status"] in ("done", "failed", "cancelled"):
            return run
        time.sleep(0.2)
    raise AssertionError(f"training run {run_id} did not end in {RUN_TIMEOUT_S} s: {run}")


def wait_for_job(client: TestClient, job_id: str, token: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}", headers=bearer(token)).json()
        if job["status"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end in {timeout_s} s: {job}")
