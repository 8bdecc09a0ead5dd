"""The segment job (one run of a study): load the study's CT -> segment with the run's model
version -> write the outputs (CT and mask as NIfTI, summary, overlays) into the run's own
folder -> score against the truth when given -> store the results on the run (``services.runs``).

Progress goes to the job row (throttled); a cancel request is noticed at the next progress
step and stops the job with status ``cancelled``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from spineseg.config import Settings
from spineseg.errors import ModelNotFoundError, SpineSegError, strip_server_paths
from spineseg.imaging.io import load_labels, load_volume
from spineseg.imaging.nifti import write_nifti
from spineseg.jobs.progress_plan import ProgressPlan, Ticker, learn_costs, load_costs
from spineseg.metrics.evaluate import evaluate_masks
from spineseg.model.inference import segment
from spineseg.registry import NO_MODEL_MESSAGE, RegisteredModel, Registry
from spineseg.services import viewer_files
from spineseg.services.corrections import study_truth
from spineseg.services.levels import run_levels, withheld_labels
from spineseg.services.outputs import summary, write_mask
from spineseg.services.quality import assess_run, verdict_of
from spineseg.services.run_exports import (
    PENDING_KEY,
    ExportInputs,
    make_exports,
    planned_exports,
    record_summary,
    write_summary,
)
from spineseg.services.runs import finish_run, record_results, run_files, runs_of
from spineseg.services.stage_times import StageTimes, read_intake_times
from spineseg.services.uncertainty import UNCERTAINTY_FILE, write_uncertainty
from spineseg.store.database import Database
from spineseg.store.files import RunFiles, StudyFiles
from spineseg.store.models import Job
from spineseg.store.studies import claim_job, get_study, release_job, set_progress

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.5
FINAL_WRITE_ATTEMPTS = 8  # about 20 s of retries on top of each attempt's busy timeout


class JobCancelled(Exception):
    """Raised from the progress callback when a cancel was requested."""


class JobInterrupted(Exception):
    """Raised from the progress callback when the server is stopping: the job is queued again."""


def json_safe(values: dict[str, Any]) -> dict[str, Any]:
    """Metrics with nan/inf replaced by ``None`` (JSON has neither), numpy scalars as Python."""
    clean: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, (float, np.floating)):
            clean[key] = float(value) if math.isfinite(value) else None
        elif isinstance(value, np.integer):
            clean[key] = int(value)
        else:
            clean[key] = value
    return clean


@dataclass
class ProgressReporter:
    """Writes progress to the job row at most every ``PROGRESS_INTERVAL_S`` and raises
    ``JobCancelled`` when the row says a cancel was requested."""

    database: Database
    job_id: str
    stopping: Callable[[], bool] = lambda: False
    worker_id: str | None = None  # the claimant: a row no longer its own stops the job
    _last: float = 0.0

    def report(self, progress: float, stage: str, *, force: bool = False) -> None:
        if self.stopping():
            raise JobInterrupted
        now = time.monotonic()
        if not force and now - self._last < PROGRESS_INTERVAL_S:
            return
        self._last = now
        try:
            with self.database.session() as session:
                cancel = set_progress(session, job_id=self.job_id, progress=progress, stage=stage,
                                      worker_id=self.worker_id)
        except OperationalError as exc:  # a busy database: progress is a hint, the job goes on
            log.debug("progress of job %s not written this time: %s", self.job_id, exc)
            return
        if cancel:
            raise JobCancelled

    plan: ProgressPlan | None = None
    _stage_text: str = "loading"

    def model_step(self, fraction: float, stage: str) -> None:
        if self.plan is not None:
            self.plan.report(fraction)
            self.report(self.plan.fraction(), self._stage_text)

    @contextmanager
    def stage(self, plan: ProgressPlan, name: str, text: str) -> Iterator[None]:
        """Enter stage ``name`` of ``plan`` (the bar moves to its start, the page shows ``text``)."""
        plan.begin(name)
        self._stage_text = text
        self.report(plan.fraction(), text, force=True)
        yield

    def tick(self) -> bool:
        """From the ticker's thread: the bar where the plan says it stands now. A cancel or a
        stop seen here is seen again by the job at its next stage; the ticking ends."""
        if self.plan is None:
            return True
        try:
            self.report(self.plan.fraction(), self._stage_text)
        except (JobCancelled, JobInterrupted):
            return False
        return True


def production_model(registry: Registry) -> RegisteredModel:
    """The registry's production version, weights verified; ``ModelNotFoundError`` if none."""
    model = registry.production()
    if model is None:
        raise ModelNotFoundError(NO_MODEL_MESSAGE)
    return model


