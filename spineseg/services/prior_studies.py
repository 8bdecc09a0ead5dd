"""A patient's studies and the change since each prior (issue 33 item 3).

Studies of one patient share ``Study.patient_pseudonym`` (de-identification derives it from the
patient's identity with the server's key); they are linked oldest first. The order and the
intervals use the study date kept in the stored DICOM series (already moved by the patient's
date shift, which is the same for all of a patient's studies, so intervals are true) when every
one of the patient's studies has one; otherwise, for all of them, the upload time (a shifted
date and a real upload time cannot be compared). ``date_basis`` says which.

``prior_comparisons(session, study, run)`` is what the API, the CSV, the result page and the
reports (DICOM SR, printed report) read: for each study before this one, its current run
compared with ``run`` (this study's shown run) by ``metrics.prior_change.compare_with_prior``.
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError
from sqlalchemy import select
from sqlalchemy.orm import Session

from spineseg.metrics.prior_change import HEIGHT_SIDES, compare_with_prior
from spineseg.services.runs import current_run
from spineseg.store.models import Job, Study

DATE_TAGS = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")


def stored_study_date(study: Study) -> date | None:
    """The study date of a stored (de-identified, date-shifted) DICOM series: the first date of
    ``DATE_TAGS`` in the first readable file; None for other inputs or without a date."""
    folder = Path(study.input_path)
    if study.input_kind != "dicom" or not folder.exists():
        return None
    files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else [folder]
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(DATE_TAGS))
        except (InvalidDicomError, OSError, ValueError, TypeError, KeyError, AttributeError):
            continue
        for tag in DATE_TAGS:
            text = str(ds.get(tag, "") or "").strip()
            if len(text) >= 8 and text[:8].isdigit():
                try:
                    return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
                except ValueError:
                    continue
        return None
    return None


def patient_studies(session: Session, study: Study) -> tuple[list[tuple[Study, date | datetime]], str]:
    """The studies of ``study``'s patient, oldest first, each with the date it is ordered by, and
    the basis (``study date`` or ``upload time``); only ``study`` when it names no patient."""
    if not study.patient_pseudonym:
        return [(study, study.created_at)], "upload time"
    studies = list(session.scalars(select(Study).where(Study.patient_pseudonym == study.patient_pseudonym)))
    dates = {s.id: stored_study_date(s) for s in studies}
    if all(dates.values()):
        ordered = sorted(studies, key=lambda s: (dates[s.id], s.created_at))
        return [(s, dates[s.id]) for s in ordered], "study date"
    ordered = sorted(studies, key=lambda s: s.created_at)
    return [(s, s.created_at) for s in ordered], "upload time"


def _day(value: date | datetime) -> date:
    return value.date() if isinstance(value, datetime) else value


def prior_comparisons(session: Session, study: Study, run: Job | None = None) -> dict[str, Any]:
    """The patient's studies (``studies``: oldest first, each ``id``, ``name``, ``date``, ``role``
    prior / this / later) and, per prior (``priors``, oldest first), ``compare_with_prior``'s
    result between the prior's current run and ``run`` (default: this study's current run) as
    JSON, with the prior's ``study_id``, ``name``, ``date``, ``run_id`` and ``interval_days``; a
    prior without a finished run has ``reason`` instead. ``date_basis``: how they are ordered."""
    run = run if run is not None else current_run(study)
    linked, basis = patient_studies(session, study)
    place = next(i for i, (s, _) in enumerate(linked) if s.id == study.id)
    this_day = _day(linked[place][1])
    studies = [{"id": s.id, "name": s.name, "date": _day(when).isoformat(),
                "role": "prior" if i < place else "this" if i == place else "later"}
               for i, (s, when) in enumerate(linked)]
    priors = []
    for prior, when in linked[:place]:
        entry: dict[str, Any] = {"study_id": prior.id, "name": prior.name, "date": _day(when).isoformat(),
                                 "interval_days": (this_day - _day(when)).days}
        prior_run = current_run(prior)
        if prior_run is None or not prior_run.summary:
            entry |= {"run_id": None, "reason": "the prior has no finished run", "vertebrae": [], "flagged": []}
        elif run is None or not run.summary:
            entry |= {"run_id": prior_run.id, "reason": "this study has no finished run", "vertebrae": [],
                      "flagged": []}
        else:
            comparison = compare_with_prior(prior_run.summary, run.summary, interval_days=entry["interval_days"])
            entry |= {"run_id": prior_run.id} | comparison.to_json()
        priors.append(entry)
    return {"patient_pseudonym": study.patient_pseudonym, "date_basis": basis, "run_id": run.id if run else None,
            "studies": studies, "priors": priors}


CSV_COLUMNS = ("prior_study", "prior_date", "interval_days", "level", "compared", "flagged", "flags",
               *(f"{side}_{what}" for side in HEIGHT_SIDES for what in ("prior_mm", "now_mm", "change_mm",
                                                                        "change_pct")),
               "hu_prior", "hu_now", "hu_change", "grade_prior", "grade_now", "position_mm", "position_share",
               "reasons")


def prior_changes_csv(data: dict[str, Any]) -> str:
    """``prior_comparisons``' result as CSV: one row per prior and level (a prior compared
    nowhere: one row with its reason)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(CSV_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    for prior in data["priors"]:
        base = {"prior_study": prior["study_id"], "prior_date": prior["date"], "interval_days": prior["interval_days"]}
        if not prior["vertebrae"]:
            writer.writerow(base | {"compared": "false", "reasons": prior.get("reason") or ""})
        for v in prior["vertebrae"]:
            row = {k: ("" if x is None else x) for k, x in v.items()}
            row |= {"level": v["name"], "compared": str(v["compared"]).lower(), "flagged": str(v["flagged"]).lower(),
                    "flags": "; ".join(f"{k}: {text}" for k, text in v["flags"].items()),
                    "reasons": "; ".join(v["reasons"])}
            writer.writerow(base | row)
    return out.getvalue()
