"""Corrections: saving an edited label volume as the study's newest truth version, and what
every page and export reads about a study's truth (issue 32).

Saving (``save_correction``): the edited labels (a NIfTI on the grid of the run's mask, or a
box of it in the viewer's canonical axis order) are placed on that grid, their values checked
(0 and VerSe ids: every vertebra named, or marked not a vertebra by erasing it), the effort
measured against what the edit started from (the run's levels, or the correction named as its
base), levels and measurements recomputed from the corrected labels, every done run of the
study scored against them, and the file and its row written (``store.corrections``). The caller
audits it. Nothing is overwritten: each save is a new version.

The study's truth (``study_truth``) is its newest correction when it has one, else the
uploaded truth, else none; segment jobs, the evaluation and datasets read it through here.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from spineseg.errors import InputError
from spineseg.imaging.grid_place import place_on_grid
from spineseg.imaging.nifti import open_nifti, read_nifti_array, write_nifti
from spineseg.metrics.correction_effort import correction_effort
from spineseg.metrics.evaluate import evaluate_masks
from spineseg.model.labelled_levels import levels_from_labels
from spineseg.model.level_ids import NAME_BY_VERSE, UNNAMED_BASE, label_name
from spineseg.services.levels import label_map_scores, levels_summary, measurements
from spineseg.services.runs import find_run, run_files, runs_of
from spineseg.store.corrections import add_correction, file_of, get_correction, latest_correction
from spineseg.store.files import StudyFiles
from spineseg.store.models import Correction, Job, Study

log = logging.getLogger(__name__)

FIELD = "labels"
MAX_EDIT_SECONDS = 24 * 3600.0
MAX_NOTE = 500
ALLOWED_VALUES = "0 (background) and the VerSe vertebra ids " + ", ".join(
    f"{v} {n}" for v, n in sorted(NAME_BY_VERSE.items()))


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


@dataclass(frozen=True)
class TruthSource:
    """Where a study's truth comes from: ``kind`` ``correction`` or ``upload``, its file, and
    for a correction its version, author and time."""

    kind: str
    path: Path
    version: int | None = None
    by: str | None = None
    at: str | None = None

    def describe(self) -> str:
        if self.kind == "correction":
            return f"correction version {self.version} by {self.by}, {self.at[:16].replace('T', ' ')} UTC"
        return "the ground truth uploaded with the study"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": self.version, "by": self.by, "at": self.at, "text": self.describe()}


def study_truth(studies_dir: Path, study: Study) -> TruthSource | None:
    """The study's truth now: its newest correction, else its uploaded truth, else ``None``."""
    latest = latest_correction(study)
    if latest is not None:
        return TruthSource("correction", file_of(StudyFiles.of(studies_dir, study.id).root, latest), latest.version,
                           latest.created_by, latest.created_at.isoformat())
    if study.truth_path is not None:
        return TruthSource("upload", Path(study.truth_path))
    return None


def check_label_values(labels: np.ndarray) -> None:
    """``InputError`` naming the values that a corrected truth may not hold."""
    values = {int(v) for v in np.unique(labels)}
    unnamed = sorted(v for v in values if v > UNNAMED_BASE)
    if unnamed:
        names = ", ".join(label_name(v) for v in unnamed)
        raise InputError(FIELD, f"vertebrae left unnamed ({names}): rename each to its level, or mark it not a "
                                "vertebra, before saving")
    wrong = sorted(v for v in values if v != 0 and v not in NAME_BY_VERSE)
    if wrong:
        raise InputError(FIELD, f"label values {wrong[:10]} are not allowed; allowed: {ALLOWED_VALUES}")


