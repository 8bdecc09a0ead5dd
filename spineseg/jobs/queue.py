"""The job queue: Huey with SQLite storage at ``DATA_DIR/queue.db`` (no server needed) and
worker threads inside the web process.

The database's job rows are the truth about a job's state; the queue only carries job ids.
Claiming a job is a guarded UPDATE (queued -> running), so an id that reaches a worker twice
runs once. On start, jobs a stopped server left ``running`` go back to ``queued`` and every
queued job id is put on the queue again: nothing accepted before a restart is lost.
"""

from __future__ import annotations

import logging
import threading
import time

from huey import SqliteHuey
from huey.api import Task

from spineseg.config import Settings
from spineseg.jobs.segment_job import run_segment_job
from spineseg.registry import Registry
from spineseg.store.database import Database
from spineseg.store.studies import requeue_interrupted

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.3
SEGMENT_TASK = "spineseg.segment"


class JobQueue:
    """Enqueue segment jobs and run them on ``settings.workers`` background threads (0: accept
    and keep jobs queued without running them, e.g. a web-only process)."""

    def __init__(self, settings: Settings, database: Database, registry: Registry) -> None:
        self.settings = settings
        self.database = database
        self.registry = registry
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.huey = SqliteHuey(name="spineseg", filename=str(settings.queue_path), results=False)
        self._segment = self.huey.task(name=SEGMENT_TASK)(self._run_segment)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _run_segment(self, job_id: str) -> str:
        return run_segment_job(job_id, settings=self.settings, database=self.database, registry=self.registry,
                               stopping=self._stop.is_set)

    def enqueue_segment(self, job_id: str) -> None:
        """Put a (queued) job on the queue; it runs when a worker is free."""
        self._segment(job_id)

    def pending(self) -> int:
        return self.huey.pending_count()

    def start(self) -> None:
        """Recover interrupted jobs, then start the worker threads."""
        with self.database.session() as session:
            queued = requeue_interrupted(session)
        for job_id in queued:
            self.enqueue_segment(job_id)
        if queued:
            log.info("re-queued %d job(s) accepted before the last stop", len(queued))
        self._stop.clear()
        if self.settings.workers < 1:
            log.warning("SPINESEG_WORKERS=%d: jobs are accepted and kept queued, but none runs here",
                        self.settings.workers)
        for number in range(self.settings.workers):
            thread = threading.Thread(target=self._work, name=f"spineseg-worker-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _work(self) -> None:
        while not self._stop.is_set():
            task: Task | None = self.huey.dequeue()
            if task is None:
                self._stop.wait(IDLE_POLL_S)
                continue
            self.huey.execute(task)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the workers: a running job stops at its next progress step (a fraction of a
        second, or the rest of one network batch) and is queued again; after ``timeout`` s the
        threads are left behind (daemons) and a job still running is re-queued by the next
        ``start``."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()
