"""Training survives faults exactly once (real ``spineseg serve`` subprocesses, tiny model):
kill -9 of the server ends its trainer within seconds and the run, resumed after the restart,
registers one version; a trainer left alive by a crashed server is ended by the next start
before its run is queued again, and a recorded PID that now belongs to another program is
never signalled."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from spineseg.jobs.processes import process_alive
from spineseg.registry import Registry
from spineseg.store.database import Database
from spineseg.store.training_runs import claim_run, get_run, set_pid
from tests.web.fault_helpers import (
    live_pids_mentioning,
    make_http_dataset,
    start_http_run,
    versions_of_run,
    wait_run_ended,
    wait_until,
)
from tests.web.live_server import LiveServer
from tests.web.training_helpers import BASE_VERSION, register_tiny_base
from tests.web.web_helpers import add_user, make_settings

# Long enough to be caught mid-run (a few seconds on 2 shared cores), short enough to finish.
RUN_SETTINGS = {"epochs": 2, "steps_per_epoch": 12, "batch_size": 2, "patch_size": 32}
ORPHAN_SETTINGS = RUN_SETTINGS | {"epochs": 3, "steps_per_epoch": 25}
GONE_WITHIN_S = 10


def run_row(database: Database, run_id: str) -> dict:
    with database.session() as session:
        run = get_run(session, run_id=run_id)
        return {"status": run.status, "pid": run.pid, "step": run.step, "stage": run.stage}


@pytest.mark.slow
def test_kill_9_of_the_server_ends_its_trainer_and_the_run_registers_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    settings = make_settings(data_dir)
    register_tiny_base(settings)
    token = add_user(settings, "rhea", "researcher")
    database = Database(settings.sqlalchemy_url)
    server = LiveServer(data_dir)
    server.start(SPINESEG_WORKERS="1")
    try:
        dataset_id = make_http_dataset(server.url, token, tmp_path)
        run_id = start_http_run(server.url, token, dataset_id, BASE_VERSION, RUN_SETTINGS)
        row = wait_until(lambda: (r := run_row(database, run_id))["step"] >= 1 and r["pid"] and r, 120,
                         "the run to be training")
        trainer = row["pid"]
        assert process_alive(trainer) and row["status"] == "running", row

        server.process.kill()  # kill -9: no shutdown code runs in the server
        server.process.wait(timeout=10)
        server.process = None
        wait_until(lambda: not process_alive(trainer), GONE_WITHIN_S, f"trainer {trainer} to die with its server")
        assert live_pids_mentioning(str(data_dir)) == []
        assert versions_of_run(settings.registry_dir, run_id) == []
        after_kill = run_row(database, run_id)

        server.start(SPINESEG_WORKERS="1")
        run = wait_run_ended(server.url, token, run_id)
        assert run["status"] == "done", run
        assert [h["epoch"] for h in run["history"]] == [1, 2]
        assert versions_of_run(settings.registry_dir, run_id) == [run["version_id"]] == [f"run-{run_id}"]
        assert Registry(settings.registry_dir).version_ids() == sorted([BASE_VERSION, f"run-{run_id}"])
    finally:
        server.stop()
        database.dispose()
    assert live_pids_mentioning(str(data_dir)) == []
    # The trainer stopped cleanly on its parent's death and queued the run itself.
    assert after_kill["status"] == "queued" and after_kill["pid"] is None, after_kill


@pytest.mark.slow
def test_restart_ends_a_surviving_trainer_but_never_a_recycled_pid(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    settings = make_settings(data_dir)
    register_tiny_base(settings)
    token = add_user(settings, "remy", "researcher")
    database = Database(settings.sqlalchemy_url)
    server = LiveServer(data_dir)
    server.start(SPINESEG_WORKERS="0")  # accepts runs, trains nothing
    try:
        dataset_id = make_http_dataset(server.url, token, tmp_path)
        # long enough that the hand-started trainer is still training when the server starts
        orphaned = start_http_run(server.url, token, dataset_id, BASE_VERSION, ORPHAN_SETTINGS)
        recycled = start_http_run(server.url, token, dataset_id, BASE_VERSION,
                                  RUN_SETTINGS | {"epochs": 1})
    finally:
        server.stop()

    # What a crashed server can leave: a run whose trainer still runs (started by hand here, so
    # no parent death ends it) and a run whose recorded PID now belongs to another program.
    with database.session() as session:
        assert claim_run(session, run_id=orphaned) and claim_run(session, run_id=recycled)
    with (tmp_path / "orphan.log").open("ab") as log:
        orphan = subprocess.Popen([sys.executable, "-m", "spineseg.jobs.train_job", orphaned, "--data-dir",
                                   str(data_dir), "--database-url", settings.sqlalchemy_url, "--device", "cpu"],
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    stranger = subprocess.Popen(["sleep", "300"])
    try:
        with database.session() as session:
            set_pid(session, run_id=orphaned, pid=orphan.pid)
            set_pid(session, run_id=recycled, pid=stranger.pid)
        wait_until(lambda: run_row(database, orphaned)["step"] >= 1, 120, "the hand-started trainer to train")
        assert orphan.poll() is None

        server.start(SPINESEG_WORKERS="1")
        try:
            # The start ended the orphan before it queued its run again; the stranger lives.
            assert orphan.wait(timeout=2) is not None
            assert stranger.poll() is None
            runs = {run_id: wait_run_ended(server.url, token, run_id) for run_id in (orphaned, recycled)}
        finally:
            server.stop()
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait(timeout=10)
        if orphan.poll() is None:
            orphan.kill()
        orphan.wait(timeout=10)
        database.dispose()
    for run_id, run in runs.items():
        assert run["status"] == "done", run
        assert versions_of_run(settings.registry_dir, run_id) == [run["version_id"]] == [f"run-{run_id}"]
    assert [h["epoch"] for h in runs[orphaned]["history"]] == [1, 2, 3]
    assert "ending its trainer process" in server.log_path.read_text()
    assert live_pids_mentioning(str(data_dir)) == []
