"""Helpers for the kill -9 tests against a real ``spineseg serve``: which processes still
mention a data directory, waiting with deadlines, a phantom dataset over HTTP, and the
registry versions a training run registered."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from spineseg.jobs.processes import process_alive
from spineseg.registry import Registry
from tests.web.training_helpers import case_parts
from tests.web.web_helpers import bearer


def live_pids_mentioning(text: str) -> list[int]:
    """Live processes (zombies excluded) other than this one whose command line or environment
    contains ``text``: the server (SPINESEG_DATA_DIR) and its trainers (--data-dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            blob = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if text.encode() in blob and process_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.1) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def make_http_dataset(url: str, token: str, tmp_path: Path, name: str = "faults") -> str:
    """A dataset of two phantom cases (one train, one val patient) created over the API."""
    headers = bearer(token)
    dataset_id = httpx.post(f"{url}/api/datasets", json={"name": name}, headers=headers, timeout=30).json()["id"]
    for patient, seed in (("F1", 1), ("F2", 2)):
        added = httpx.post(f"{url}/api/datasets/{dataset_id}/cases", files=case_parts(tmp_path / patient, seed),
                           data={"patient": patient, "convention": "totalsegmentator"}, headers=headers, timeout=60)
        assert added.status_code == 201, added.text
    split = httpx.put(f"{url}/api/datasets/{dataset_id}/split", json={"patients": {"F1": "train", "F2": "val"}},
                      headers=headers, timeout=30)
    assert split.status_code == 200, split.text
    return dataset_id


def start_http_run(url: str, token: str, dataset_id: str, base: str, settings: dict[str, int]) -> str:
    started = httpx.post(f"{url}/api/training", headers=bearer(token), timeout=30,
                         json={"dataset_id": dataset_id, "base": base, "settings": settings})
    assert started.status_code == 202, started.text
    return started.json()["id"]


def get_run_http(url: str, token: str, run_id: str) -> dict:
    return httpx.get(f"{url}/api/training/{run_id}", headers=bearer(token), timeout=30).json()


def wait_run_ended(url: str, token: str, run_id: str, timeout_s: float = 180) -> dict:
    def ended() -> dict | None:
        run = get_run_http(url, token, run_id)
        return run if run["status"] in ("done", "failed", "cancelled") else None
    return wait_until(ended, timeout_s, f"training run {run_id} to end", poll_s=0.3)


def versions_of_run(registry_dir: Path, run_id: str) -> list[str]:
    """Ids of every registry version whose card names ``run_id``."""
    return [m.id for m in Registry(registry_dir).list_versions() if m.card.training_run_id == run_id]
