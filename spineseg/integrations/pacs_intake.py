"""A series that came from a PACS (WADO-RS or C-STORE) -> a queued study, through the same
``accept_study`` as every upload (validated, de-identified, stored, queued), with the link back
to its source (``store.pacs_links``) written in the same transaction.

The originals are read once here, before de-identification rewrites them, for what the link
needs: their Study / Series UIDs, the map from each UID the de-identification will store to the
original one (computed with the de-identification's own keyed function, so it matches exactly),
and, for the DICOM network only, the patient / study attributes a result must carry to be filed
beside the original (erased once the result was sent).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from sqlalchemy.orm import Session

from spineseg.errors import InputError
from spineseg.imaging.deidentify import uid_replacement
from spineseg.imaging.reidentify import return_header_of, uid_map_of
from spineseg.services.deidentification import deidentification_key
from spineseg.services.study_intake import AcceptedStudy, IntakeServices, ReceivedFiles, accept_study
from spineseg.store.files import StudyFiles
from spineseg.store.pacs_links import add_link

log = logging.getLogger(__name__)

SEGMENTABLE_MODALITIES = ("CT",)


@dataclass(frozen=True)
class SourceSeries:
    study_uid: str
    series_uid: str
    modality: str
    uid_map: dict[str, str]
    header: dict | None


def read_source_series(paths: list[Path], *, keep_header: bool, replacement) -> SourceSeries:
    """The facts of the original series in ``paths`` (headers only). ``InputError`` when a file
    is not DICOM, the files are of several series, or the series is not CT."""
    headers: list[pydicom.Dataset] = []
    for path in paths:
        try:
            headers.append(pydicom.dcmread(path, stop_before_pixels=True))
        except (InvalidDicomError, OSError, ValueError, TypeError, KeyError, EOFError) as exc:
            raise InputError(path.name, f"is not a readable DICOM instance ({type(exc).__name__})") from exc
    if not headers:
        raise InputError("series", "no instance was received")
    series = sorted({str(ds.get("SeriesInstanceUID", "")) for ds in headers})
    if len(series) != 1 or not series[0]:
        raise InputError("series", f"the instances belong to {len(series)} series ({', '.join(series)[:200]}); "
                                   "one series is imported at a time")
    modalities = sorted({str(ds.get("Modality", "") or "?") for ds in headers})
    if modalities != list(SEGMENTABLE_MODALITIES):
        raise InputError("series", f"series {series[0]} is {'/'.join(modalities)}, not CT: SpineSeg segments CT "
                                   "only, so it was not imported")
    first = headers[0]
    return SourceSeries(str(first.get("StudyInstanceUID", "")), series[0], "CT", uid_map_of(headers, replacement),
                        return_header_of(first) if keep_header else None)


def accept_pacs_series(services: IntakeServices, files: StudyFiles, paths: list[Path], *, origin: str,
                       endpoint: str, username: str, user_id: int, keep_header: bool = False,
                       name: str = "") -> AcceptedStudy:
    """Take in the original instances at ``paths`` (inside ``files.input_dir``) as a study.

    On any failure the study's folder is removed (``accept_study`` does it once it started; a
    series refused here is removed here) and the error raised."""
    key = deidentification_key(services.settings)
    try:
        source = read_source_series(paths, keep_header=keep_header, replacement=lambda uid: uid_replacement(key, uid))
    except BaseException:
        files.delete()
        raise

    def link(session: Session, study_id: str) -> None:
        add_link(session, study_id=study_id, origin=origin, endpoint=endpoint, study_uid=source.study_uid,
                 series_uid=source.series_uid, uid_map=source.uid_map, return_header=source.header)

    total = sum(p.stat().st_size for p in paths)
    received = ReceivedFiles(ct={p: p.name for p in paths}, truth=None, total_bytes=total, name=name)
    accepted = accept_study(services, files, received, username=username, user_id=user_id,
                            note=f"from PACS {origin}:{endpoint}", on_created=link,
                            keep_original_series=False)
    log.info("series of %d instance(s) from %s %s became study %s", len(paths), origin, endpoint, accepted.study_id)
    return accepted
