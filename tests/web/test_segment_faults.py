"""Segment jobs survive kill -9 of the server exactly once (real ``spineseg serve``
subprocesses): every accepted job, the running one and the queued ones, finishes after the
restart as ``done``, once, with complete outputs and nothing half-written left beside them;
a later restart runs none of them again; no process outlives the server."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import nibabel as nib
import pytest

from spineseg.store.database import Database
from spineseg.store.files import StudyFiles
from spineseg.store.studies import get_job
from tests.conftest import make_phantom
from tests.web.fault_helpers import live_pids_mentioning, wait_until
from tests.web.live_server import LiveServer
from tests.web.web_helpers import add_user, bearer, make_settings, register_test_model

JOBS = 3
# a run folder holds exactly these (nothing half-written): the outputs, the vertebra levels and
# the viewer's copies
OUTPUTS = {"ct.nii.gz", "mask.nii.gz", "truth.nii.gz", "summary.json", "overlays", "uncertainty.nii.gz",
           "levels.nii.gz", "levels_colours.json", "vertebrae.csv", "viewer", "mesh.stl", "vertebrae_stl.zip"}


def exports_finished(summary_path: Path, timeout_s: float = 180) -> dict:
    """The run's summary once the exports that follow "done" (overlays, STLs) are all written."""
    deadline = time.monotonic() + timeout_s
    while True:
        summary = json.loads(summary_path.read_text())
        if not summary.get("outputs_pending") or time.monotonic() > deadline:
            return summary
        time.sleep(0.5)


def job(server: LiveServer, token: str, job_id: str) -> dict:
    return httpx.get(f"{server.url}/api/jobs/{job_id}", headers=bearer(token), timeout=30).json()


def wait_all_ended(server: LiveServer, token: str, job_ids: list[str], timeout_s: float = 180) -> dict[str, dict]:
    def ended() -> dict[str, dict] | None:
        states = {job_id: job(server, token, job_id) for job_id in job_ids}
        return states if all(s["status"] in ("done", "failed", "cancelled") for s in states.values()) else None
    return wait_until(ended, timeout_s, "every job to end", poll_s=0.3)


def finished_lines(log_text: str, job_id: str) -> int:
    return len(re.findall(rf"job {job_id} (done|failed|cancelled)", log_text))


@pytest.mark.slow
def test_kill_9_with_a_running_and_queued_jobs_finishes_each_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    settings = make_settings(data_dir)
    register_test_model(settings)  # the default architecture: a job takes a few seconds
    token = add_user(settings, "cora", "clinician")
    volume, mask = make_phantom()
    nib.save(nib.Nifti1Image(volume.array, volume.affine), str(tmp_path / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(mask, volume.affine), str(tmp_path / "truth.nii.gz"))
    parts = [("files", ("ct.nii.gz", (tmp_path / "ct.nii.gz").read_bytes())),
             ("truth", ("truth.nii.gz", (tmp_path / "truth.nii.gz").read_bytes()))]

    server = LiveServer(data_dir)
    server.start(SPINESEG_WORKERS="1")
    try:
        job_ids = []
        for _ in range(JOBS):
            accepted = httpx.post(f"{server.url}/api/studies", headers=bearer(token), files=parts, timeout=60)
            assert accepted.status_code == 202, accepted.text
            job_ids.append(accepted.json()["job_id"])
        running = wait_until(lambda: (j := job(server, token, job_ids[0]))["status"] == "running" and j, 60,
                             "the first job to run", poll_s=0.05)
        server.process.kill()  # kill -9 while a job runs and others wait
        server.process.wait(timeout=10)
        server.process = None
        database = Database(settings.sqlalchemy_url)
        with database.session() as session:
            before = [get_job(session, job_id=job_id).status for job_id in job_ids]
        database.dispose()
        assert before == ["running"] + ["queued"] * (JOBS - 1), before
        assert live_pids_mentioning(str(data_dir)) == []

        # What a kill in the middle of writing leaves: a truncated mask and a stray file.
        killed_outputs = StudyFiles.of(settings.studies_dir, running["study_id"]).runs_dir / running["id"]
        killed_outputs.mkdir(parents=True, exist_ok=True)
        (killed_outputs / "mask.nii.gz").write_bytes(b"\x1f\x8b truncated")
        (killed_outputs / "half-written.tmp").write_bytes(b"x")

        server.start(SPINESEG_WORKERS="1")
        states = wait_all_ended(server, token, job_ids)
        assert {s["status"] for s in states.values()} == {"done"}, states
        study_ids = {job_id: state["study_id"] for job_id, state in states.items()}
        for job_id, study_id in study_ids.items():
            study_files = StudyFiles.of(settings.studies_dir, study_id)
            files = study_files.run(f"runs/{job_id}")
            assert not exports_finished(files.summary).get("outputs_pending"), job_id
            assert {p.name for p in files.folder.iterdir()} == OUTPUTS, job_id
            assert sorted(p.name for p in study_files.root.iterdir()) == ["input", "intake_times.json", "runs",
                                                                          "truth", "viewer"]
            assert [p.name for p in study_files.runs_dir.iterdir()] == [job_id]
            assert nib.load(str(files.mask)).shape == volume.shape
            assert json.loads(files.summary.read_text())["model_version"] == "test-untrained"
            assert len(list(files.overlays.glob("*.png"))) > 0
            download = httpx.get(f"{server.url}/api/studies/{study_id}/mask.nii.gz", headers=bearer(token),
                                 timeout=30)
            assert download.status_code == 200 and download.content == files.mask.read_bytes()
        finished_at = {job_id: state["finished_at"] for job_id, state in states.items()}
        server.stop()

        server.start(SPINESEG_WORKERS="1")  # finished jobs are not run again
        time.sleep(2.0)
        again = {job_id: job(server, token, job_id) for job_id in job_ids}
        assert {job_id: (s["status"], s["finished_at"]) for job_id, s in again.items()} == {
            job_id: ("done", finished_at[job_id]) for job_id in job_ids}
    finally:
        server.stop()
    log_text = server.log_path.read_text()
    assert {job_id: finished_lines(log_text, job_id) for job_id in job_ids} == dict.fromkeys(job_ids, 1)
    assert live_pids_mentioning(str(data_dir)) == []
