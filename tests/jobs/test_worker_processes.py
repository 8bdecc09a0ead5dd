"""Several processes on one queue and one database, as on several machines: a web server that
only accepts (``SPINESEG_WORKERS=0``) and ``spineseg worker`` processes, on real PostgreSQL and
Redis servers started here. One worker is killed with SIGKILL in the middle of a job; every job
still finishes exactly once with the mask the model gives; a training run executes on a worker
and registers exactly one version."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest
from sqlalchemy import func, select

from spineseg.imaging.io import load_volume
from spineseg.model.inference import segment
from spineseg.registry import Registry
from spineseg.store.database import Database
from spineseg.store.models import Job
from spineseg.store.training_models import TrainingRun
from tests.model.conftest import write_phantom_case
from tests.servers import PostgresServer, RedisServer, missing_servers
from tests.web.live_server import LiveServer
from tests.web.training_helpers import BASE_VERSION, TINY_SETTINGS, case_parts, register_tiny_base
from tests.web.web_helpers import TEST_SECRET_KEY, add_user, bearer, make_settings

pytestmark = pytest.mark.slow

# A CT large enough that one job takes seconds (so a worker can be killed in the middle of
# one), small enough that six take well under a minute on two workers.
CT_SHAPE = (192, 160, 96)
# A job long enough that the event stream (the job row, read every 0.5 s) shows it in the middle
# of its model stage, before the cancel: with faster inference a CT_SHAPE job went from 10 % to
# 85 % between two reads of the row.
CANCEL_CT_SHAPE = (192, 160, 384)
HEARTBEAT_S, STALE_S = 1, 5
JOB_TIMEOUT_S = 240


@dataclass
class Cluster:
    data_dir: Path
    env: dict[str, str]
    database: Database
    web: LiveServer
    tokens: dict[str, str]
    workers: list[tuple[subprocess.Popen[bytes], Path]]

    def start_worker(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log_path = self.data_dir / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen([sys.executable, "-m", "spineseg.cli.main", "worker", *args],
                                       env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.workers.append((process, log_path))
        return process


def worker_environment(data_dir: Path, database_url: str, queue_url: str) -> dict[str, str]:
    """What every process of the test gets (web server and workers alike)."""
    return os.environ | {
        "SPINESEG_DATA_DIR": str(data_dir), "SPINESEG_DATABASE_URL": database_url, "SPINESEG_QUEUE_URL": queue_url,
        "SPINESEG_SECRET_KEY": TEST_SECRET_KEY, "SPINESEG_DEVICE": "cpu",
        "SPINESEG_HEARTBEAT_S": str(HEARTBEAT_S), "SPINESEG_JOB_STALE_S": str(STALE_S)}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = missing_servers()
    if reason:
        pytest.skip(reason)
    postgres = PostgresServer().start()
    redis = RedisServer(tmp_path_factory.mktemp("redis")).start()
    data_dir = tmp_path_factory.mktemp("shared-data")
    database_url = postgres.new_database()
    settings = make_settings(data_dir, database_url=database_url, queue_url=redis.url())
    register_tiny_base(settings)
    tokens = {"clinician": add_user(settings, "carla", "clinician"),
              "researcher": add_user(settings, "rene", "researcher")}
    env = worker_environment(data_dir, database_url, redis.url())
    web = LiveServer(data_dir)
    web.start(**{k: v for k, v in env.items() if k.startswith("SPINESEG_")} | {"SPINESEG_WORKERS": "0"})
    cluster = Cluster(data_dir, env, Database(database_url), web, tokens, [])
    try:
        yield cluster
    finally:
        for process, _log in cluster.workers:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
        web.stop()
        cluster.database.dispose()
        redis.stop()
        postgres.stop()


def upload(cluster: Cluster, ct: Path) -> dict[str, str]:
    response = httpx.post(f"{cluster.web.url}/api/studies", headers=bearer(cluster.tokens["clinician"]),
                          files=[("files", ("ct.nii.gz", ct.read_bytes(), "application/gzip"))], timeout=60)
    assert response.status_code == 202, response.text
    return response.json()


def job_status(cluster: Cluster, job_id: str) -> dict:
    response = httpx.get(f"{cluster.web.url}/api/jobs/{job_id}", headers=bearer(cluster.tokens["clinician"]),
                         timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def wait_until_ready(cluster: Cluster) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if all(" ready: jobs " in log.read_text() for _process, log in cluster.workers):
            return
        time.sleep(0.2)
    raise AssertionError("workers not ready: " + " | ".join(log.read_text() for _p, log in cluster.workers))


def running_job_of(cluster: Cluster, pids: set[int]) -> tuple[str, int] | None:
    """(job id, worker pid) of a job that one of ``pids`` is in the middle of: past its start and
    not near its end, so that it cannot finish between this look and the kill that follows (a
    job seen at any progress once finished first, and the re-queue was never observed)."""
    with cluster.database.session() as session:
        rows = session.execute(select(Job.id, Job.worker_id).where(
            Job.status == "running", Job.progress >= 0.1, Job.progress <= 0.5))
        for job_id, worker_id in rows:
            pid = int(worker_id.split(":")[1])
            if pid in pids:
                return job_id, pid
    return None


def test_six_studies_finish_exactly_once_when_a_worker_is_killed_mid_job(cluster: Cluster, tmp_path: Path) -> None:
    workers = [cluster.start_worker(f"worker-{n}", "--jobs", "segment", "--concurrency", "1") for n in (1, 2)]
    wait_until_ready(cluster)  # else a late starter re-queues the killed worker's job at once (same machine)
    cts = [write_phantom_case(tmp_path / f"case-{seed}", seed=seed, shape=CT_SHAPE)[0] for seed in (1, 2)]
    accepted = [upload(cluster, cts[n % 2]) for n in range(6)]
    by_job = {item["job_id"]: cts[n % 2] for n, item in enumerate(accepted)}

    deadline = time.monotonic() + JOB_TIMEOUT_S
    caught = None
    while caught is None and time.monotonic() < deadline:
        caught = running_job_of(cluster, {w.pid for w in workers})
        time.sleep(0.05)
    assert caught is not None, "no worker was ever seen in the middle of a job"
    killed_job, killed_pid = caught
    os.kill(killed_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    killed = next(w for w in workers if w.pid == killed_pid)
    killed.wait(10)
    survivor_log = next(log for p, log in cluster.workers if p.pid != killed_pid and p in workers)
    killed_log = next(log for p, log in cluster.workers if p.pid == killed_pid)

    # The killed job's row, as any process sees it: running (stale heartbeat) -> re-queued by a
    # live process's reaper -> claimed by the survivor -> done.
    timeline: list[tuple[float, str, str, str | None]] = []
    while time.monotonic() < deadline:
        with cluster.database.session() as session:
            row = session.get(Job, killed_job)
            state = (row.status, row.stage, row.worker_id)
        if not timeline or timeline[-1][1:] != state:
            timeline.append((round(time.monotonic() - killed_at, 1), *state))
        if row.status == "done":
            break
        time.sleep(0.1)
    # Re-queued (a state the survivor may claim within milliseconds) once the heartbeat was
    # stale: not before, and within the bound (stale + one reaper interval + slack).
    moved = [t for t in timeline if t[3] is None or int(t[3].split(":")[1]) != killed_pid]
    assert moved, timeline
    assert STALE_S - HEARTBEAT_S <= moved[0][0] <= STALE_S + 3 * HEARTBEAT_S + 2, timeline
    final = {}
    for job_id in by_job:
        while time.monotonic() < deadline:
            final[job_id] = job_status(cluster, job_id)
            if final[job_id]["status"] in ("done", "failed", "cancelled"):
                break
            time.sleep(0.3)
    assert {job_id: job["status"] for job_id, job in final.items()} == dict.fromkeys(by_job, "done"), final
    recovered_after = time.monotonic() - killed_at

    # Exactly once: one job per study, each recorded done once, by a process still alive.
    with cluster.database.session() as session:
        per_study = dict(session.execute(select(Job.study_id, func.count()).group_by(Job.study_id)).all())
        holders = dict(session.execute(select(Job.id, Job.worker_id)).all())
    assert sorted(per_study.values()) == [1] * 6
    assert int(holders[killed_job].split(":")[1]) != killed_pid  # the survivor ran it again
    for job_id in by_job:
        assert len(re.findall(rf"job {job_id} done", survivor_log.read_text() + killed_log.read_text())) == 1, job_id
    assert f"job {killed_job} done" not in killed_log.read_text()
    print(f"\nkilled worker pid {killed_pid} (SIGKILL) in the middle of job {killed_job}; all 6 jobs done "
          f"{recovered_after:.1f} s later (heartbeat {HEARTBEAT_S} s, stale after {STALE_S} s)")
    for at, status, stage, worker in timeline:
        print(f"  +{at:5.1f} s  {status:8} {stage!r:45} worker {worker}")

    # Correct masks: what the registered model gives for each CT, voxel for voxel.
    model = Registry(cluster.data_dir / "models").get(BASE_VERSION)
    reference = {ct: segment(load_volume(ct), model.path, device="cpu").mask for ct in cts}
    for item in accepted:
        response = httpx.get(f"{cluster.web.url}/api/studies/{item['study_id']}/mask.nii.gz",
                             headers=bearer(cluster.tokens["clinician"]), timeout=60)
        assert response.status_code == 200, response.text
        path = tmp_path / f"{item['study_id']}-mask.nii.gz"
        path.write_bytes(response.content)
        mask = np.asarray(nib.load(path).dataobj)
        expected = reference[by_job[item["job_id"]]]
        assert mask.shape == expected.shape and np.array_equal(mask > 0, expected > 0), item
    for process in workers:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0


def test_a_training_run_executes_on_a_worker_and_registers_one_version(cluster: Cluster, tmp_path: Path) -> None:
    trainer = cluster.start_worker("trainer", "--jobs", "train")
    headers = bearer(cluster.tokens["researcher"])
    url = cluster.web.url
    created = httpx.post(f"{url}/api/datasets", json={"name": "phantoms"}, headers=headers, timeout=30)
    assert created.status_code == 201, created.text
    dataset_id = created.json()["id"]
    for patient, seed in (("P1", 1), ("P2", 2), ("P3", 3)):
        added = httpx.post(f"{url}/api/datasets/{dataset_id}/cases", files=case_parts(tmp_path / patient, seed),
                           data={"patient": patient, "site": "north", "name": f"case-{patient}",
                                 "convention": "totalsegmentator"}, headers=headers, timeout=60)
        assert added.status_code == 201, added.text
    split = httpx.put(f"{url}/api/datasets/{dataset_id}/split", headers=headers, timeout=30,
                      json={"patients": {"P1": "train", "P2": "val", "P3": "test"}})
    assert split.status_code == 200, split.text
    started = httpx.post(f"{url}/api/training", headers=headers, timeout=30,
                         json={"dataset_id": dataset_id, "base": BASE_VERSION, "settings": TINY_SETTINGS})
    assert started.status_code == 202, started.text
    run_id = started.json()["id"]
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        run = httpx.get(f"{url}/api/training/{run_id}", headers=headers, timeout=30).json()
        if run["status"] in ("done", "failed", "cancelled"):
            break
        time.sleep(0.3)
    assert run["status"] == "done", run
    with cluster.database.session() as session:
        row = session.get(TrainingRun, run_id)
        assert row is not None and int(row.worker_id.split(":")[1]) == trainer.pid  # run by the worker
    registry = Registry(cluster.data_dir / "models")
    made = [m.id for m in registry.list_versions() if m.card.training_run_id == run_id]
    assert made == [run["version_id"]]
    trainer.send_signal(signal.SIGTERM)
    assert trainer.wait(60) == 0


def test_progress_events_and_cancel_reach_a_job_running_in_another_process(cluster: Cluster, tmp_path: Path) -> None:
    worker = cluster.start_worker("worker-cancel", "--jobs", "segment")
    wait_until_ready(cluster)
    ct = write_phantom_case(tmp_path / "case", seed=7, shape=CANCEL_CT_SHAPE)[0]
    job_id = upload(cluster, ct)["job_id"]
    events: list[dict] = []

    def follow() -> None:  # the browser's view: the web server's SSE stream, read from the job row
        with httpx.stream("GET", f"{cluster.web.url}/api/jobs/{job_id}/events",
                          headers=bearer(cluster.tokens["clinician"]), timeout=JOB_TIMEOUT_S) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line.removeprefix("data: ")))

    def mid_model(event: dict) -> bool:
        return event["status"] == "running" and event["stage"] == "segmenting"

    reader = threading.Thread(target=follow)
    reader.start()
    deadline = time.monotonic() + JOB_TIMEOUT_S
    # Cancel once the stream has shown the job in its model stage, as a user watching it would.
    while not any(mid_model(event) for event in list(events)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(mid_model(event) for event in list(events)), events
    with cluster.database.session() as session:
        holder = session.get(Job, job_id).worker_id
    assert int(holder.split(":")[1]) == worker.pid  # running in the worker process, not the web server
    cancelled = httpx.post(f"{cluster.web.url}/api/jobs/{job_id}/cancel", headers=bearer(cluster.tokens["clinician"]),
                           timeout=30)
    assert cancelled.status_code == 200, cancelled.text
    reader.join(JOB_TIMEOUT_S)
    assert not reader.is_alive()
    statuses = [event["status"] for event in events]
    assert "running" in statuses and statuses[-1] == "cancelled", statuses
    assert events[-1]["error"] == "cancelled while running", events[-1]
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
