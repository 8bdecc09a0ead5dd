"""Claims, heartbeats and the reaper on a real (SQLite) database: a job whose worker stopped
answering is re-queued once, the worker that lost it can record nothing, and a finished job is
never claimed again."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from spineseg.store.database import Database, open_database
from spineseg.store.heartbeats import beat, dead_here, lost_queued, new_worker_id, reap_stale, requeue_dead_local
from spineseg.store.models import Job
from spineseg.store.studies import claim_job, create_job, create_study, finish_job, get_job, new_id, set_progress

HOST = socket.gethostname()


@pytest.fixture
def database(tmp_path: Path) -> Database:
    return open_database(f"sqlite:///{tmp_path / 'db.sqlite'}")


def queued_job(database: Database) -> str:
    with database.session() as session:
        study = create_study(session, study_id=new_id(), owner_id=None, name="s", input_kind="nifti",
                             input_path="/x/ct.nii.gz", truth_path=None)
        return create_job(session, study_id=study.id).id


def age_heartbeat(database: Database, job_id: str, seconds: float) -> None:
    with database.session() as session:
        session.execute(update(Job).where(Job.id == job_id)
                        .values(heartbeat_at=datetime.now(UTC) - timedelta(seconds=seconds)))


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_stale_job_is_requeued_once_and_its_old_worker_records_nothing(database: Database) -> None:
    job_id = queued_job(database)
    lost, survivor = f"{HOST}-a:1:aaaa", f"{HOST}-b:2:bbbb"
    with database.session() as session:
        assert claim_job(session, job_id=job_id, worker_id=lost)
    age_heartbeat(database, job_id, 60)
    with database.session() as session:
        assert reap_stale(session, stale_s=30) == [job_id]
        assert reap_stale(session, stale_s=30) == []  # a second reaper finds nothing to do
        job = get_job(session, job_id=job_id)
        assert (job.status, job.worker_id, job.stage) == ("queued", None, "queued (its worker stopped answering)")
    with database.session() as session:
        assert claim_job(session, job_id=job_id, worker_id=survivor)
        # The worker that lost the row is told to stop and cannot finish it.
        assert set_progress(session, job_id=job_id, progress=0.5, stage="segmenting", worker_id=lost) is True
        assert not finish_job(session, job_id=job_id, status="failed", error="late", worker_id=lost)
        assert set_progress(session, job_id=job_id, progress=0.5, stage="segmenting", worker_id=survivor) is False
        assert finish_job(session, job_id=job_id, status="done", worker_id=survivor)
        assert not finish_job(session, job_id=job_id, status="done", worker_id=survivor)  # never twice
        assert not claim_job(session, job_id=job_id, worker_id=lost)  # a finished job is never claimed again
        job = get_job(session, job_id=job_id)
        assert (job.status, job.error, job.worker_id) == ("done", None, survivor)


def test_heartbeats_keep_a_live_worker_s_jobs(database: Database) -> None:
    job_id = queued_job(database)
    me = new_worker_id()
    with database.session() as session:
        claim_job(session, job_id=job_id, worker_id=me)
    age_heartbeat(database, job_id, 60)
    with database.session() as session:
        assert beat(session, worker_id=me) == 1
        assert beat(session, worker_id="elsewhere:1:x") == 0
    with database.session() as session:
        assert reap_stale(session, stale_s=30) == []
        assert get_job(session, job_id=job_id).status == "running"


def test_start_up_requeues_only_this_machine_s_dead_workers(database: Database) -> None:
    me = new_worker_id()
    gone, alive, elsewhere, legacy = (queued_job(database) for _ in range(4))
    claims = {gone: f"{HOST}:{dead_pid()}:dead", alive: f"{HOST}:{os.getppid()}:live",
              elsewhere: f"other-{HOST}:{dead_pid()}:far", legacy: None}
    with database.session() as session:
        for job_id, worker in claims.items():
            assert claim_job(session, job_id=job_id, worker_id=worker)
    with database.session() as session:
        assert sorted(requeue_dead_local(session, me=me)) == sorted([gone, legacy])
        assert {j: get_job(session, job_id=j).status for j in claims} == {
            gone: "queued", legacy: "queued", alive: "running", elsewhere: "running"}
    assert dead_here(f"{HOST}:{os.getpid()}:earlier", me=me)  # an earlier queue of this very process
    assert not dead_here(me, me=me)


def test_queued_jobs_that_lost_their_queue_entry_are_found(database: Database) -> None:
    job_id = queued_job(database)
    with database.session() as session:
        assert lost_queued(session, older_than_s=60) == []
        session.execute(update(Job).where(Job.id == job_id).values(created_at=datetime.now(UTC) - timedelta(minutes=5)))
    with database.session() as session:
        assert lost_queued(session, older_than_s=60) == [job_id]
