"""The training job, run in its own process (``python -m spineseg.jobs.train_job RUN_ID``) by
``spineseg.jobs.train_scheduler``: build the run's HDF5 dataset from the dataset's cases ->
fine-tune the base version (or train from scratch) -> register a new version.

Live state (epoch, step, loss curve, validation Dice per epoch, ETA) goes to the run's row at
most every ``PROGRESS_INTERVAL_S``. A cancel request raises out of the training loop before
anything is registered; SIGTERM (server shutdown, or the server's death: see
``spineseg.jobs.processes.die_with_parent``) stops after the current step and puts the run back
in the queue, to resume from its last epoch's checkpoint. A run registers at most one version
(``run-<run id>``, its card naming the run): a retry finds it and records it instead.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from spineseg.config import Settings
from spineseg.errors import ModelNotFoundError, SpineSegError, strip_server_paths
from spineseg.jobs.processes import PARENT_PID_FLAG, die_with_parent
from spineseg.model.dataset import build_dataset
from spineseg.model.train import TrainConfig, TrainEvent
from spineseg.registry import Registry
from spineseg.services.datasets import case_specs, effective_split
from spineseg.services.training import SCRATCH, train_version
from spineseg.store.database import Database
from spineseg.store.datasets import lock_dataset
from spineseg.store.locks import guard_registry
from spineseg.store.training_runs import finish_run, get_run, record_progress, requeue_run

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.5
MAX_LOSS_POINTS = 600
DEFAULT_SPACING = (1.5, 1.5, 2.5)
TRAINING_NICENESS = 10


class TrainingCancelled(Exception):
    """A cancel was requested for the run."""


def run_folder(settings: Settings, run_id: str) -> Path:
    return settings.data_dir / "training" / run_id


def train_config(settings: dict[str, Any], device: str) -> TrainConfig:
    """The run's stored settings as a ``TrainConfig`` (unknown keys were refused at start)."""
    total = int(settings["epochs"]) * int(settings["steps_per_epoch"])
    warmup = settings.get("warmup_steps")
    return TrainConfig(epochs=int(settings["epochs"]), steps_per_epoch=int(settings["steps_per_epoch"]),
                       batch_size=int(settings["batch_size"]), patch_size=int(settings["patch_size"]),
                       lr=float(settings["lr"]), patience=int(settings["patience"]), seed=int(settings["seed"]),
                       warmup_steps=int(warmup) if warmup is not None else max(1, min(100, total // 10)),
                       device=device)


def settings_text(config: TrainConfig) -> str:
    """The effective settings of a run for its log, every value resolved (no ``None``)."""
    return (f"epochs {config.epochs}, steps_per_epoch {config.steps_per_epoch}, batch_size {config.batch_size}, "
            f"patch_size {config.patch_size}, lr {config.lr:g}, warmup_steps {config.warmup_steps}, "
            f"patience {config.patience}, seed {config.seed}, device {config.device}")


class RunProgress:
    """Turns ``TrainEvent``s into the run's live state and notices cancel requests."""

    def __init__(self, database: Database, run_id: str, total_steps: int, *,
                 history: list[dict[str, Any]] | None = None, losses: list[list[float]] | None = None,
                 steps_per_epoch: int = 1) -> None:
        self.database, self.run_id, self.total_steps = database, run_id, total_steps
        # A resumed run continues after its last finished epoch: keep what happened up to there.
        self.history: list[dict[str, Any]] = list(history or [])
        done = len(self.history) * steps_per_epoch
        self.losses: list[list[float]] = [point for point in (losses or []) if point[0] <= done]
        self.started = time.monotonic()
        self.first_step: int | None = None
        self._last_write = 0.0

    def write(self, values: dict[str, Any], *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_write < PROGRESS_INTERVAL_S:
            return
        self._last_write = now
        with self.database.session() as session:
            cancel = record_progress(session, run_id=self.run_id, values=values)
        if cancel:
            raise TrainingCancelled

    def stage(self, stage: str, progress: float = 0.0) -> None:
        self.write({"stage": stage, "progress": progress}, force=True)

    def _eta(self, step: int) -> float | None:
        if self.first_step is None:
            self.first_step, self.started = step, time.monotonic()
            return None
        done = step - self.first_step
        if done <= 0:
            return None
        return (time.monotonic() - self.started) / done * (self.total_steps - step)

    def __call__(self, event: TrainEvent) -> None:
        if event.kind == "epoch":
            val = event.metrics.get("val_dice")
            self.history = [h for h in self.history if h["epoch"] < event.epoch]  # a re-run epoch replaces its record
            self.history.append({"epoch": event.epoch, "loss": event.loss,
                                 "val_dice": val if val is not None and math.isfinite(val) else None})
            # Forced, and with the loss curve: step writes are throttled, so a fast epoch would
            # otherwise end with the curve's last points never stored.
            self.write({"history": list(self.history), "epoch": event.epoch, "step": event.step,
                        "losses": list(self.losses)}, force=True)
            return
        self.losses.append([event.step, round(float(event.loss), 5)])
        if len(self.losses) > MAX_LOSS_POINTS:
            self.losses = self.losses[:-1:2] + self.losses[-1:]
        eta = self._eta(event.step)
        self.write({"stage": "training", "epoch": event.epoch + 1, "step": event.step,
                    "total_steps": event.total_steps, "progress": 0.98 * event.step / max(1, event.total_steps),
                    "losses": list(self.losses), "eta_seconds": eta})


def run_training(run_id: str, *, settings: Settings, database: Database) -> str:
    """Run the claimed (``running``) run to its end; returns the final status. Never raises
    for a bad dataset or base: the error is stored on the run."""
    with database.session() as session:
        run = get_run(session, run_id=run_id)
        if run is None or run.status != "running":
            log.info("run %s is not running; nothing to do", run_id)
            return "skipped"
        dataset = run.dataset
        specs, split = case_specs(dataset), effective_split(dataset)
        base, stored, seed = run.base, dict(run.settings), dataset.seed
        history, losses = list(run.history or []), list(run.losses or [])
        dataset_id, dataset_name, user = dataset.id, dataset.name, run.created_by
        notes = run.notes or f"trained in the web service by {user} on dataset {dataset_name!r} ({dataset_id})"
    registry = Registry(settings.registry_dir)
    guard_registry(registry, database)  # other machines may register or promote meanwhile
    folder = run_folder(settings, run_id)
    config = train_config(stored, settings.device)
    progress = RunProgress(database, run_id, config.epochs * config.steps_per_epoch, history=history, losses=losses,
                           steps_per_epoch=config.steps_per_epoch)
    status, error = "failed", None
    try:
        registered = registry.version_of_training_run(run_id)
        if registered is not None:  # a trainer before us registered it, then died before recording it
            log.info("run %s already registered version %s; recording it", run_id, registered.id)
            return _record_done(database, run_id, registered.id, dataset_id, split, folder)
        spacing = DEFAULT_SPACING if base == SCRATCH else tuple(registry.get(base).card.spacing_mm)
        h5 = folder / "dataset.h5"
        if not h5.exists():
            progress.stage("preparing the dataset")
            build_dataset(specs, h5, spacing=spacing, seed=seed,
                          progress=lambda f, name: progress.write({"stage": f"preparing {name}"[:64]}, force=True))
        progress.stage("training")
        log.info("run %s: training from %s on dataset %r (%d cases), settings %s", run_id, base, dataset_name,
                 len(specs), settings_text(config))
        version, _result = train_version(h5, base, config, registry=registry, checkpoint_dir=folder / "checkpoint",
                                        resume=True, callback=progress, notes=f"{notes}; run {run_id}",
                                        dataset_info={"name": dataset_name, "id": dataset_id, "trained_by": user},
                                        training_run_id=run_id)
        if version is None:
            with database.session() as session:
                cancelled = bool(get_run(session, run_id=run_id).cancel_requested)
                if not cancelled:
                    requeue_run(session, run_id=run_id, stage="queued (stopped with the server; resumes)")
            if not cancelled:
                return "requeued"
            status, error = "cancelled", "cancelled while training; nothing was registered"
        else:
            return _record_done(database, run_id, version.id, dataset_id, split, folder)
    except TrainingCancelled:
        status, error = "cancelled", "cancelled while running; nothing was registered"
    except ModelNotFoundError as exc:
        error = f"base version: {exc}"
    except SpineSegError as exc:
        error = str(exc)
    except MemoryError:
        error = "out of memory while training: lower the batch or patch size"
    except (OSError, ValueError, RuntimeError) as exc:
        log.exception("run %s failed", run_id)
        error = f"internal error ({type(exc).__name__}): {exc}"
    with database.session() as session:
        finish_run(session, run_id=run_id, status=status, error=strip_server_paths(error) if error else error)
    shutil.rmtree(folder / "checkpoint", ignore_errors=True)
    log.info("run %s %s: %s", run_id, status, error)
    return status


def _record_done(database: Database, run_id: str, version_id: str, dataset_id: str, split: dict[str, str],
                 folder: Path) -> str:
    """Lock the dataset's split to the version and mark the run done with it (a guarded
    UPDATE: a run that already ended, or names another version, is left as it is)."""
    with database.session() as session:
        lock_dataset(session, dataset_id=dataset_id, version_id=version_id, frozen_split=split)
        recorded = finish_run(session, run_id=run_id, status="done", version_id=version_id)
    shutil.rmtree(folder / "checkpoint", ignore_errors=True)
    if not recorded:
        log.warning("run %s had already ended; version %s not recorded on it again", run_id, version_id)
    log.info("run %s done -> version %s", run_id, version_id)
    return "done"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run one claimed training run (started by the service)")
    parser.add_argument("run_id")
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument(PARENT_PID_FLAG, type=int, default=None,
                        help="PID of the server that started this process (default: the parent now)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not die_with_parent(args.parent_pid):
        log.warning("the server that started run %s is already gone; exiting (its restart re-queues the run)",
                    args.run_id)
        return 0
    settings = Settings(data_dir=args.data_dir, database_url=args.database_url, device=args.device)
    os.nice(TRAINING_NICENESS)  # the web process and segment jobs come first on a shared CPU
    database = Database(settings.sqlalchemy_url)
    try:
        status = run_training(args.run_id, settings=settings, database=database)
    finally:
        database.dispose()
    return 0 if status in ("done", "cancelled", "requeued", "skipped") else 1


if __name__ == "__main__":
    sys.exit(main())
