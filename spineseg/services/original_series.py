"""DICOM outputs "for the original series" (issue 28 item 2): a run's SEG, levels SEG or
RTSTRUCT with the original study, series, instance and frame-of-reference UIDs and the original
patient and study attributes put back, so it loads onto the images the hospital holds (a PACS,
OHIF, Slicer). The stored files stay de-identified; the original identifiers are kept sealed
(``services.sealing``) in the server-private ``store.original_series`` and are put back only
into the bytes of one download.

Who may: ``ORIGINAL_SERIES_ROLES`` (the people who read a patient's images by name); viewers
and researchers get the de-identified files only. The route audits every such download.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from sqlalchemy.orm import Session

from spineseg.config import Settings
from spineseg.imaging.reidentify import reidentify_result
from spineseg.services.sealing import SealError, seal, sealing_key, unseal
from spineseg.store.models import Study
from spineseg.store.original_series import get_original, keep_original
from spineseg.store.pacs_links import get_link

ORIGINAL_SERIES_ROLES = ("clinician", "admin")
IDENTITIES = ("deidentified", "original")


@dataclass(frozen=True)
class OriginalOffer:
    """Whether a study's DICOM outputs can be had for the original series, and by this user:
    ``kept`` (the identifiers were kept), ``allowed`` (the role may), ``reason`` (why not, for
    the page and the error; empty when both hold)."""

    kept: bool
    allowed: bool
    reason: str

    @property
    def available(self) -> bool:
        return self.kept and self.allowed


def original_offer(session: Session, study: Study, role: str) -> OriginalOffer:
    kept = study.input_kind == "dicom" and get_original(session, study_id=study.id) is not None
    allowed = role in ORIGINAL_SERIES_ROLES
    if study.input_kind != "dicom":
        reason = f"the input was {study.input_kind}, not DICOM: there is no original series"
    elif not kept and get_link(session, study_id=study.id) is not None:
        reason = "the study came from a PACS: its result goes back to the original series with Send to PACS"
    elif not kept:
        reason = ("the original identifiers of this study were not kept (it was uploaded before SpineSeg kept them, "
                  "or its files had no Study or Series Instance UID to reference)")
    elif not allowed:
        reason = (f"only {' and '.join(r + 's' for r in ORIGINAL_SERIES_ROLES)} may download results with the "
                  f"patient's original identifiers (your role: {role})")
    else:
        reason = ""
    return OriginalOffer(kept, allowed, reason)


@dataclass(frozen=True)
class OriginalIdentifiers:
    """stored UID -> original UID, and the original patient / study attributes (DICOM JSON)."""

    uid_map: dict[str, str]
    header: dict


def keep_original_identifiers(session: Session, settings: Settings, *, study_id: str, uid_map: dict[str, str],
                         header: dict) -> None:
    """Keep an upload's original identifiers, sealed, apart from its study."""
    keep_original(session, study_id=study_id, sealed=seal(sealing_key(settings), {"uid_map": uid_map,
                                                                                  "header": header}))


def original_series_of(session: Session, settings: Settings, study: Study) -> OriginalIdentifiers:
    """The study's original identifiers; ``ValueError`` saying why when there are none or they
    cannot be opened (another server secret)."""
    row = get_original(session, study_id=study.id)
    if row is None:
        raise ValueError(f"study {study.id} has no original identifiers")
    try:
        value = unseal(sealing_key(settings), row.sealed)
    except SealError as exc:
        raise ValueError(f"the original identifiers of study {study.id} cannot be read: {exc}") from exc
    return OriginalIdentifiers(dict(value["uid_map"]), dict(value["header"]))


def reidentified_dicom(path: Path, original: OriginalIdentifiers) -> bytes:
    """The DICOM file at ``path`` (a run's SEG or RTSTRUCT, made from the stored series) with the
    original UIDs and patient / study attributes, as bytes; ``ValueError`` when the file does
    not reference the study's stored series (then nothing can be mapped)."""
    ds = pydicom.dcmread(path)
    reidentify_result(ds, original.uid_map, Dataset.from_json(original.header))
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
