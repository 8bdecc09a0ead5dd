"""A run's slower outputs, made by its job right after the result is viewable (issue 31).

The reader first needs the mask, the viewer copies and the summary; the job records those and
ends ``done``, then makes the exports here: the five overlay images, the spine STL, the STL per
vertebra and, for a DICOM input, the DICOM SEG, the levels SEG and the RTSTRUCT. They are made
from the arrays the job already holds (no file is read back), and the DICOM source series is
read once for all three DICOM exports. The summary's ``outputs_pending`` lists what is still
coming (the result page says so) and ``stage_times_s`` gains each export's seconds.

A download asked for before its export is made still works: the download routes make a missing
file on request, as before. Each export is written under a temporary name and renamed into
place, so neither writer ever leaves half a file where the other reads.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from spineseg.errors import SpineSegError
from spineseg.imaging.overlay import write_overlays
from spineseg.imaging.volume import Volume
from spineseg.services.dicom_seg import source_slices, write_dicom_seg
from spineseg.services.level_exports import write_levels_dicom_seg, write_vertebrae_stl_zip
from spineseg.services.mesh import write_mask_stl
from spineseg.services.rtstruct import write_rtstruct
from spineseg.services.stage_times import StageTimes
from spineseg.store.files import RunFiles
from spineseg.store.models import Job

log = logging.getLogger(__name__)

PENDING_KEY = "outputs_pending"
EXPORT_LABELS = {"overlays": "overlay images", "stl": "spine surface (STL)", "vertebrae_stl": "STL per vertebra",
                 "seg": "DICOM SEG", "levels_seg": "levels DICOM SEG", "rtstruct": "RTSTRUCT"}
DICOM_EXPORTS = ("seg", "levels_seg", "rtstruct")


@dataclass
class ExportInputs:
    """What the job holds when its result is recorded: the CT, the mask and the levels on the
    CT grid, the truth (for the overlays), and the DICOM series to reference."""

    volume: Volume
    mask: np.ndarray
    levels: np.ndarray | None
    truth: np.ndarray | None
    dicom_folder: Path | None
    series_uid: str | None
    model_id: str
    quality: str | None = None  # the run's verdict, carried in the DICOM SEGs' ContentDescription
    withheld: frozenset[int] = frozenset()  # labels whose names the quality checks withheld (levels SEG)


def planned_exports(inputs: ExportInputs) -> list[str]:
    """The exports this run gets, in the order they are made (cheapest first)."""
    has_spine, has_levels = bool(inputs.mask.any()), inputs.levels is not None and bool(inputs.levels.any())
    names = ["overlays"] + (["stl"] if has_spine else []) + (["vertebrae_stl"] if has_levels else [])
    if inputs.dicom_folder is not None:
        names += ["seg"] + (["levels_seg", "rtstruct"] if has_levels else [])
    return names


def _atomic(target: Path, write: Callable[[Path], object], *, keep_existing: bool = False) -> None:
    """``write(temporary path)`` beside ``target``, then one rename onto it; with
    ``keep_existing`` a ``target`` made meanwhile (on request) is kept instead: the measurement
    SR refers to the levels SEG by its instance UID (services.run_reports)."""
    tmp = target.with_name(f".job{os.getpid()}-{target.name}")
    try:
        write(tmp)
        if keep_existing:
            try:
                os.link(tmp, target)  # fails when the target exists: the first one written stays
            except FileExistsError:
                log.info("%s was made on request meanwhile; that one is kept", target.name)
        else:
            tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


class _Sources:
    """The DICOM source series, read on first use and shared by the three DICOM exports."""

    def __init__(self, folder: Path, series_uid: str | None) -> None:
        self.folder, self.series_uid, self._slices = folder, series_uid, None

    def get(self) -> list:
        if self._slices is None:
            self._slices = source_slices(self.folder, self.series_uid)
        return self._slices


def _make(name: str, files: RunFiles, inputs: ExportInputs, sources: _Sources | None) -> None:
    affine = inputs.volume.affine
    mask = inputs.mask.astype(np.uint8, copy=False)
    if name == "overlays":
        write_overlays(inputs.volume, inputs.mask, files.overlays, truth=inputs.truth)
    elif name == "stl":
        _atomic(files.mesh, lambda tmp: write_mask_stl(mask, affine, tmp))
    elif name == "vertebrae_stl":
        _atomic(files.vertebrae_stl, lambda tmp: write_vertebrae_stl_zip(inputs.levels, affine, tmp))
    elif name == "seg":
        _atomic(files.seg_dcm, lambda tmp: write_dicom_seg(mask, affine, inputs.dicom_folder, inputs.series_uid, tmp,
                                                           model_id=inputs.model_id, sources=sources.get(),
                                                           quality=inputs.quality))
    elif name == "levels_seg":
        _atomic(files.levels_seg_dcm, lambda tmp: write_levels_dicom_seg(
            inputs.levels, affine, inputs.dicom_folder, inputs.series_uid, tmp, model_id=inputs.model_id,
            sources=sources.get(), quality=inputs.quality, withheld=inputs.withheld), keep_existing=True)
    elif name == "rtstruct":
        _atomic(files.rtstruct, lambda tmp: write_rtstruct(inputs.levels, affine, inputs.dicom_folder,
                                                           inputs.series_uid, tmp, sources=sources.get(),
                                                           withheld=inputs.withheld))
    else:
        raise ValueError(f"unknown export {name!r}")


def make_exports(files: RunFiles, names: list[str], inputs: ExportInputs, facts: dict[str, Any], times: StageTimes,
                 *, stopping: Callable[[], bool] = lambda: False,
                 record: Callable[[dict[str, Any]], None] = lambda facts: None) -> dict[str, Any]:
    """Make the exports ``names`` one by one; after each, ``facts`` (the run summary) gets its
    seconds in ``stage_times_s`` and loses it from ``outputs_pending``, and is written to
    ``summary.json`` and handed to ``record`` (the database's copy). An export that fails is
    logged and left to be made on first download; when ``stopping()`` turns true the rest are
    left so too. Returns the final summary."""
    sources = _Sources(inputs.dicom_folder, inputs.series_uid) if inputs.dicom_folder is not None else None
    pending = list(names)
    for name in names:
        if stopping():
            log.info("run %s: the server is stopping; %s made on first download", files.folder.name,
                     ", ".join(pending))
            pending = []
        else:
            try:
                with times.stage(name):
                    _make(name, files, inputs, sources)
            except (SpineSegError, OSError, ValueError, MemoryError) as exc:
                log.warning("run %s: %s not made now (made on first download): %s", files.folder.name, name, exc)
            pending.remove(name)
        facts = facts | {"stage_times_s": times.as_json(), PENDING_KEY: list(pending)}
        write_summary(files, facts)
        record(facts)
        if not pending:
            break
    return facts


def write_summary(files: RunFiles, facts: dict[str, Any]) -> None:
    """``summary.json`` in one rename: a reader never sees half of it."""
    tmp = files.summary.with_name(f".part{os.getpid()}-{files.summary.name}")
    tmp.write_text(json.dumps(facts, indent=2) + "\n")
    tmp.replace(files.summary)


def record_summary(session: Session, *, job_id: str, summary: dict[str, Any]) -> None:
    """The run's summary, updated after its result was recorded: on its row, and on the study
    when the run is its current one (the study shows a copy)."""
    job = session.get(Job, job_id)
    if job is None or job.status != "done":
        return
    job.summary = summary
    if job.study is not None and job.study.pinned_job_id == job.id:
        job.study.summary = summary


def pending_exports(summary: dict[str, Any] | None) -> list[str]:
    """What a run's page should say is still being made (labels, in order)."""
    return [EXPORT_LABELS.get(n, n) for n in (summary or {}).get(PENDING_KEY) or []]
