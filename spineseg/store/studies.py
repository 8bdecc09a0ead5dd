"""Queries on studies and jobs. Job state changes are single UPDATEs guarded by the current
status, so the web threads and the worker never overwrite each other's decisions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from spineseg.store.models import Correction, Job, Study

FINISHED = ("done", "failed", "cancelled")


def new_id() -> str:
    return uuid.uuid4().hex


def create_study(session: Session, *, study_id: str, owner_id: int | None, name: str, input_kind: str,
                 input_path: str, truth_path: str | None, patient_pseudonym: str | None = None) -> Study:
    study = Study(id=study_id, owner_id=owner_id, name=name[:255], input_kind=input_kind,
                  input_path=input_path, truth_path=truth_path, patient_pseudonym=patient_pseudonym)
    session.add(study)
    session.flush()
    return study


def create_job(session: Session, *, study_id: str, kind: str = "segment") -> Job:
    job = Job(id=new_id(), study_id=study_id, kind=kind, status="queued", progress=0.0, stage="queued",
              cancel_requested=False)
    session.add(job)
    session.flush()
    return job


def get_study(session: Session, *, study_id: str) -> Study | None:
    return session.get(Study, study_id)


def get_job(session: Session, *, job_id: str) -> Job | None:
    return session.get(Job, job_id)


@dataclass(frozen=True)
class StudyFilter:
    """Study list filters; every field optional. ``status`` is the latest job's status."""

    search: str | None = None
    status: str | None = None
    model_id: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    with_truth: bool | None = None
    limit: int = 200


def list_studies(session: Session, *, filters: StudyFilter) -> list[Study]:
    """Studies newest first matching ``filters``."""
    query = select(Study).order_by(Study.created_at.desc())
    if filters.search:
        query = query.where(Study.name.ilike(f"%{filters.search}%") | Study.id.startswith(filters.search))
    if filters.model_id:
        query = query.where(Study.model_id == filters.model_id)
    if filters.created_from:
        query = query.where(Study.created_at >= filters.created_from)
    if filters.created_to:
        query = query.where(Study.created_at <= filters.created_to)
    if filters.with_truth is not None:  # an uploaded truth or a correction (issue 32)
        truth = Study.truth_path.is_not(None) | Study.id.in_(select(Correction.study_id))
        query = query.where(truth if filters.with_truth else ~truth)
    if filters.status:
        latest = (select(Job.study_id, func.max(Job.created_at).label("latest")).group_by(Job.study_id)
                  .subquery())
        query = (query.join(latest, latest.c.study_id == Study.id)
                 .join(Job, (Job.study_id == Study.id) & (Job.created_at == latest.c.latest))
                 .where(Job.status == filters.status))
    return list(session.scalars(query.limit(filters.limit)))


def study_ids(session: Session) -> set[str]:
    return set(session.scalars(select(Study.id)))


def model_ids(session: Session) -> list[str]:
    return sorted(m for m in session.scalars(select(Study.model_id).distinct()) if m)


def rename_study(session: Session, *, study: Study, name: str) -> None:
    study.name = name[:255]


def delete_study(session: Session, *, study_id: str) -> bool:
    study = session.get(Study, study_id)
    if study is None:
        return False
    session.delete(study)
    return True


def queue_position(session: Session, *, job: Job) -> int | None:
    """1 for the next queued job to run, ``None`` when ``job`` is not queued."""
    if job.status != "queued":
        return None
    ahead = session.scalar(select(func.count()).select_from(Job)
                           .where(Job.status == "queued", Job.created_at < job.created_at))
    return int(ahead or 0) + 1


def _now() -> datetime:
    return datetime.now(UTC)


def _held_by(worker_id: str | None) -> list[Any]:
    """The guard of a worker's write: the row still names it (``None``: no claimant check)."""
    return [] if worker_id is None else [Job.worker_id == worker_id]


def claim_job(session: Session, *, job_id: str, worker_id: str | None = None) -> bool:
    """Mark a queued job running (by ``worker_id``, heartbeat now); ``False`` when it is no
    longer queued (cancelled, finished, or already taken by a duplicate queue entry)."""
    now = _now()
    result = session.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                             .values(status="running", started_at=now, stage="loading", progress=0.0,
                                     worker_id=worker_id, heartbeat_at=now, cancel_requested=False))
    return result.rowcount == 1


def set_progress(session: Session, *, job_id: str, progress: float, stage: str, worker_id: str | None = None) -> bool:
    """Record progress of a running job; returns whether it must stop: a cancel was requested,
    or (with ``worker_id``) the row is no longer this worker's (re-queued after its heartbeat
    went stale)."""
    held = session.execute(update(Job).where(Job.id == job_id, Job.status == "running", *_held_by(worker_id))
                           .values(progress=max(0.0, min(1.0, progress)), stage=stage[:64])).rowcount
    if worker_id is not None and not held:
        return True
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def finish_job(session: Session, *, job_id: str, status: str, error: str | None = None,
               worker_id: str | None = None) -> bool:
    """Record a job's end; ``False`` (nothing written) when it had already ended or, with
    ``worker_id``, is no longer that worker's: a finished job is never finished twice."""
    values: dict[str, Any] = {"status": status, "finished_at": _now(), "error": error, "stage": status}
    if status == "done":
        values["progress"] = 1.0
    guard = [Job.status == "running", *_held_by(worker_id)] if worker_id else [Job.status.in_(("queued", "running"))]
    return session.execute(update(Job).where(Job.id == job_id, *guard).values(**values)).rowcount == 1


def request_cancel(session: Session, *, job_id: str) -> str | None:
    """Cancel a queued job now, or ask a running one to stop at its next progress step.
    Returns the status after the request, ``None`` for an unknown job."""
    job = session.get(Job, job_id)
    if job is None:
        return None
    if job.status == "queued":
        finish_job(session, job_id=job_id, status="cancelled", error="cancelled before it started")
    elif job.status == "running":
        session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    session.refresh(job)
    return job.status


def requeue_interrupted(session: Session) -> list[str]:
    """Jobs left ``running`` by a stopped server go back to ``queued``; returns the ids of every
    queued job, oldest first, so the caller can put them on the queue again."""
    session.execute(update(Job).where(Job.status == "running")
                    .values(status="queued", stage="queued (restarted)", progress=0.0))
    return list(session.scalars(select(Job.id).where(Job.status == "queued").order_by(Job.created_at)))


def release_job(session: Session, *, job_id: str, worker_id: str | None = None) -> bool:
    """A running job that a stopping server interrupted goes back to ``queued`` (guarded by
    its status and claimant); the next start runs it again from the beginning."""
    result = session.execute(update(Job).where(Job.id == job_id, Job.status == "running", *_held_by(worker_id))
                             .values(status="queued", stage="queued (server stopped)", progress=0.0,
                                     worker_id=None, heartbeat_at=None))
    return bool(result.rowcount)

