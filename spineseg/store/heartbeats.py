"""Who runs a job, and whether it is still alive: the worker id and heartbeat on job and
training-run rows.

A worker claims a row by a guarded UPDATE that writes its id (``host:pid:nonce``) and a
heartbeat; while it runs it renews the heartbeat of every row it holds (one UPDATE per table
per interval, whatever the number of jobs). Any live process re-queues a ``running`` row whose
heartbeat is older than the stale bound (its worker died: kill -9, machine lost) with an UPDATE
guarded by the worker id and heartbeat it saw, so two reapers cannot both re-queue it and a
worker that comes back cannot record anything: its own writes name its id, which the row no
longer carries. A finished row is never claimed again (claims need ``queued``).
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from spineseg.store.models import Job
from spineseg.store.training_models import TrainingRun

TABLES = (Job, TrainingRun)
REAPED_STAGE = "queued (its worker stopped answering)"


def new_worker_id() -> str:
    """``host:pid:nonce``: unique per process start, and says where the worker ran."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{secrets.token_hex(4)}"


def _now() -> datetime:
    return datetime.now(UTC)


def beat(session: Session, *, worker_id: str) -> int:
    """Renew the heartbeat of every running job and training run ``worker_id`` holds; returns
    how many rows it still holds."""
    now = _now()
    held = 0
    for table in TABLES:
        result = session.execute(update(table).where(table.worker_id == worker_id, table.status == "running")
                                 .values(heartbeat_at=now))
        held += result.rowcount
    return held


def _requeue(session: Session, table: type[Job] | type[TrainingRun], row_id: str, worker_id: str | None,
             heartbeat_at: datetime | None, stage: str) -> bool:
    values: dict[str, object] = {"status": "queued", "stage": stage, "worker_id": None, "heartbeat_at": None}
    if table is Job:
        values["progress"] = 0.0
    else:
        values["pid"] = None
    guard = [table.id == row_id, table.status == "running"]
    guard.append(table.worker_id.is_(None) if worker_id is None else table.worker_id == worker_id)
    guard.append(table.heartbeat_at.is_(None) if heartbeat_at is None else table.heartbeat_at == heartbeat_at)
    return session.execute(update(table).where(*guard).values(**values)).rowcount == 1


def reap_stale(session: Session, *, stale_s: float, table: type[Job] | type[TrainingRun] = Job) -> list[str]:
    """Re-queue the running rows of ``table`` whose heartbeat is older than ``stale_s`` seconds
    (or missing: claimed before heartbeats existed); returns the ids re-queued by this call."""
    cutoff = _now() - timedelta(seconds=stale_s)
    rows = session.execute(select(table.id, table.worker_id, table.heartbeat_at)
                           .where(table.status == "running",
                                  or_(table.heartbeat_at.is_(None), table.heartbeat_at < cutoff))).all()
    return [row_id for row_id, worker, at in rows if _requeue(session, table, row_id, worker, at, REAPED_STAGE)]


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def same_machine(worker_id: str | None, *, me: str) -> bool:
    """Whether ``worker_id`` ran on this machine (``None``: claimed before heartbeats, when
    every process shared one machine)."""
    return worker_id is None or worker_id.partition(":")[0] == me.partition(":")[0]


def dead_here(worker_id: str | None, *, me: str) -> bool:
    """Whether ``worker_id`` names a process of this machine that is gone (or an earlier
    queue of this very process): its rows need not wait for the stale bound."""
    if worker_id is None:
        return True  # claimed by a version without heartbeats: only one machine ran them
    host, _, rest = worker_id.partition(":")
    pid_text, _, _nonce = rest.partition(":")
    my_host, _, my_rest = me.partition(":")
    if host != my_host or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == int(my_rest.partition(":")[0]):
        return worker_id != me
    return not process_alive(pid)


def requeue_dead_local(session: Session, *, me: str, table: type[Job] | type[TrainingRun] = Job,
                       keep: frozenset[str] = frozenset()) -> list[str]:
    """At start: re-queue the running rows whose worker was a process of this machine that is
    gone, at once (rows of live workers, and of other machines, are left to the heartbeat);
    ``keep``: ids to leave running whatever their worker."""
    rows = session.execute(select(table.id, table.worker_id, table.heartbeat_at)
                           .where(table.status == "running")).all()
    stage = "queued (restarted)"
    return [row_id for row_id, worker, at in rows
            if row_id not in keep and dead_here(worker, me=me) and _requeue(session, table, row_id, worker, at, stage)]


def lost_queued(session: Session, *, older_than_s: float) -> list[str]:
    """Queued segment jobs older than ``older_than_s``, oldest first: when the queue is empty
    these lost their queue entry (a worker popped it and died before claiming it)."""
    cutoff = _now() - timedelta(seconds=older_than_s)
    return list(session.scalars(select(Job.id).where(Job.status == "queued", Job.created_at < cutoff)
                                .order_by(Job.created_at)))


def queued_jobs(session: Session) -> list[str]:
    return list(session.scalars(select(Job.id).where(Job.status == "queued").order_by(Job.created_at)))