def run_segment_job(job_id: str, *, settings: Settings, database: Database, registry: Registry,
                    stopping: Callable[[], bool] = lambda: False, worker_id: str | None = None) -> str:
    """Run one queued job to the end and return its final status (``skipped`` when it was not
    queued any more, ``queued`` when ``stopping()`` turned true before it ended: it runs again
    after the restart). A bad study or a missing model never raises: the error is stored.
    ``worker_id`` claims the row for this worker (``store.heartbeats``): every later write is
    guarded by it, so a worker that lost the row to the reaper records nothing."""
    with database.session() as session:
        if not claim_job(session, job_id=job_id, worker_id=worker_id):
            log.info("job %s is no longer queued; skipped", job_id)
            return "skipped"
        job = session.get(Job, job_id)
        study_id, model_version = job.study_id, job.model_version
    reporter = ProgressReporter(database, job_id, stopping, worker_id)
    follow_up = None
    try:
        follow_up = _segment_study(study_id, job_id, settings=settings, database=database, registry=registry,
                                   reporter=reporter, model_version=model_version)
    except JobCancelled:
        status, error = "cancelled", "cancelled while running"
    except JobInterrupted:
        with_retries(database, lambda session: release_job(session, job_id=job_id, worker_id=worker_id))
        log.info("job %s interrupted by the server stopping; queued again", job_id)
        return "queued"
    except SpineSegError as exc:
        status, error = "failed", str(exc)
    except MemoryError:
        status, error = "failed", "out of memory while segmenting this study"
    except Exception as exc:  # the job boundary: any bug ends the job as failed, never leaves it running
        log.exception("job %s failed", job_id)
        status, error = "failed", f"internal error ({type(exc).__name__}): {exc}"
    else:
        status, error = "done", None
    log.info("job %s %s%s", job_id, status, f": {error}" if error else "")
    public_error = strip_server_paths(error) if error else None  # shown to users: no server folders
    with_retries(database, lambda session: finish_run(session, job_id=job_id, status=status, error=public_error,
                                                              worker_id=worker_id))
    if status == "done" and follow_up is not None:
        _follow(job_id, follow_up)
    return status


def _follow(job_id: str, follow_up: Callable[[], None]) -> None:
    """The exports after the result is viewable: a failure there never changes the run's
    outcome (a missing export is made on its first download)."""
    try:
        follow_up()
    except Exception:  # the follow-up's boundary: the run is done and stays so
        log.exception("exports of job %s not finished (made on first download instead)", job_id)


def with_retries(database: Database, write: Callable[[Session], object], *,
                 attempts: int = FINAL_WRITE_ATTEMPTS) -> None:
    """``write`` in a session of its own, tried again while the database is busy: a job's
    outcome must not be lost (or turned into a failure) because another writer held SQLite's
    lock past the busy timeout. The last failure is raised."""
    for attempt in range(1, attempts + 1):
        try:
            with database.session() as session:
                write(session)
            return
        except OperationalError as exc:
            if attempt == attempts:
                raise
            log.warning("database busy (%s); writing the job's outcome again (attempt %d of %d)",
                        exc.orig, attempt + 1, attempts)
            time.sleep(min(2.0 ** attempt * 0.1, 5.0))


