"""A real ``spineseg serve`` under concurrent pollers and uploads answers every request and
finishes every job; SIGTERM stops it within its deadline whatever it is doing, and the job it
interrupted finishes after the restart. Bounded: fixed request counts, timeouts everywhere."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest

from spineseg.cli.serve_cmd import HARD_DEADLINE_S
from tests.conftest import make_phantom
from tests.web.live_server import LiveServer
from tests.web.web_helpers import add_user, bearer, make_settings, register_test_model

POLLERS = 12
REQUESTS_PER_POLLER = 40
UPLOADS = 3
REQUEST_TIMEOUT_S = 30.0


def write_ct(path: Path, shape: tuple[int, int, int] = (48, 40, 24)) -> bytes:
    volume, _mask = make_phantom(shape)
    nib.save(nib.Nifti1Image(volume.array.astype(np.int16), volume.affine), str(path))
    return path.read_bytes()


def wait_for_job(client: httpx.Client, job_id: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout_s} s")


@pytest.mark.slow
def test_every_request_is_answered_and_every_job_finishes_under_load(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    register_test_model(settings)
    tokens = [add_user(settings, f"user{n}", "clinician") for n in range(2)]
    ct = write_ct(tmp_path / "ct.nii.gz")
    server = LiveServer(settings.data_dir)
    server.start()
    outcomes: list[tuple[str, int | str]] = []
    lock = threading.Lock()
    job_ids: list[str] = []

    def note(route: str, outcome: int | str) -> None:
        with lock:
            outcomes.append((route, outcome))

    def call(client: httpx.Client, route: str, method: str, url: str, **kwargs) -> httpx.Response | None:
        try:
            response = client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            note(route, type(exc).__name__)
            return None
        note(route, response.status_code)
        return response

    def upload(n: int) -> None:
        with httpx.Client(base_url=server.url, headers=bearer(tokens[n % 2]), timeout=REQUEST_TIMEOUT_S) as client:
            response = call(client, "upload", "POST", "/api/studies", files=[("files", (f"ct{n}.nii.gz", ct))])
            if response is not None and response.status_code == 202:
                with lock:
                    job_ids.append(response.json()["job_id"])

    def poll(n: int) -> None:
        with httpx.Client(base_url=server.url, headers=bearer(tokens[n % 2]), timeout=REQUEST_TIMEOUT_S) as client:
            for i in range(REQUESTS_PER_POLLER):
                if i % 3 == 0:
                    call(client, "health", "GET", "/api/health")
                elif i % 3 == 1 and job_ids:
                    call(client, "job", "GET", f"/api/jobs/{job_ids[i % len(job_ids)]}")
                else:
                    call(client, "studies", "GET", "/api/studies")
                time.sleep(0.05)

    try:
        threads = [threading.Thread(target=upload, args=(n,)) for n in range(UPLOADS)]
        threads += [threading.Thread(target=poll, args=(n,)) for n in range(POLLERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert not any(thread.is_alive() for thread in threads), "a client is still waiting for an answer"
        failures = [(route, outcome) for route, outcome in outcomes if outcome not in (200, 202)]
        assert not failures, failures
        assert len(outcomes) == UPLOADS + POLLERS * REQUESTS_PER_POLLER  # every request made got an answer
        assert len(job_ids) == UPLOADS
        with httpx.Client(base_url=server.url, headers=bearer(tokens[0]), timeout=REQUEST_TIMEOUT_S) as client:
            finished = [wait_for_job(client, job_id) for job_id in job_ids]
        assert [job["status"] for job in finished] == ["done"] * UPLOADS, finished
    finally:
        server.stop()


@pytest.mark.slow
def test_sigterm_stops_a_busy_server_in_time_and_the_job_finishes_after_the_restart(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    register_test_model(settings)
    token = add_user(settings, "carla", "clinician")
    ct = write_ct(tmp_path / "ct.nii.gz", shape=(256, 256, 160))  # long enough to be caught running
    server = LiveServer(settings.data_dir)
    server.start()
    try:
        with httpx.Client(base_url=server.url, headers=bearer(token), timeout=REQUEST_TIMEOUT_S) as client:
            response = client.post("/api/studies", files=[("files", ("big.nii.gz", ct))])
            assert response.status_code == 202, response.text
            job_id = response.json()["job_id"]
            deadline = time.monotonic() + 60
            while client.get(f"/api/jobs/{job_id}").json()["status"] == "queued":
                assert time.monotonic() < deadline, "the job never started"
                time.sleep(0.05)
        process = server.process
        assert process is not None
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=HARD_DEADLINE_S + 15)
        stopped_s = time.monotonic() - started
        server.process = None
        assert stopped_s < HARD_DEADLINE_S + 10, stopped_s
    finally:
        server.stop()

    server.start()
    try:
        with httpx.Client(base_url=server.url, headers=bearer(token), timeout=REQUEST_TIMEOUT_S) as client:
            job = wait_for_job(client, job_id, timeout_s=240)
        assert job["status"] == "done", job
    finally:
        server.stop()
