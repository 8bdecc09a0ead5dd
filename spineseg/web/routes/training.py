"""Training API under ``/api/training`` (researchers): start a run (base version or scratch,
dataset, settings), list runs, read live progress, read the log, cancel.

Runs execute one at a time in their own process (``spineseg.jobs.train_scheduler``); more
are queued. A finished run names the version it registered; a cancelled or failed run
registered nothing.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from spineseg.errors import InputError, ModelNotFoundError
from spineseg.jobs.train_job import train_config
from spineseg.jobs.train_scheduler import read_log_tail
from spineseg.services.datasets import effective_split
from spineseg.services.training import SCRATCH
from spineseg.store import accounts
from spineseg.store.datasets import get_dataset
from spineseg.store.training_models import TrainingRun
from spineseg.store.training_runs import create_run, get_run, list_runs, queue_position, request_cancel
from spineseg.web.deps import DbSession, NeedsDiskRoom, Services
from spineseg.web.training_deps import Trainer

router = APIRouter(prefix="/api/training", tags=["training"])


class TrainingSettings(BaseModel):
    """The documented knobs of a run (everything is recorded in the new version's card)."""

    epochs: int = Field(10, ge=1, le=500, description="passes of steps_per_epoch steps; validation after each")
    steps_per_epoch: int = Field(100, ge=1, le=10000, description="optimiser steps per epoch")
    batch_size: int = Field(16, ge=1, le=128, description="2.5D patches per step")
    patch_size: int = Field(160, ge=32, le=512, description="patch edge in pixels at the model spacing")
    lr: float = Field(1e-3, gt=0, le=1.0, description="peak learning rate (AdamW, warm-up then cosine)")
    patience: int = Field(10, ge=1, le=500, description="stop after this many epochs without a better val Dice")
    seed: int = Field(0, ge=0, description="seed of sampling and augmentation")
    warmup_steps: int | None = Field(None, ge=0, description="default: a tenth of all steps, at most 100")


class TrainingStart(BaseModel):
    dataset_id: str
    base: str = Field(description="a registry version id to fine-tune, or 'scratch'")
    settings: TrainingSettings = Field(default_factory=TrainingSettings)
    notes: str = Field("", max_length=2000, description="recorded in the new version's card")


def effective_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings a run trains with, each default resolved (``warmup_steps`` ``None`` means a
    tenth of all steps, at most 100: the number is shown, never ``None``)."""
    try:
        warmup: Any = train_config(settings, "auto").warmup_steps
    except (KeyError, TypeError, ValueError):
        warmup = settings.get("warmup_steps")
    return {k: v for k, v in (settings | {"warmup_steps": warmup}).items() if v is not None}


def run_json(session: Session, run: TrainingRun) -> dict[str, Any]:
    settings = run.settings or {}
    return {
        "id": run.id, "status": run.status, "stage": run.stage, "progress": round(run.progress, 4),
        "dataset": {"id": run.dataset_id, "name": run.dataset.name if run.dataset else None},
        "base": run.base, "settings": settings, "effective_settings": effective_settings(settings),
        "notes": run.notes,
        "epoch": run.epoch, "epochs": settings.get("epochs"), "step": run.step, "total_steps": run.total_steps,
        "eta_seconds": None if run.eta_seconds is None else round(run.eta_seconds, 1),
        "losses": run.losses or [], "history": run.history or [],
        "queue_position": queue_position(session, run=run), "cancel_requested": run.cancel_requested,
        "version_id": run.version_id, "error": run.error, "created_by": run.created_by,
        "created_at": run.created_at.isoformat(),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


def load_run(session: Session, run_id: str) -> TrainingRun:
    run = get_run(session, run_id=run_id)
    if run is None:
        raise HTTPException(404, f"no training run with id {run_id!r}")
    return run


def start_run(session: Session, services: Any, body: TrainingStart, username: str) -> TrainingRun:
    """Check the dataset and base, then queue the run (shared by the API and the page)."""
    dataset = get_dataset(session, dataset_id=body.dataset_id)
    if dataset is None:
        raise InputError("dataset_id", f"no dataset with id {body.dataset_id!r}")
    if not dataset.cases:
        raise InputError("dataset_id", f"dataset {dataset.name!r} has no cases yet")
    if "train" not in effective_split(dataset).values():
        raise InputError("dataset_id", f"dataset {dataset.name!r} has no patient in the training split")
    if body.base != SCRATCH:
        try:
            services.registry.get(body.base)
        except ModelNotFoundError as exc:
            raise InputError("base", str(exc)) from exc
    run = create_run(session, dataset_id=dataset.id, base=body.base, settings=body.settings.model_dump(),
                     notes=body.notes, created_by=username)
    accounts.record(session, username=username, action="training.start", target=run.id,
                    detail=f"dataset {dataset.name}, base {body.base}")
    session.commit()  # before the answer: the next request must see it
    return run


@router.post("", status_code=202, summary="Queue a training run; runs one at a time in its own process",
             dependencies=[NeedsDiskRoom])
def start(body: TrainingStart, user: Trainer, session: DbSession, services: Services) -> dict[str, Any]:
    run = start_run(session, services, body, user.username)
    return run_json(session, run)


@router.get("", summary="Training runs, newest first")
def runs(_user: Trainer, session: DbSession) -> list[dict[str, Any]]:
    return [run_json(session, r) | {"losses": None} for r in list_runs(session)]


@router.get("/{run_id}", summary="Live state: status, epoch, step, ETA, loss and validation-Dice history")
def run_status(run_id: str, _user: Trainer, session: DbSession) -> dict[str, Any]:
    return run_json(session, load_run(session, run_id))


@router.get("/{run_id}/log", response_class=PlainTextResponse, summary="The end of the run's log (plain text)")
def run_log(run_id: str, _user: Trainer, session: DbSession, services: Services) -> str:
    load_run(session, run_id)
    return read_log_tail(services.settings, run_id)


@router.post("/{run_id}/cancel", summary="Cancel a queued or running run; nothing is registered")
def cancel(run_id: str, user: Trainer, session: DbSession) -> dict[str, Any]:
    if request_cancel(session, run_id=run_id) is None:
        raise HTTPException(404, f"no training run with id {run_id!r}")
    accounts.record(session, username=user.username, action="training.cancel", target=run_id)
    session.commit()  # before the answer: the next request must see it
    return run_json(session, load_run(session, run_id))