def _segment_study(study_id: str, job_id: str, *, settings: Settings, database: Database, registry: Registry,
                   reporter: ProgressReporter, model_version: str | None = None) -> Callable[[], None]:
    """Segment, score and record the run (what its result page needs first); returns the
    follow-up that makes the slower exports once the run is recorded ``done``."""
    times = StageTimes()
    with database.session() as session:
        study = get_study(session, study_id=study_id)
        if study is None:
            raise SpineSegError(f"study {study_id} was deleted")
        input_path, truth = Path(study.input_path), study_truth(settings.studies_dir, study)  # a correction first
        truth_path = truth.path if truth is not None else None
        job = session.get(Job, job_id)
        files = run_files(settings.studies_dir, job)
        if len(runs_of(study)) == 1:  # the upload's own run: its intake belongs to it
            times.seconds.update(read_intake_times(StudyFiles.of(settings.studies_dir, study_id).root))
        times.add("queue_wait", _queued_seconds(job))
        dicom = study.input_kind == "dicom"
    files.clear()  # what an interrupted attempt of this run left; other runs' folders are never touched
    reporter.report(0.01, "loading", force=True)
    with times.stage("load"):
        volume = load_volume(input_path)
        model = registry.get(model_version) if model_version else production_model(registry)  # None: before 0006
    stages = ["segment", "write_ct_mask"] + (["load_truth", "score_overlap", "score_surface"] if truth_path else [])
    stages += ["levels_measurements"] + (["score_levels"] if truth_path else []) + ["quality", "viewer_copies",
                                                                                    "record"]
    plan = ProgressPlan(stages, int(np.prod(volume.shape)), load_costs(settings.data_dir), start=0.05)
    reporter.plan = plan
    with Ticker(reporter.tick):
        with reporter.stage(plan, "segment", "segmenting"), times.stage("segment"):
            seg = segment(volume, model.path, device=settings.device, progress=reporter.model_step)
        with reporter.stage(plan, "write_ct_mask", "writing the CT and mask"), times.stage("write_ct_mask"):
            ct16 = np.clip(volume.array, -32768, 32767).astype(np.int16)
            write_nifti(ct16, volume.affine, files.ct, dtype=np.int16)
            write_mask(seg, files.mask)
        truth_mask = truth_levels = None
        metrics = None
        if truth_path is not None:
            with reporter.stage(plan, "load_truth", "reading the ground truth"), times.stage("load_truth"):
                labels = load_labels(truth_path, volume)
                truth_mask, truth_levels = labels.mask, labels.vertebrae
                write_nifti(truth_mask, volume.affine, files.truth_on_grid, dtype=np.uint8)
            with reporter.stage(plan, "score_overlap", "scoring against the ground truth"):
                scored: dict[str, float] = {}
                metrics = json_safe(evaluate_masks(seg.mask, truth_mask, volume.spacing, timings=scored))
            times.add("score_overlap", scored.get("overlap", 0.0) + scored.get("volumes", 0.0))
            times.add("score_surface", scored.get("surface", 0.0) + scored.get("interior", 0.0))
        facts = summary(seg) | {"source": Path(volume.provenance.source).name, "model_version": model.id,
                                "series_uid": volume.provenance.series_uid}
        with reporter.stage(plan, "levels_measurements", "naming and measuring the vertebrae"):
            levels, level_facts = run_levels(seg.mask, volume.array, volume.affine, files, truth_levels, times)
        facts |= level_facts
        with reporter.stage(plan, "quality", "checking the result"):
            # Once, read by every page and export; its time joins the stage times.
            facts["quality"] = assess_run(volume, seg.mask, facts.get("vertebrae"), facts.get("timings_s"))
            with times.stage("uncertainty"):  # the map and its figures, per vertebra in their entries
                facts["uncertainty"] = write_uncertainty(seg, files.folder / UNCERTAINTY_FILE, labels=levels.labels,
                                                         vertebrae=facts.get("vertebrae"))
        times.add("quality", facts.get("timings_s", {}).get("quality", 0.0))
        if metrics is not None:
            facts["metrics"] = metrics
            facts["truth"] = truth.to_json()  # what it was scored against: the upload or a correction's version
        inputs = ExportInputs(volume, seg.mask, levels.labels, truth_mask, input_path if dicom else None,
                              volume.provenance.series_uid, model.id, verdict_of(facts), withheld_labels(facts))
        exports = planned_exports(inputs)
        with reporter.stage(plan, "viewer_copies", "preparing the viewer"), times.stage("viewer_copies"):
            held = {files.ct: ct16, files.mask: seg.mask, files.levels: levels.in_convention("verse")}
            if truth_mask is not None:
                held[files.truth_on_grid] = truth_mask
            _prepare_viewer(settings.studies_dir, study_id, files, volume.shape, held)
            del held, ct16
        with reporter.stage(plan, "record", "recording the results"), times.stage("record"):
            facts |= {"stage_times_s": times.as_json(), PENDING_KEY: exports}
            write_summary(files, facts)
            with_retries(database, lambda session: record_results(
                session, job_id=job_id, model_id=seg.model_id, spine_volume_ml=seg.spine_volume_ml, summary=facts,
                metrics=metrics, inference=dict(seg.inference), worker_id=reporter.worker_id))
    learn_costs(settings.data_dir, times.as_json(), int(np.prod(volume.shape)))

    def follow_up() -> None:
        make_exports(files, exports, inputs, facts, times, stopping=reporter.stopping,
                     record=lambda final: with_retries(database, lambda session: record_summary(
                         session, job_id=job_id, summary=final)))

    return follow_up


def _queued_seconds(job: Job) -> float:
    """Seconds from the job's creation (the upload's answer) to its start on a worker."""
    if job.started_at is None or job.created_at is None:
        return 0.0
    started, created = job.started_at, job.created_at
    if (started.tzinfo is None) != (created.tzinfo is None):  # SQLite may drop the zone of one of them
        started, created = started.replace(tzinfo=None), created.replace(tzinfo=None)
    return max((started - created).total_seconds(), 0.0)


def _prepare_viewer(studies_dir: Path, study_id: str, files: RunFiles, shape: tuple[int, ...],
                    held: viewer_files.Held | None = None) -> None:
    """The viewer's copies (CT cropped, int16; labels uint8; the quick first view), made now
    so the result page's first view does not wait for them (19.7 s -> about 6 s for a
    512x512x300 CT in headless Chromium). They are only a cache: when this fails the viewer
    makes them on first request, so the run's result stands."""
    try:
        viewer_files.prepare_run(StudyFiles.of(studies_dir, study_id).root, files.ct,
                                 [files.mask, files.truth_on_grid, files.levels], viewer_files.first_view_step(shape),
                                 held)
    except (OSError, ValueError, MemoryError):
        log.warning("viewer copies of run %s not made now (made on first view instead)", files.folder.name,
                    exc_info=True)

