"""A run's reports, made on first request and kept in its folder like its other DICOM outputs:
the TID 1500 SR (``services.dicom_sr``), which needs the levels SEG it refers to (made here when
missing), and the facts of the one-page report (``services.report``, ``services.report_pdf``).
A run is never changed after it ends, so what is kept stays true."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
from sqlalchemy.orm import object_session

from spineseg.errors import InputError
from spineseg.imaging.io import load_volume
from spineseg.services.dicom_sr import write_measurement_report
from spineseg.services.level_exports import write_levels_dicom_seg
from spineseg.services.levels import withheld_labels
from spineseg.services.prior_studies import prior_comparisons
from spineseg.services.report import ReportFacts, key_image_png, prior_text, study_date_of
from spineseg.store.files import RunFiles
from spineseg.store.models import Job, Study

log = logging.getLogger(__name__)

SR_NAME = "measurements_sr.dcm"
SR_BASIS = "measurements_sr.json"  # what the kept SR was made from beyond the run: the prior, the SEG


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
    """The run's levels SEG, written now when it is not yet. Whichever is written first, this
    one or the job's export (``services.run_exports``), stays: the SR refers to it by UID."""
    _check_dicom(study)
    target = files.levels_seg_dcm
    if not target.is_file():
        levels, affine = _levels(files)
        tmp = target.with_name(f".sr{os.getpid()}-{target.name}")
        try:
            write_levels_dicom_seg(levels, affine, Path(study.input_path), (run.summary or {}).get("series_uid"),
                                   tmp, model_id=run.model_version or "unknown",
                                   withheld=withheld_labels(run.summary))
            os.link(tmp, target)
        except FileExistsError:
            log.info("run %s: the levels SEG was made meanwhile; that one is kept", run.id)
        finally:
            tmp.unlink(missing_ok=True)
    return target


def newest_prior(study: Study, run: Job) -> dict[str, Any] | None:
    """The comparison of ``run`` with the patient's newest earlier study (one entry of
    ``prior_comparisons``' ``priors``), ``None`` without one or outside a database session."""
    session = object_session(study)
    if session is None or not study.patient_pseudonym:
        return None
    priors = prior_comparisons(session, study, run)["priors"]
    return priors[-1] if priors else None


def ensure_measurement_sr(study: Study, run: Job, files: RunFiles) -> Path:
    """The run's measurement SR (and the levels SEG it refers to), written now when missing or
    when the newest prior study it compares with has changed since it was written (a prior
    uploaded later, or one re-run): the run itself never changes. ``InputError`` saying why for a
    study that is not DICOM or a run without vertebrae."""
    _check_dicom(study)
    summary: dict[str, Any] = run.summary or {}
    if not summary.get("vertebrae"):
        raise InputError("levels", "this run found no vertebra, so there is no measurement to report")
    path, basis_path = measurement_sr_path(files), files.folder / SR_BASIS
    prior = newest_prior(study, run)
    seg = ensure_levels_seg(study, run, files)
    # the SR refers to the levels SEG by its instance UID: the job's export may have replaced a SEG
    # made on an earlier request, and then the SR is made again for the SEG that is there now
    basis = {"prior": hashlib.sha256(json.dumps(prior, sort_keys=True, default=str).encode()).hexdigest(),
             "levels_seg": str(pydicom.dcmread(seg, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
                               .SOPInstanceUID)}
    if path.is_file() and basis_path.is_file() and json.loads(basis_path.read_text()) == basis:
        return path
    levels, affine = _levels(files)
    write_measurement_report(summary, levels, affine, seg, Path(study.input_path), summary.get("series_uid"),
                             path, model_id=run.model_version or "unknown", prior=prior)
    basis_path.write_text(json.dumps(basis) + "\n")
    return path


def report_facts(study: Study, run: Job, files: RunFiles) -> ReportFacts:
    """What the one-page report of ``run`` shows; the key image only when the run has levels
    and its CT copy (a run without them still gets its report, without the picture); the
    comparison with the patient's earlier studies (``services.prior_studies``), made now."""
    study_date, shifted = study_date_of(Path(study.input_path)) if study.input_kind == "dicom" else (None, False)
    png = None
    if files.levels.is_file() and files.ct.is_file():
        levels, affine = _levels(files)
        if levels.any():
            png = key_image_png(load_volume(files.ct).array, levels, affine, withheld_labels(run.summary or {}))
    return ReportFacts(
        study_name=study.name, pseudonym=study.patient_pseudonym, study_date=study_date, dates_shifted=shifted,
        uploaded=study.created_at.isoformat(), run_id=run.id,
        run_finished=run.finished_at.isoformat() if run.finished_at else None,
        model_version=run.model_version or "unknown", summary=run.summary or {}, key_image_png=png,
        prior=prior_of(study, run))


def prior_of(study: Study, run: Job) -> dict[str, Any] | None:
    """The report's lines on the patient's earlier studies (``report.prior_text``); ``None``
    without a prior (or a study outside a database session, as in a script)."""
    session = object_session(study)
    if session is None or not study.patient_pseudonym:
        return None
    return prior_text(prior_comparisons(session, study, run))
