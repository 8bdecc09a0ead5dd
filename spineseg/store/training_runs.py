"""Queries on training runs. State changes are single UPDATEs guarded by the current status,
so the web process (cancel), the scheduler (claim) and the training process (progress,
finish) never overwrite each other's decisions."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from spineseg.store.studies import new_id
from spineseg.store.training_models import TrainingRun

ACTIVE = ("queued", "running")


def _now() -> datetime:
    return datetime.now(UTC)


def create_run(session: Session, *, dataset_id: str, base: str, settings: dict[str, Any], notes: str,
               created_by: str | None) -> TrainingRun:
    run = TrainingRun(id=new_id(), dataset_id=dataset_id, base=base, settings=settings, notes=notes,
                      status="queued", stage="queued", progress=0.0, epoch=0, step=0,
                      total_steps=int(settings.get("epochs", 0)) * int(settings.get("steps_per_epoch", 0)),
                      losses=[], history=[], cancel_requested=False, created_by=created_by)
    session.add(run)
    session.flush()
    return run


def get_run(session: Session, *, run_id: str) -> TrainingRun | None:
    return session.get(TrainingRun, run_id)


def list_runs(session: Session, *, limit: int = 100) -> list[TrainingRun]:
    return list(session.scalars(select(TrainingRun).order_by(TrainingRun.created_at.desc()).limit(limit)))


def run_for_version(session: Session, *, version_id: str) -> TrainingRun | None:
    return session.scalar(select(TrainingRun).where(TrainingRun.version_id == version_id))


def runs_by_version(session: Session) -> dict[str, TrainingRun]:
    runs = session.scalars(select(TrainingRun).where(TrainingRun.version_id.is_not(None)))
    return {run.version_id: run for run in runs if run.version_id}


def queue_position(session: Session, *, run: TrainingRun) -> int | None:
    """1 for the next queued run, ``None`` when ``run`` is not queued."""
    if run.status != "queued":
        return None
    ahead = session.scalar(select(func.count()).select_from(TrainingRun)
                           .where(TrainingRun.status == "queued", TrainingRun.created_at < run.created_at))
    return int(ahead or 0) + 1


def next_queued(session: Session) -> str | None:
    return session.scalar(select(TrainingRun.id).where(TrainingRun.status == "queued")
                          .order_by(TrainingRun.created_at).limit(1))


def running_count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(TrainingRun)
                              .where(TrainingRun.status == "running")) or 0)


def claim_run(session: Session, *, run_id: str, worker_id: str | None = None) -> bool:
    """queued -> running (by ``worker_id``, heartbeat now: see ``store.heartbeats``); ``False``
    when someone else changed it first."""
    now = _now()
    result = session.execute(update(TrainingRun).where(TrainingRun.id == run_id, TrainingRun.status == "queued")
                             .values(status="running", stage="starting", started_at=now, worker_id=worker_id,
                                     heartbeat_at=now))
    return result.rowcount == 1


def set_pid(session: Session, *, run_id: str, pid: int | None) -> None:
    session.execute(update(TrainingRun).where(TrainingRun.id == run_id).values(pid=pid))


def record_progress(session: Session, *, run_id: str, values: dict[str, Any]) -> bool:
    """Write live state of a running run; returns whether a cancel was requested."""
    session.execute(update(TrainingRun).where(TrainingRun.id == run_id, TrainingRun.status == "running")
                    .values(**values))
    return bool(session.scalar(select(TrainingRun.cancel_requested).where(TrainingRun.id == run_id)))


def finish_run(session: Session, *, run_id: str, status: str, error: str | None = None,
               version_id: str | None = None) -> bool:
    """Record the end of an active run; ``False`` (nothing written) when it had already ended
    or, with ``version_id``, when the row already names a different version."""
    values: dict[str, Any] = {"status": status, "stage": status, "error": error, "finished_at": _now(), "pid": None}
    guard = [TrainingRun.id == run_id, TrainingRun.status.in_(ACTIVE)]
    if version_id is not None:
        values["version_id"] = version_id
        guard.append(TrainingRun.version_id.is_(None) | (TrainingRun.version_id == version_id))
    if status == "done":
        values |= {"progress": 1.0, "eta_seconds": 0.0}
    return session.execute(update(TrainingRun).where(*guard).values(**values)).rowcount == 1


def requeue_run(session: Session, *, run_id: str, stage: str) -> None:
    """A running run stopped by a server shutdown goes back to the queue (it resumes from its
    last epoch's checkpoint)."""
    session.execute(update(TrainingRun).where(TrainingRun.id == run_id, TrainingRun.status == "running")
                    .values(status="queued", stage=stage[:64], pid=None, worker_id=None, heartbeat_at=None))


def running_runs(session: Session) -> list[tuple[str, int | None, str | None]]:
    """(run id, recorded trainer PID, claimant worker id) of every ``running`` run."""
    rows = session.execute(select(TrainingRun.id, TrainingRun.pid, TrainingRun.worker_id)
                           .where(TrainingRun.status == "running"))
    return [(run_id, pid, worker) for run_id, pid, worker in rows]


def requeue_interrupted(session: Session, *, keep: Collection[str] = ()) -> list[str]:
    """Runs left ``running`` by a stopped server go back to ``queued``, except those in
    ``keep`` (their trainer is still alive); returns the ids re-queued."""
    ids = [run_id for run_id in session.scalars(select(TrainingRun.id).where(TrainingRun.status == "running"))
           if run_id not in keep]
    for run_id in ids:
        requeue_run(session, run_id=run_id, stage="queued (server restarted)")
    return ids


def request_cancel(session: Session, *, run_id: str) -> str | None:
    """Cancel a queued run now, or ask a running one to stop (it registers nothing). Returns
    the status after the request, ``None`` for an unknown run."""
    run = session.get(TrainingRun, run_id)
    if run is None:
        return None
    if run.status == "queued":
        finish_run(session, run_id=run_id, status="cancelled", error="cancelled before it started")
    elif run.status == "running":
        session.execute(update(TrainingRun).where(TrainingRun.id == run_id).values(cancel_requested=True,
                                                                                   stage="cancelling"))
    session.refresh(run)
    return run.status
