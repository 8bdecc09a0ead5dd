"""A job accepted before the server stops is finished after it starts again (real
``spineseg serve`` subprocesses sharing one data directory)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import nibabel as nib
import pytest

from tests.conftest import make_phantom
from tests.web.live_server import LiveServer
from tests.web.web_helpers import add_user, bearer, make_settings, register_test_model


@pytest.mark.slow
def test_job_queued_before_a_restart_finishes_after_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    settings = make_settings(data_dir)
    register_test_model(settings)
    token = add_user(settings, "carla", "clinician")
    volume, _mask = make_phantom()
    nib.save(nib.Nifti1Image(volume.array, volume.affine), str(tmp_path / "ct.nii.gz"))

    server = LiveServer(data_dir)
    server.start(SPINESEG_WORKERS="0")  # accepts the job but runs nothing: it stays queued
    try:
        response = httpx.post(f"{server.url}/api/studies", headers=bearer(token), timeout=30,
                              files=[("files", ("ct.nii.gz", (tmp_path / "ct.nii.gz").read_bytes()))])
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        status = httpx.get(f"{server.url}/api/jobs/{job_id}", headers=bearer(token)).json()
        assert status["status"] == "queued" and status["queue_position"] == 1
    finally:
        server.stop()

    server.start(SPINESEG_WORKERS="1")
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            status = httpx.get(f"{server.url}/api/jobs/{job_id}", headers=bearer(token)).json()
            if status["status"] not in ("queued", "running"):
                break
            time.sleep(0.3)
        assert status["status"] == "done", status
        mask = httpx.get(f"{server.url}/api/studies/{status['study_id']}/mask.nii.gz", headers=bearer(token))
        assert mask.status_code == 200 and len(mask.content) > 0
    finally:
        server.stop()
