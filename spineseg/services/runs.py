"""A study's runs: every segmentation (the first and each re-run) is a segment job with its own
model version, settings, output folder, summary and metrics, and no run ever replaces another.

- ``new_run`` queues one with the version resolved now (a concrete registry id, never
  "whatever production is when it starts"), ``record_results`` stores what it produced on its
  own row, ``finish_run`` ends it.
- The study's *current run* (the result it shows) is recorded on the study
  (``Study.pinned_job_id``, with why in ``Study.current_choice``) and changes only when
  (a) a person chooses a run (``pin_run``), (b) a re-run of the production version ends done
  and its confirmation announced that it would become the result (``new_run(make_current=True)``,
  refused for any other version), or (c) the study has no current run yet and a run asked for
  the production version ends done (the upload's first run). A re-run with another version
  never becomes the result by itself (issue 28: an older version's re-run used to replace it).
- The study keeps a copy of its current run's results (``Study.model_id``, ``dice``,
  ``metrics``...) so lists, filters and the evaluation need no join; ``refresh_current`` is the
  only writer of that copy.
- ``run_files`` is a run's folder, ``RUN_DOWNLOADS`` / ``run_downloads`` what can be downloaded
  from it (add a new output here and it shows in the API and on the page).
- ``compare_runs``: Dice between two runs' masks and their volume difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from sqlalchemy.orm import Session

from spineseg.errors import InputError, IntegrityError, ModelUnavailableError
from spineseg.metrics.overlap import confusion_counts, dice_from_counts
from spineseg.registry import Registry, usable_production
from spineseg.store.files import RunFiles, StudyFiles
from spineseg.store.models import Job, Study
from spineseg.store.studies import create_job, finish_job, get_job, get_study

PRODUCTION = "production"

# Why a run is its study's current one (``Study.current_choice["reason"]``), as the page says it.
REASONS = {
    "first_done": "the study's first finished segmentation with the production version",
    "announced_rerun": "a re-run with the production version; its confirmation said it would become the result",
    "chosen": "chosen by a person",
    "newest_done": "the newest finished run when the result was last derived (before results were chosen)",
}


def _run_error(reason: str) -> InputError:
    """An ``InputError`` about the ``run`` field (422 naming it)."""
    error = InputError("run", reason)
    error.field = "run"
    return error


def output_dir_for(job_id: str) -> str:
    """The folder (relative to the study's) of a run made since runs are kept."""
    return f"runs/{job_id}"


def run_files(studies_dir: Path, job: Job) -> RunFiles:
    """The files of ``job``'s run (``outputs`` for a run made before migration 0006)."""
    return StudyFiles.of(studies_dir, job.study_id).run(job.output_dir or output_dir_for(job.id))


@dataclass(frozen=True)
class RunDownload:
    """One downloadable output: its key in the API's ``downloads``, the URL's last part, and
    whether the study has it (the truth only with a truth, the SEG only for DICOM input)."""

    key: str
    path: str
    label: str
    needs: str = ""  # "", "truth" or "dicom"


RUN_DOWNLOADS = (
    RunDownload("mask", "mask.nii.gz", "NIfTI mask"),
    RunDownload("uncertainty", "uncertainty.nii.gz", "Uncertainty map (NIfTI, percent)"),
    RunDownload("ct", "ct.nii.gz", "CT (NIfTI)"),
    RunDownload("summary", "summary.json", "Summary (JSON)"),
    RunDownload("overlays", "overlays.zip", "Overlay images (PNG, zip)"),
    RunDownload("mesh", "mesh.stl", "Surface mesh (STL)"),
    RunDownload("seg", "seg.dcm", "DICOM SEG", needs="dicom"),
    RunDownload("truth", "truth.nii.gz", "Ground truth on the CT grid", needs="truth"),
    RunDownload("levels", "levels.nii.gz", "Vertebra levels (NIfTI, VerSe ids)"),
    RunDownload("levels_colours", "levels_colours.json", "Vertebra names and colours (JSON)"),
    RunDownload("vertebrae_csv", "vertebrae.csv", "Vertebra measurements (CSV)"),
    RunDownload("vertebrae_stl", "vertebrae_stl.zip", "One STL per vertebra (zip)"),
    RunDownload("levels_seg", "levels_seg.dcm", "DICOM SEG, one segment per vertebra", needs="dicom"),
    RunDownload("rtstruct", "rtstruct.dcm", "RTSTRUCT, one ROI per vertebra", needs="dicom"),
    RunDownload("measurements_sr", "measurements_sr.dcm", "DICOM SR measurement report (TID 1500)", needs="dicom"),
    RunDownload("report_html", "report.html", "Report (HTML, printable)"),
    RunDownload("report_pdf", "report.pdf", "Report (PDF)"),
)


def _has(study: Study, needs: str) -> bool:
    return not needs or (needs == "truth" and study.has_truth) or (needs == "dicom" and study.input_kind == "dicom")


def run_downloads(study: Study, job: Job | None = None) -> dict[str, str | None]:
    """URL of each output: under ``/api/studies/<id>/runs/<run id>/`` for ``job``, under
    ``/api/studies/<id>/`` (the current run) when ``job`` is ``None``; ``None`` where the study
    cannot have that output."""
    base = f"/api/studies/{study.id}" + (f"/runs/{job.id}" if job is not None else "")
    return {d.key: f"{base}/{d.path}" if _has(study, d.needs) else None for d in RUN_DOWNLOADS}


def runs_of(study: Study) -> list[Job]:
    """The study's segment jobs (its runs), oldest first."""
    return [job for job in study.jobs if job.kind == "segment"]


def current_run(study: Study) -> Job | None:
    """The study's current run (``Study.pinned_job_id``) when it is a done run of the study;
    ``None`` before one is."""
    return next((job for job in runs_of(study) if job.id == study.pinned_job_id and job.status == "done"), None)


def current_reason(study: Study) -> dict[str, Any] | None:
    """Why the current run is current: ``reason`` (a key of ``REASONS``), ``text`` (its
    sentence), ``by`` (who chose or announced it, when known) and ``at`` (ISO time)."""
    if current_run(study) is None:
        return None
    choice = study.current_choice or {"reason": "chosen"}
    reason = choice.get("reason", "chosen")
    return {"reason": reason, "text": REASONS.get(reason, reason), "by": choice.get("by"), "at": choice.get("at")}


def _make_current(study: Study, job: Job, reason: str, by: str | None) -> None:
    study.pinned_job_id = job.id
    study.current_choice = {"reason": reason, "by": by or None, "at": datetime.now(UTC).isoformat()}


def find_run(study: Study, run_id: str) -> Job | None:
    return next((job for job in runs_of(study) if job.id == run_id), None)


def resolve_version(registry: Registry, version: str | None) -> str:
    """The concrete version id a run will use, its weights verified: ``version`` when named
    (``ModelNotFoundError`` when the registry has no such version), else the production version
    now. ``ModelUnavailableError`` (with the reason) when that version's files are unusable: a
    run that cannot run is refused, not queued to fail."""
    if version and version != PRODUCTION:
        try:
            return registry.get(version).id
        except IntegrityError as exc:
            raise ModelUnavailableError(f"version {version} cannot be used ({exc}): choose another version, or "
                                        "restore its files from a backup") from exc
    return usable_production(registry).id


def new_run(session: Session, *, study_id: str, registry: Registry, version: str | None = None,
            device: str = "", make_current: bool = False, username: str = "") -> Job:
    """A queued run of the study with the version resolved now and its own output folder.

    ``make_current``: the run becomes the study's current one when it ends done (the page's
    confirmation said so); only a run of the production version may (``InputError`` on field
    ``make_current`` otherwise)."""
    model_version = resolve_version(registry, version)
    if make_current and model_version != registry.production_id():
        error = InputError("make_current", f"{model_version} is not the production version; only a re-run with the "
                                           "production version can become the study's result when it is done "
                                           "(choose another run as the result on the study page)")
        error.field = "make_current"
        raise error
    job = create_job(session, study_id=study_id)
    job.model_version = model_version
    job.output_dir = output_dir_for(job.id)
    job.settings = {"requested": version or PRODUCTION, "device": device}
    if make_current:
        job.settings = job.settings | {"make_current": True, "make_current_by": username or None}
    session.flush()
    return job


def record_results(session: Session, *, job_id: str, model_id: str, spine_volume_ml: float,
                   summary: dict[str, Any], metrics: dict[str, Any] | None,
                   inference: dict[str, Any] | None = None, worker_id: str | None = None) -> None:
    """What a run produced, on its own row (the study's copy follows when it ends done);
    nothing when, with ``worker_id``, the row is no longer that worker's."""
    job = get_job(session, job_id=job_id)
    if job is None or (worker_id is not None and job.worker_id != worker_id):
        return
    job.model_version = model_id
    job.spine_volume_ml = spine_volume_ml
    job.summary = summary
    job.metrics = metrics
    job.dice = None if metrics is None else metrics.get("dice")
    if inference:
        job.settings = (job.settings or {}) | {"inference": inference}


def refresh_current(study: Study) -> Job | None:
    """Copy the current run's results onto the study (cleared when no run is done)."""
    run = current_run(study)
    study.model_id = run.model_version if run else None
    study.spine_volume_ml = run.spine_volume_ml if run else None
    study.summary = run.summary if run else None
    study.metrics = run.metrics if run else None
    study.dice = run.dice if run else None
    return run


def _adoption(study: Study, job: Job) -> str | None:
    """Why ``job`` (just done) becomes the study's current run, ``None`` when it does not: an
    announced production re-run, or the first done run that asked for production."""
    settings = job.settings or {}
    if settings.get("make_current"):
        return "announced_rerun"
    if current_run(study) is None and settings.get("requested", PRODUCTION) == PRODUCTION:
        return "first_done"
    return None


def finish_run(session: Session, *, job_id: str, status: str, error: str | None = None,
               worker_id: str | None = None) -> None:
    """End the run (``finish_job``, guarded by its claimant ``worker_id`` when given); a done
    run becomes the study's current one only by ``_adoption``'s rules."""
    if not finish_job(session, job_id=job_id, status=status, error=error, worker_id=worker_id):
        return
    session.flush()
    job = get_job(session, job_id=job_id)
    if job is not None:
        session.refresh(job)
        study = get_study(session, study_id=job.study_id)
        if study is not None:
            session.refresh(study)
            reason = _adoption(study, job) if job.status == "done" else None
            if reason is not None:
                _make_current(study, job, reason, (job.settings or {}).get("make_current_by"))
            refresh_current(study)


def pin_run(study: Study, run_id: str | None, username: str = "") -> Job | None:
    """A person makes ``run_id`` the study's current run (``None``: the newest done run, now;
    it does not follow later runs). ``InputError`` on field ``run`` for an unknown or
    unfinished run, or when the study has no done run."""
    if run_id is not None:
        run = find_run(study, run_id)
        if run is None:
            raise _run_error(f"study {study.id} has no run {run_id!r}")
        if run.status != "done":
            raise _run_error(f"run {run_id} is {run.status}; only a done run can be the study's current one")
    else:
        done = [job for job in runs_of(study) if job.status == "done"]
        if not done:
            raise _run_error(f"study {study.id} has no done run to show")
        run = done[-1]
    _make_current(study, run, "chosen", username)
    return refresh_current(study)


def run_json(study: Study, job: Job, current: Job | None) -> dict[str, Any]:
    return {
        "id": job.id,
        "model_version": job.model_version,
        "created": job.created_at.isoformat(),
        "finished": job.finished_at.isoformat() if job.finished_at else None,
        "status": job.status,
        "error": job.error,
        "settings": job.settings,
        "spine_volume_ml": job.spine_volume_ml,
        "metrics": job.metrics,
        "current": current is not None and job.id == current.id,
        "pinned": current is not None and job.id == current.id and (study.current_choice or {}).get(
            "reason", "chosen") == "chosen",  # a person chose it
        "make_current": bool((job.settings or {}).get("make_current")),
        "downloads": run_downloads(study, job) if job.status == "done" else None,
    }


def runs_json(study: Study) -> list[dict[str, Any]]:
    """Every run of the study, newest first, each with its downloads when done."""
    current = current_run(study)
    return [run_json(study, job, current) for job in reversed(runs_of(study))]


def _mask(files: RunFiles) -> tuple[np.ndarray, float]:
    if not files.mask.is_file():
        raise _run_error("the run's mask is missing from its outputs")
    image = nib.load(str(files.mask))
    voxel_ml = float(abs(np.linalg.det(image.affine[:3, :3]))) / 1000.0
    return np.asarray(image.dataobj, dtype=np.uint8) > 0, voxel_ml


def compare_runs(studies_dir: Path, first: Job, second: Job) -> dict[str, Any]:
    """Agreement of two done runs of one study: Dice between their masks (voxel by voxel on
    the CT grid; ``None`` when both are empty), each spine volume and ``second - first``."""
    for job in (first, second):
        if job.status != "done":
            raise _run_error(f"run {job.id} is {job.status}; only done runs can be compared")
    mask_a, voxel_ml = _mask(run_files(studies_dir, first))
    mask_b, _ = _mask(run_files(studies_dir, second))
    if mask_a.shape != mask_b.shape:
        raise _run_error(f"the runs' masks have different grids ({mask_a.shape} and {mask_b.shape})")
    counts = confusion_counts(mask_a, mask_b)
    volume_a, volume_b = float(mask_a.sum()) * voxel_ml, float(mask_b.sum()) * voxel_ml
    return {
        "first": {"id": first.id, "model_version": first.model_version, "spine_volume_ml": round(volume_a, 3)},
        "second": {"id": second.id, "model_version": second.model_version, "spine_volume_ml": round(volume_b, 3)},
        "dice": float(dice_from_counts(counts)),  # 1.0 when both are empty
        "volume_difference_ml": round(volume_b - volume_a, 3),
        "differing_voxels": int(counts.fp + counts.fn),
    }


def shown_run(study: Study, run_id: str = "", production: str | None = None) -> dict[str, Any] | None:
    """What the result page shows: the run ``run_id`` when it is a done run of the study, else
    the current run (else, when none is current yet, the newest done run, marked not current);
    its results, its downloads, the URL base its files are read from (the viewer's
    ``data-run-base``), whether its version is ``production``, the current run and why, and
    how many other runs the study has. ``None`` before any run is done."""
    chosen = find_run(study, run_id) if run_id else None
    current = current_run(study)
    done = [job for job in runs_of(study) if job.status == "done"]
    run = chosen if chosen is not None and chosen.status == "done" else current or (done[-1] if done else None)
    if run is None:
        return None
    return {"id": run.id, "model_id": run.model_version, "summary": run.summary or {}, "metrics": run.metrics,
            "spine_volume_ml": run.spine_volume_ml, "downloads": run_downloads(study, run),
            "base": f"/api/studies/{study.id}/runs/{run.id}", "created": run.created_at.isoformat(),
            "current": current is not None and run.id == current.id,
            "production": production is not None and run.model_version == production,
            "current_id": current.id if current else None,
            "current_model_id": current.model_version if current else None,
            "reason": current_reason(study), "other_runs": len(runs_of(study)) - 1}


def evaluated_run(study: Study, model_version: str | None = None) -> Job | None:
    """The run whose metrics the evaluation reads: the current run, or with ``model_version``
    the newest done run made by that version; ``None`` when there is none with metrics."""
    if model_version is None:
        run = current_run(study)
    else:
        run = next((job for job in reversed(runs_of(study))
                    if job.status == "done" and job.model_version == model_version), None)
    return run if run is not None and run.metrics else None


def evaluated_versions(studies: list[Study]) -> list[str]:
    """Every model version with a done, scored run among ``studies`` (the evaluation's filter)."""
    return sorted({job.model_version for study in studies for job in runs_of(study)
                   if job.status == "done" and job.metrics and job.model_version})