def read_upload(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The uploaded label volume's voxels (integers) and affine; ``InputError`` when it is not
    a readable 3D NIfTI of whole numbers."""
    image = open_nifti(path)
    values = read_nifti_array(path, image, np.float32)
    if not np.all(np.isfinite(values)) or not np.array_equal(values, np.rint(values)):
        raise InputError(FIELD, "label values must be whole numbers")
    return values.astype(np.int32), np.asarray(image.affine, dtype=np.float64)


def _read_labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = open_nifti(path)
    return read_nifti_array(path, image, np.int32).astype(np.int32), np.asarray(image.affine, dtype=np.float64)


def starting_labels(studies_dir: Path, study: Study, run: Job,
                    base: Correction | None) -> tuple[np.ndarray, np.ndarray]:
    """What an edit started from, on the run's mask grid: the base correction's labels, or the
    run's levels (a run without levels: its mask as one unnamed piece)."""
    files = run_files(studies_dir, run)
    mask, affine = _read_labels(files.mask)
    if base is not None:
        labels, _ = _read_labels(file_of(StudyFiles.of(studies_dir, study.id).root, base))
    elif files.levels.is_file():
        labels, _ = _read_labels(files.levels)
    else:
        labels = np.where(mask > 0, UNNAMED_BASE + 1, 0).astype(np.int32)
    if labels.shape != mask.shape:
        raise InputError("base", f"the starting labels' grid {labels.shape} is not the run's mask grid {mask.shape}")
    return labels, affine


def score_runs(studies_dir: Path, study: Study, truth: np.ndarray, affine: np.ndarray) -> dict[str, Any]:
    """Every done run of the study scored against ``truth`` (VerSe ids on the runs' grid):
    ``{run id: {"metrics", "level_scores"}}``; a run on another grid is skipped (logged)."""
    spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
    scores: dict[str, Any] = {}
    for run in runs_of(study):
        if run.status != "done":
            continue
        files = run_files(studies_dir, run)
        try:
            mask, _ = _read_labels(files.mask)
        except (InputError, OSError) as exc:
            log.warning("run %s not scored against the correction: %s", run.id, exc)
            continue
        if mask.shape != truth.shape:
            log.warning("run %s not scored: its grid %s is not the correction's %s", run.id, mask.shape, truth.shape)
            continue
        entry: dict[str, Any] = {"metrics": _json_safe(evaluate_masks(mask > 0, truth > 0, spacing))}
        if files.levels.is_file():
            levels, _ = _read_labels(files.levels)
            named = bool((run.summary or {}).get("levels", {}).get("named", False))
            entry["level_scores"] = label_map_scores(levels, truth, affine, named=named)
        scores[run.id] = entry
    return scores


@dataclass(frozen=True)
class CorrectionRequest:
    """What a save asks for: the run edited, the correction it started from (``None``: the
    run's levels), how long the edit took (seconds, from the editor), a note."""

    run_id: str
    base_version: int | None = None
    edit_seconds: float | None = None
    note: str = ""


def _check_request(study: Study, request: CorrectionRequest, session: Session) -> tuple[Job, Correction | None]:
    run = find_run(study, request.run_id)
    if run is None or run.status != "done":
        raise InputError("run", f"study {study.id} has no finished run {request.run_id!r} to correct")
    base = None
    if request.base_version is not None:
        base = get_correction(session, study_id=study.id, version=request.base_version)
        if base is None:
            raise InputError("base", f"study {study.id} has no correction version {request.base_version}")
    seconds = request.edit_seconds
    if seconds is not None and not (math.isfinite(seconds) and 0 <= seconds <= MAX_EDIT_SECONDS):
        raise InputError("edit_seconds", f"{seconds!r} is not a duration between 0 and {MAX_EDIT_SECONDS:.0f} s")
    if len(request.note) > MAX_NOTE:
        raise InputError("note", f"{len(request.note)} characters; at most {MAX_NOTE}")
    return run, base


def prepare_correction(studies_dir: Path, study: Study, session: Session, request: CorrectionRequest,
                       upload: Path) -> dict[str, Any]:
    """Everything a new version holds, computed from the upload (slow: measurements and scores;
    run outside the request's event loop): ``labels``, ``affine`` and the row's fields."""
    run, base = _check_request(study, request, session)
    before, affine = starting_labels(studies_dir, study, run, base)
    values, upload_affine = read_upload(upload)
    after = place_on_grid(values, upload_affine, before, affine, FIELD)
    check_label_values(after)
    effort = correction_effort(before, after, label_name)
    ct_path = run_files(studies_dir, run).ct
    ct = read_nifti_array(ct_path, open_nifti(ct_path), np.float32)
    levels = levels_from_labels(after, affine)
    rows = measurements(levels, ct, affine)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    summary = levels_summary(levels, rows) | {
        "spine_volume_ml": round(float(np.count_nonzero(after)) * float(np.prod(spacing)) / 1000.0, 3)}
    return {"labels": after.astype(np.int16), "affine": affine, "fields": {
        "run_id": run.id, "model_version": run.model_version,
        "base_version": base.version if base is not None else None,
        "edit_seconds": request.edit_seconds, "note": request.note.strip(),
        "effort": _json_safe(effort), "summary": _json_safe(summary),
        "run_scores": score_runs(studies_dir, study, after, affine)}}


def store_correction(session: Session, studies_dir: Path, study: Study, prepared: dict[str, Any],
                     username: str) -> Correction:
    """Write the prepared version's file and row (the next free version number)."""
    root = StudyFiles.of(studies_dir, study.id).root

    def write(path: Path) -> None:
        write_nifti(prepared["labels"], prepared["affine"], path, dtype=np.int16)

    correction = add_correction(session, study_id=study.id, study_root=root, write_file=write,
                                fields={**prepared["fields"], "created_by": username})
    session.refresh(study)
    return correction


def correction_json(study: Study, correction: Correction) -> dict[str, Any]:
    """A version as the API and the page show it."""
    latest = latest_correction(study)
    return {"version": correction.version, "id": correction.id, "created_by": correction.created_by,
            "created_at": correction.created_at.isoformat(), "run_id": correction.run_id,
            "model_version": correction.model_version, "base_version": correction.base_version,
            "edit_seconds": correction.edit_seconds, "note": correction.note, "effort": correction.effort,
            "vertebrae": correction.summary.get("vertebrae", []),
            "spine_volume_ml": correction.summary.get("spine_volume_ml"),
            "latest": latest is not None and latest.id == correction.id,
            "download": f"/api/studies/{study.id}/corrections/{correction.version}/labels.nii.gz"}


def scores_against_latest(study: Study, run: Job) -> dict[str, Any] | None:
    """The run's scores against the study's newest correction (stored when that version was
    saved, or by the run itself when it was made after it); ``None`` without a correction or
    when the run was not scored against it (made while it was being saved)."""
    latest = latest_correction(study)
    if latest is None:
        return None
    stored = (latest.run_scores or {}).get(run.id)
    if stored is not None:
        return stored
    truth = (run.summary or {}).get("truth") or {}
    if truth.get("kind") == "correction" and truth.get("version") == latest.version and run.metrics:
        return {"metrics": run.metrics, "level_scores": (run.summary or {}).get("level_scores")}
    return None


