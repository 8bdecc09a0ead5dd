"""The job queue: Huey with SQLite storage at ``DATA_DIR/queue.db`` (one machine, no server
needed) or, with ``SPINESEG_QUEUE_URL=redis://...``, Huey's Redis storage shared by the web
server and ``spineseg worker`` processes on any number of machines.

The database's job rows are the truth about a job's state; the queue only carries job ids.
Claiming a job is a guarded UPDATE (queued -> running, naming this process's worker id), so an
id that reaches workers twice runs once. Every process that opens the queue keeps a
maintenance thread (``_maintain``): it renews the heartbeat of the rows its workers hold, and
re-queues jobs and training runs whose worker stopped answering (``store.heartbeats``), and
job ids that left the queue without being claimed (a worker popped one and died). On start,
rows of this machine's dead processes are re-queued at once and every queued job id is put on
the queue again: nothing accepted is lost, whichever process dies.
"""

from __future__ import annotations

import logging
import threading
import time
from urllib.parse import urlsplit

from huey import RedisHuey, SqliteHuey
from huey.api import Huey, Task
from sqlalchemy.exc import SQLAlchemyError

from spineseg.config import Settings
from spineseg.errors import InputError
from spineseg.jobs.segment_job import run_segment_job
from spineseg.registry import Registry
from spineseg.store.database import Database
from spineseg.store.heartbeats import (
    beat,
    lost_queued,
    new_worker_id,
    queued_jobs,
    reap_stale,
    requeue_dead_local,
)
from spineseg.store.training_models import TrainingRun

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.3
SEGMENT_TASK = "spineseg.segment"
QUEUE_NAME = "spineseg"
REDIS_SCHEMES = ("redis", "rediss", "unix")


def open_huey(settings: Settings) -> Huey:
    """Huey on Redis when ``settings.queue_url`` is set, else on ``DATA_DIR/queue.db``;
    ``InputError`` naming SPINESEG_QUEUE_URL for a URL that is not Redis's."""
    if not settings.queue_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return SqliteHuey(name=QUEUE_NAME, filename=str(settings.queue_path), results=False)
    scheme = urlsplit(settings.queue_url).scheme
    if scheme not in REDIS_SCHEMES:
        raise InputError("SPINESEG_QUEUE_URL", f"expected redis://HOST:PORT/DB, got a {scheme or 'schemeless'} URL")
    return RedisHuey(name=QUEUE_NAME, url=settings.queue_url, results=False)


def describe_queue(settings: Settings) -> str:
    """Where the queue lives, for logs (a Redis password is not shown)."""
    if not settings.queue_url:
        return f"SQLite {settings.queue_path}"
    parts = urlsplit(settings.queue_url)
    return f"Redis {parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"


class JobQueue:
    """Enqueue segment jobs and run them on ``settings.workers`` background threads (0: accept
    and keep jobs queued without running them here, e.g. a web-only process)."""

    def __init__(self, settings: Settings, database: Database, registry: Registry) -> None:
        self.settings = settings
        self.database = database
        self.registry = registry
        self.worker_id = new_worker_id()
        self.huey = open_huey(settings)
        self._segment = self.huey.task(name=SEGMENT_TASK)(self._run_segment)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._maintenance: threading.Thread | None = None

    def _run_segment(self, job_id: str) -> str:
        return run_segment_job(job_id, settings=self.settings, database=self.database, registry=self.registry,
                               stopping=self._stop.is_set, worker_id=self.worker_id)

    def enqueue_segment(self, job_id: str) -> None:
        """Put a (queued) job on the queue; it runs when a worker is free."""
        self._segment(job_id)

    def pending(self) -> int:
        return self.huey.pending_count()

    def start(self, workers: int | None = None) -> None:
        """Recover what this machine's dead processes left, start the maintenance thread and
        ``workers`` worker threads (default ``settings.workers``)."""
        count = self.settings.workers if workers is None else workers
        with self.database.session() as session:
            requeue_dead_local(session, me=self.worker_id)
            queued = queued_jobs(session)
        for job_id in queued:
            self.enqueue_segment(job_id)
        if queued:
            log.info("put %d queued job(s) on the queue again", len(queued))
        self._stop.clear()
        self._maintenance = threading.Thread(target=self._maintain, name="spineseg-heartbeat", daemon=True)
        self._maintenance.start()
        if count < 1:
            log.info("no job worker in this process: jobs are accepted and run by workers elsewhere "
                     "(queue: %s)", describe_queue(self.settings))
        for number in range(count):
            thread = threading.Thread(target=self._work, name=f"spineseg-worker-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                task: Task | None = self.huey.dequeue()
            except Exception:  # the queue server is unreachable: wait and try again, the job rows are safe
                log.exception("reading the job queue failed; trying again")
                self._stop.wait(self.settings.heartbeat_s)
                continue
            if task is None:
                self._stop.wait(IDLE_POLL_S)
                continue
            self.huey.execute(task)

    def maintain_once(self) -> None:
        """One heartbeat and reaper pass (the maintenance thread runs it every heartbeat)."""
        stale_s = self.settings.job_stale_s
        with self.database.session() as session:
            beat(session, worker_id=self.worker_id)
        with self.database.session() as session:
            reaped = reap_stale(session, stale_s=stale_s)
            runs = reap_stale(session, stale_s=stale_s, table=TrainingRun)
        for job_id in reaped:
            self.enqueue_segment(job_id)
        if reaped or runs:
            log.warning("re-queued %d job(s) and %d training run(s) whose worker stopped answering for %d s",
                        len(reaped), len(runs), stale_s)
        if self.pending() == 0:
            with self.database.session() as session:
                lost = lost_queued(session, older_than_s=2 * self.settings.heartbeat_s)
            for job_id in lost:
                self.enqueue_segment(job_id)
            if lost:
                log.warning("put %d queued job(s) whose queue entry was lost on the queue again", len(lost))

    def _maintain(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_s):
            try:
                self.maintain_once()
            except (SQLAlchemyError, OSError, ConnectionError) as exc:  # busy or unreachable: next beat
                log.warning("heartbeat and reaper pass failed (%s); trying again", exc)
            except Exception:
                log.exception("heartbeat and reaper pass failed; trying again")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the workers: a running job stops at its next progress step (a fraction of a
        second, or the rest of one network batch) and is queued again; after ``timeout`` s the
        threads are left behind (daemons) and a job still running is re-queued by the next
        ``start`` on this machine, or by any process once its heartbeat is stale."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()
        if self._maintenance is not None:
            self._maintenance.join(max(0.0, deadline - time.monotonic()))
            self._maintenance = None
