"""Runs training jobs one at a time (``slots``), each in its own process, so the web service
stays responsive while the CPU trains.

The ``training_runs`` rows are the queue: a thread in the web process claims the oldest queued
run (a guarded UPDATE), starts ``python -m spineseg.jobs.train_job`` with the log going to
``DATA_DIR/training/<run id>/train.log``, and watches it. A cancel request reaches the child
through its row (it stops at its next progress write) and, as a backstop, as SIGTERM; a run
whose child ends after a cancel request, however it ends, is ``cancelled``. On stop
the children get SIGTERM (they stop after the current step and re-queue themselves). A child
also stops when this process dies, even by SIGKILL (``spineseg.jobs.processes``). On start,
runs a crashed server left ``running`` are queued again, after any trainer of theirs that is
still alive has been ended: one run never has two trainers. Nothing is lost across restarts.

Several processes (``spineseg worker --jobs train`` on a GPU machine, say) may run schedulers
on one database: a claim names the process's worker id, whose job queue renews the heartbeat of
the runs it holds; a run whose worker stopped answering is re-queued by any live process
(``store.heartbeats``). Start-up recovery only touches runs of this machine's processes.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from spineseg.config import Settings
from spineseg.errors import strip_server_paths
from spineseg.jobs.processes import (
    ORPHANED,
    OTHER_PROGRAM,
    OWNED,
    PARENT_PID_FLAG,
    TRAIN_JOB_MODULE,
    end_process,
    trainer_state,
)
from spineseg.store.database import Database
from spineseg.store.heartbeats import new_worker_id, requeue_dead_local, same_machine
from spineseg.store.training_models import TrainingRun
from spineseg.store.training_runs import (
    claim_run,
    finish_run,
    get_run,
    next_queued,
    running_runs,
    set_pid,
)

log = logging.getLogger(__name__)

POLL_S = 0.5
LOG_FILE = "train.log"
CANCELLED_MESSAGE = "cancelled while running; nothing was registered"


def run_log_path(settings: Settings, run_id: str) -> Path:
    return settings.data_dir / "training" / run_id / LOG_FILE


def read_log_tail(settings: Settings, run_id: str, max_bytes: int = 20000) -> str:
    """The last ``max_bytes`` of a run's log ("" before it started), server folders removed
    (library warnings and tracebacks name absolute paths)."""
    path = run_log_path(settings, run_id)
    if not path.is_file():
        return ""
    with path.open("rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(max(0, size - max_bytes))
        return strip_server_paths(fh.read().decode("utf-8", "replace"))


class TrainingScheduler:
    """Start with ``start()``, stop with ``stop()``; ``slots`` runs at a time (0: keep them
    queued, e.g. a web-only process)."""

    def __init__(self, settings: Settings, database: Database, *, slots: int = 1, worker_id: str | None = None) -> None:
        self.settings, self.database, self.slots = settings, database, slots
        # Claims name this process; its job queue's maintenance thread renews their heartbeat.
        self.worker_id = worker_id or new_worker_id()
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._signalled: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        keep = self._end_left_over_trainers()
        with self.database.session() as session:
            requeued = requeue_dead_local(session, me=self.worker_id, table=TrainingRun, keep=frozenset(keep))
        if requeued:
            log.info("re-queued %d training run(s) left running by the last stop", len(requeued))
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="spineseg-training", daemon=True)
        self._thread.start()

    def _end_left_over_trainers(self) -> set[str]:
        """End the orphaned trainers of runs left ``running``; returns the runs that must stay
        ``running`` (a live server still owns their trainer, or it would not die)."""
        with self.database.session() as session:
            running = running_runs(session)
        keep: set[str] = set()
        for run_id, pid, worker in running:
            if not same_machine(worker, me=self.worker_id):
                continue  # another machine's run: its worker's heartbeat says whether it lives
            state = trainer_state(pid, run_id)
            if state == OWNED:
                log.info("training run %s belongs to process %d of a live server; left running", run_id, pid)
                keep.add(run_id)
            elif state == ORPHANED:
                log.warning("training run %s: ending its trainer process %d left by the last server", run_id, pid)
                if not end_process(pid):
                    log.error("training run %s: process %d would not end; the run stays running", run_id, pid)
                    keep.add(run_id)
            elif state == OTHER_PROGRAM:
                log.info("training run %s recorded process %d, which now runs another program; not signalled",
                         run_id, pid)
        return keep

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._reap()
                self._signal_cancelled()
                if len(self._children) < self.slots:
                    self._start_next()
            except (OSError, SQLAlchemyError, subprocess.SubprocessError):  # a busy database, a failed spawn
                log.exception("training scheduler step failed; trying again")
            self._stop.wait(POLL_S)

    def _start_next(self) -> None:
        with self.database.session() as session:
            run_id = next_queued(session)
            if run_id is None or not claim_run(session, run_id=run_id, worker_id=self.worker_id):
                return
        log_path = run_log_path(self.settings, run_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", TRAIN_JOB_MODULE, run_id, "--data-dir", str(self.settings.data_dir),
                   "--database-url", self.settings.sqlalchemy_url, "--device", self.settings.device,
                   PARENT_PID_FLAG, str(os.getpid())]
        with log_path.open("ab") as log_file:
            child = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        with self._lock:
            self._children[run_id] = child
        with self.database.session() as session:
            set_pid(session, run_id=run_id, pid=child.pid)
        log.info("training run %s started in process %d", run_id, child.pid)

    def _reap(self) -> None:
        with self._lock:
            finished = {rid: c for rid, c in self._children.items() if c.poll() is not None}
            for run_id in finished:
                del self._children[run_id]
                self._signalled.discard(run_id)
        for run_id, child in finished.items():
            with self.database.session() as session:
                run = get_run(session, run_id=run_id)
                if run is None or run.status != "running":
                    continue
                # The process ended without recording an end. After a cancel request that is the
                # cancel (the SIGTERM backstop ends a trainer that is still importing or building
                # its dataset, before it listens for the signal): cancelled, never failed.
                if run.cancel_requested:
                    finish_run(session, run_id=run_id, status="cancelled", error=CANCELLED_MESSAGE)
                    shutil.rmtree(run_log_path(self.settings, run_id).parent / "checkpoint", ignore_errors=True)
                    log.info("training run %s cancelled (its process exited with code %s)", run_id, child.returncode)
                    continue
                tail = read_log_tail(self.settings, run_id, 600).strip().splitlines()[-3:]
                finish_run(session, run_id=run_id, status="failed",
                           error=f"training process exited with code {child.returncode}: " + " | ".join(tail))

    def _signal_cancelled(self) -> None:
        with self._lock:
            running = dict(self._children)
        for run_id, child in running.items():
            if run_id in self._signalled:
                continue
            with self.database.session() as session:
                run = get_run(session, run_id=run_id)
                wanted = run is not None and run.cancel_requested
            if wanted:
                self._signalled.add(run_id)
                child.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the loop; children get SIGTERM and ``timeout`` s to checkpoint and re-queue."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._lock:
            children = dict(self._children)
            self._children.clear()
        for child in children.values():
            child.send_signal(signal.SIGTERM)
        for run_id, child in children.items():
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("training run %s did not stop in %.0f s; killed (it re-queues on next start)",
                            run_id, timeout)
                child.kill()
                child.wait()
