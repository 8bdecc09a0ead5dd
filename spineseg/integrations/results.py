"""A study's result as the PACS it came from should receive it: the DICOM outputs of the
study's current run (the DICOM SEG and, when the run found vertebrae, the levels SEG and the
measurement SR that refers to it, made now when they were not yet, and any other ``.dcm``
output of the run, such as an RTSTRUCT), re-identified (``imaging.reidentify``) with the study's
private link so they reference the original series and are filed in the original study.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset

from spineseg.config import Settings
from spineseg.errors import InputError
from spineseg.imaging.reidentify import reidentify_result
from spineseg.integrations import PacsError
from spineseg.services.dicom_seg import write_dicom_seg
from spineseg.services.quality import verdict_of
from spineseg.services.run_reports import ensure_measurement_sr
from spineseg.services.runs import current_run, run_files
from spineseg.store.database import Database
from spineseg.store.pacs_links import PacsLink, get_link
from spineseg.store.studies import get_study

log = logging.getLogger(__name__)


# What a reader calls each DICOM output of a run (two of them are SEGs).
OUTPUT_NAMES = {"seg.dcm": "SEG", "levels_seg.dcm": "levels SEG", "rtstruct.dcm": "RTSTRUCT",
                "measurements_sr.dcm": "measurement SR"}


@dataclass(frozen=True)
class StudyResult:
    """What to send for one study: the run it came from, the link, and the output files."""

    study_id: str
    job_id: str
    link: PacsLink
    paths: list[Path]


def _ensure_seg(settings: Settings, study, job) -> Path:
    files = run_files(settings.studies_dir, job)
    if not files.seg_dcm.is_file():
        image = nib.load(str(files.mask))
        series_uid = (job.summary or study.summary or {}).get("series_uid")
        write_dicom_seg(np.asarray(image.dataobj, dtype=np.uint8), image.affine, Path(study.input_path), series_uid,
                        files.seg_dcm, model_id=job.model_version or study.model_id or "unknown",
                        quality=verdict_of(job.summary))
    return files.seg_dcm


def study_result(settings: Settings, database: Database, study_id: str) -> StudyResult:
    """The current run's DICOM outputs of a PACS study; ``PacsError`` (404/409) saying why not."""
    with database.session() as session:
        study = get_study(session, study_id=study_id)
        if study is None:
            raise PacsError(f"no study with id {study_id!r}", status=404)
        link = get_link(session, study_id=study_id)
        if link is None:
            raise PacsError(f"study {study_id} was not imported from a PACS, so there is no original series "
                            "for its result to reference (download the DICOM SEG instead)", status=409)
        job = current_run(study)
        if job is None:
            state = study.latest_job.status if study.latest_job else "missing"
            raise PacsError(f"study {study_id} has no finished run yet (its job is {state})", status=409)
        session.expunge(link)
        seg = _ensure_seg(settings, study, job)
        if (job.summary or {}).get("vertebrae"):
            try:
                ensure_measurement_sr(study, job, run_files(settings.studies_dir, job))
            except InputError as exc:  # the SEG still goes; the answer's modalities say what went
                log.warning("study %s: no measurement SR to send (%s)", study_id, exc)
        # the finished outputs by name: an export still being written lies under a temporary
        # name beside them (renamed when whole), and must not be read half-written
        others = sorted(p for p in (seg.parent / name for name in OUTPUT_NAMES if name != seg.name) if p.is_file())
        return StudyResult(study_id, job.id, link, [seg, *others])


def output_name(path: Path) -> str:
    return OUTPUT_NAMES.get(path.name, path.stem)


def reidentified(result: StudyResult, header: Dataset) -> list[Dataset]:
    """The result's files read and re-identified with the link's map and ``header`` (the
    original's patient / study attributes)."""
    datasets = []
    for path in result.paths:
        ds = pydicom.dcmread(path)
        try:
            replaced = reidentify_result(ds, result.link.uid_map, header)
        except ValueError as exc:
            raise PacsError(f"{path.name} of study {result.study_id}: {exc}", status=409) from exc
        if ds.get("StudyInstanceUID") != result.link.study_uid:
            raise PacsError(f"{path.name} of study {result.study_id} does not belong to the imported study", 409)
        log.debug("%s: %d UID(s) mapped back to the original's", path.name, replaced)
        datasets.append(ds)
    return datasets


def header_from_json(header: dict | None) -> Dataset:
    return Dataset.from_json(header or {})
