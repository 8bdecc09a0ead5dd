"""``spineseg worker``: a process that runs jobs from the shared queue, nothing else.

With ``SPINESEG_QUEUE_URL`` (Redis) and ``SPINESEG_DATABASE_URL`` (PostgreSQL) set and the data
directory on storage every machine mounts, any number of workers on any number of machines
share the work of web servers started with ``SPINESEG_WORKERS=0``. ``jobs`` says which kinds
this process takes: ``segment`` (``concurrency`` threads popping study ids from the queue) and
``train`` (the training scheduler: one trainer process at a time, e.g. on the GPU machine).
Every worker also renews its rows' heartbeats and re-queues the rows of workers that died.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection

from spineseg.config import Settings
from spineseg.errors import InputError
from spineseg.jobs.queue import JobQueue, describe_queue
from spineseg.jobs.train_scheduler import TrainingScheduler
from spineseg.registry import open_registry
from spineseg.store import audit
from spineseg.store.database import open_database
from spineseg.store.locks import guard_registry

log = logging.getLogger(__name__)

JOB_KINDS = ("segment", "train")
TRAINING_STOP_S = 20.0


def parse_job_kinds(text: str) -> tuple[str, ...]:
    """``"segment,train"`` -> ``("segment", "train")``; ``InputError`` naming ``--jobs`` for an
    unknown or empty list."""
    kinds = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [kind for kind in kinds if kind not in JOB_KINDS]
    if unknown or not kinds:
        raise InputError("--jobs", f"expected a comma-separated list of {', '.join(JOB_KINDS)}; got {text!r}")
    return kinds


class Worker:
    """The job queue's workers and/or the training scheduler of one process."""

    def __init__(self, settings: Settings, *, jobs: Collection[str] = JOB_KINDS, concurrency: int = 1) -> None:
        if concurrency < 1:
            raise InputError("--concurrency", f"must be at least 1, got {concurrency}")
        self.settings, self.jobs, self.concurrency = settings, tuple(jobs), concurrency
        self.database = open_database(settings.sqlalchemy_url)
        audit.use_key(self.database, settings.session_secret(), head_log=settings.data_dir / audit.HEAD_LOG_NAME)
        self.registry = open_registry(settings)
        guard_registry(self.registry, self.database)
        self.queue = JobQueue(settings, self.database, self.registry)
        self.training: TrainingScheduler | None = None

    @property
    def worker_id(self) -> str:
        return self.queue.worker_id

    def start(self) -> None:
        self.queue.start(workers=self.concurrency if "segment" in self.jobs else 0)
        if "train" in self.jobs:
            self.training = TrainingScheduler(self.settings, self.database, slots=1, worker_id=self.worker_id)
            self.training.start()
        log.info("SpineSeg worker %s ready: jobs %s, %d segment thread(s) | queue: %s | data: %s",
                 self.worker_id, ",".join(self.jobs), self.concurrency if "segment" in self.jobs else 0,
                 describe_queue(self.settings), self.settings.data_dir)

    def stop(self) -> None:
        """Running jobs stop at their next step and go back to the queue; trainers checkpoint."""
        if self.training is not None:
            self.training.stop(timeout=TRAINING_STOP_S)
        self.queue.stop()
        self.database.dispose()
        log.info("SpineSeg worker %s stopped", self.worker_id)


def run_worker(settings: Settings, *, jobs: Collection[str], concurrency: int, stop: threading.Event) -> None:
    """Run until ``stop`` is set (the CLI sets it on SIGTERM or Ctrl-C)."""
    worker = Worker(settings, jobs=jobs, concurrency=concurrency)
    worker.start()
    try:
        stop.wait()
    finally:
        worker.stop()
