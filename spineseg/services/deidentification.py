"""De-identify an upload's files before they are stored for good: every DICOM file through
``imaging.deidentify`` (PS3.15 Basic Profile), a NIfTI's header through
``imaging.nifti_deidentify``; file and folder names the client chose are not kept (the
series becomes ``series/00001.dcm`` ..., a single file ``ct.nii.gz`` / ``ct.png`` ...).

The keys come from the server's secret (``Settings.session_secret``) through HMAC, so the
pseudonym of one patient is the same on every upload to this server: studies of a patient
can be grouped (``Study.patient_pseudonym``) without their identity being stored.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import shutil
import struct
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from spineseg.config import Settings
from spineseg.errors import InputError
from spineseg.imaging.deidentify import (
    DeidentifyOptions,
    check_burned_in,
    date_shift_for,
    deidentify_dataset,
    patient_identity,
    pseudonym_for,
    uid_replacement,
)
from spineseg.imaging.io import NIFTI_SUFFIXES
from spineseg.imaging.nifti_deidentify import deidentify_nifti
from spineseg.imaging.reidentify import return_header_of, uid_map_of

log = logging.getLogger(__name__)

SERIES_FOLDER = "series"
_READ_ERRORS = (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError, AttributeError, IndexError,
                OverflowError)
_WRITE_ERRORS = (*_READ_ERRORS, struct.error, LookupError, UnicodeError)


def deidentification_key(settings: Settings) -> bytes:
    """The HMAC key of pseudonyms, UIDs and date shifts, derived from the server's secret (so
    the secret itself is used for one purpose only)."""
    return hmac.new(settings.session_secret().encode(), b"spineseg de-identification v1", hashlib.sha256).digest()


@dataclass(frozen=True)
class DeidentifiedInput:
    """path: what to read now. pseudonym: the patient's stand-in (``None`` when the input
    named no patient). modality / body_part: kept by the profile, for the study's name, as is
    study_date (ISO, already moved by the patient's date shift; ``None`` when dates were removed).
    files: DICOM images kept. dropped: files removed (not DICOM images: DICOMDIR, reports...).
    uid_map / original_header (DICOM only): stored UID -> original UID, and the original patient
    and study attributes (DICOM JSON), for the server-private ``store.original_series``; never
    written to a file."""

    path: Path
    pseudonym: str | None = None
    modality: str | None = None
    body_part: str | None = None
    study_date: str | None = None
    files: int = 1
    dropped: int = 0
    uid_map: dict[str, str] | None = None
    original_header: dict | None = None


def _read(path: Path) -> pydicom.Dataset | None:
    """The dataset with large values (the pixels) left on disk until written, or ``None`` for
    a file that is not a DICOM image."""
    try:
        ds = pydicom.dcmread(path, defer_size="64 KB")
    except _READ_ERRORS:
        return None
    return ds if "PixelData" in ds else None


def _suffix(name: str) -> str:
    lower = name.lower()
    for suffix in NIFTI_SUFFIXES:
        if lower.endswith(suffix):
            return suffix
    return Path(lower).suffix


def deidentify_dicom_folder(path: Path, input_dir: Path, key: bytes) -> DeidentifiedInput:
    """Every DICOM image under ``path`` (a file or a folder in ``input_dir``) de-identified
    into ``input_dir/series/NNNNN.dcm``; everything else in ``input_dir`` is removed.

    ``InputError`` naming the file when one has Burned In Annotation YES (nothing is written)."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    images: list[tuple[Path, pydicom.Dataset]] = []
    dropped = 0
    for file in files:
        ds = _read(file)
        if ds is None:
            dropped += 1
            continue
        check_burned_in(ds, str(file))
        images.append((file, ds))
    identity = next((i for i in (patient_identity(ds) for _f, ds in images) if i), None)
    options = DeidentifyOptions(key=key, pseudonym=pseudonym_for(key, identity) if identity else "",
                                date_shift_days=date_shift_for(key, identity) if identity else None)
    first = images[0][1] if images else None
    uid_map, original_header = _original_identifiers([ds for _f, ds in images], key)
    facts = {"modality": str(first.get("Modality", "") or "") or None if first is not None else None,
             "body_part": str(first.get("BodyPartExamined", "") or "") or None if first is not None else None}
    staging = input_dir / ".deidentified"
    staging.mkdir(parents=True, exist_ok=True)
    study_date = None
    for index in range(len(images)):
        file, ds = images[index]
        try:
            deidentify_dataset(ds, options, source=str(file))
            if index == 0:
                study_date = _iso_date(str(ds.get("StudyDate", "") or ""))
            ds.save_as(staging / f"{index + 1:05d}.dcm")
        except InputError:
            raise
        except _WRITE_ERRORS as exc:  # a malformed element the reader never needed
            raise InputError(file, f"could not be de-identified ({type(exc).__name__}: {exc})") from exc
        images[index] = (file, pydicom.Dataset())  # its pixels, read for writing, are let go
    for entry in list(input_dir.iterdir()):
        if entry != staging:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    target = input_dir / SERIES_FOLDER
    staging.rename(target)
    if dropped:
        log.info("de-identification removed %d file(s) that are not DICOM images", dropped)
    log.info("de-identified %d DICOM file(s) (PS3.15 Basic Profile%s)", len(images),
             ", dates shifted" if options.date_shift_days is not None else ", dates removed")
    return DeidentifiedInput(target, options.pseudonym or None, facts["modality"], facts["body_part"],
                             study_date if options.date_shift_days is not None else None, len(images), dropped,
                             uid_map, original_header)


def _original_identifiers(images: list[pydicom.Dataset], key: bytes) -> tuple[dict[str, str] | None, dict | None]:
    """stored UID -> original UID (the instances' file meta UIDs too) and the first image's
    patient / study attributes; ``(None, None)`` when an image lacks its Study or Series
    Instance UID (an anonymiser blanked them): there is no original series to reference then."""
    if not images or not all(ds.get("StudyInstanceUID") and ds.get("SeriesInstanceUID") for ds in images):
        return None, None
    replacement = partial(uid_replacement, key)  # the de-identification's own function
    uid_map = uid_map_of(images, replacement)
    for ds in images:
        meta_uid = str(getattr(ds, "file_meta", {}).get("MediaStorageSOPInstanceUID", "") or "").strip()
        if meta_uid:
            uid_map[replacement(meta_uid)] = meta_uid
    return uid_map, return_header_of(images[0])


def _iso_date(text: str) -> str | None:
    """``YYYYMMDD`` -> ``YYYY-MM-DD``; ``None`` for anything else."""
    text = text.strip()
    return f"{text[0:4]}-{text[4:6]}-{text[6:8]}" if len(text) >= 8 and text[:8].isdigit() else None


def deidentify_single_file(path: Path, input_dir: Path, stem: str = "ct") -> DeidentifiedInput:
    """A NIfTI with its header cleaned, any other single file renamed: ``input_dir/<stem><suffix>``."""
    target = input_dir / (stem + _suffix(path.name))
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        deidentify_nifti(path, target)
    elif path != target:
        path.rename(target)
    return DeidentifiedInput(target)


def deidentify_input(path: Path, kind: str, input_dir: Path, settings: Settings) -> DeidentifiedInput:
    """De-identify the arranged input (``ingest.arrange_input``'s path and kind) in place."""
    if kind == "dicom":
        return deidentify_dicom_folder(path, input_dir, deidentification_key(settings))
    return deidentify_single_file(path, input_dir)


def deidentify_truth(path: Path) -> Path:
    """A ground truth file: a NIfTI's header cleaned, the file renamed ``truth<suffix>``; a
    folder of per-structure files (``ingest.unpack_truth``): each file's header cleaned in
    place (their names are the structures')."""
    try:
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                deidentify_nifti(child, child)
            return path
        return deidentify_single_file(path, path.parent, stem="truth").path
    except InputError as exc:
        exc.field = "truth"
        raise
