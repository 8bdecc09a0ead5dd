"""A run's reports, made on first request and kept in its folder like its other DICOM outputs:
the TID 1500 SR (``services.dicom_sr``), which needs the levels SEG it refers to (made here when
missing), and the facts of the one-page report (``services.report``, ``services.report_pdf``).
A run is never changed after it ends, so what is kept stays true."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from spineseg.errors import InputError
from spineseg.imaging.io import load_volume
from spineseg.services.dicom_sr import write_measurement_report
from spineseg.services.level_exports import write_levels_dicom_seg
from spineseg.services.report import ReportFacts, key_image_png, study_date_of
from spineseg.store.files import RunFiles
from spineseg.store.models import Job, Study

log = logging.getLogger(__name__)

SR_NAME = "measurements_sr.dcm"


def measurement_sr_path(files: RunFiles) -> Path:
    return files.folder / SR_NAME


def _levels(files: RunFiles) -> tuple[np.ndarray, np.ndarray]:
    if not files.levels.is_file():
        raise InputError("levels", "this run has no vertebra levels (it was made before levels were computed)")
    image = nib.load(str(files.levels))
    return np.asarray(image.dataobj, dtype=np.int16), image.affine


def _check_dicom(study: Study) -> None:
    if study.input_kind != "dicom":
        raise InputError("input", f"the input was {study.input_kind}, not DICOM: a DICOM SR needs the source "
                                  "series to reference (the report and vertebrae.csv carry the same measurements)")


def ensure_levels_seg(study: Study, run: Job, files: RunFiles) -> Path:
    """The run's levels SEG, written now when it is not yet."""
    _check_dicom(study)
    if not files.levels_seg_dcm.is_file():
        levels, affine = _levels(files)
        write_levels_dicom_seg(levels, affine, Path(study.input_path), (run.summary or {}).get("series_uid"),
                               files.levels_seg_dcm, model_id=run.model_version or "unknown")
    return files.levels_seg_dcm


def ensure_measurement_sr(study: Study, run: Job, files: RunFiles) -> Path:
    """The run's measurement SR (and the levels SEG it refers to), written now when missing.
    ``InputError`` saying why for a study that is not DICOM or a run without vertebrae."""
    _check_dicom(study)
    path = measurement_sr_path(files)
    if path.is_file():
        return path
    summary: dict[str, Any] = run.summary or {}
    if not summary.get("vertebrae"):
        raise InputError("levels", "this run found no vertebra, so there is no measurement to report")
    seg = ensure_levels_seg(study, run, files)
    levels, affine = _levels(files)
    return write_measurement_report(summary, levels, affine, seg, Path(study.input_path), summary.get("series_uid"),
                                    path, model_id=run.model_version or "unknown")


def report_facts(study: Study, run: Job, files: RunFiles) -> ReportFacts:
    """What the one-page report of ``run`` shows; the key image only when the run has levels
    and its CT copy (a run without them still gets its report, without the picture)."""
    study_date, shifted = study_date_of(Path(study.input_path)) if study.input_kind == "dicom" else (None, False)
    png = None
    if files.levels.is_file() and files.ct.is_file():
        levels, affine = _levels(files)
        if levels.any():
            png = key_image_png(load_volume(files.ct).array, levels, affine)
    return ReportFacts(
        study_name=study.name, pseudonym=study.patient_pseudonym, study_date=study_date, dates_shifted=shifted,
        uploaded=study.created_at.isoformat(), run_id=run.id,
        run_finished=run.finished_at.isoformat() if run.finished_at else None,
        model_version=run.model_version or "unknown", summary=run.summary or {}, key_image_png=png)
