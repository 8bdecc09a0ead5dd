"""De-identification of one DICOM dataset: PS3.15 Annex E, the Basic Application Level
Confidentiality Profile, applied in memory (pure: a dataset and a key in, the same dataset
changed out; no files, no database).

What happens to each attribute is the table in ``deidentify_profile`` (and
docs/deidentification.md). The profile's record is written into the dataset: Patient Identity
Removed (0012,0062) = YES, De-identification Method (0012,0063), De-identification Method
Code Sequence (0012,0064) with 113100 and each option applied, Longitudinal Temporal
Information Modified (0028,0303).

Everything keyed is derived with HMAC-SHA256 from ``key`` (the caller's secret), so the same
patient / UID / date gets the same replacement on every upload to one server and nothing can
be traced back without the key:

- ``pseudonym_for(key, identity)``: ``SPS-`` + 16 hex digits, the patient's stand-in;
- ``uid_replacement(key, uid)``: ``2.25.<128-bit integer>`` (PS3.5 B.2), consistent per UID, so
  a series still groups, its slices keep their Frame of Reference and a SEG references them;
- ``date_shift_for(key, identity)``: days (``MIN_SHIFT_DAYS``..``MAX_SHIFT_DAYS``) every date of
  the patient moves back by under option 113107 (intervals between a patient's scans kept).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import date, timedelta

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID_dictionary

from spineseg.errors import InputError
from spineseg.imaging.deidentify_profile import ACTIONS_BY_TAG, DATE, EMPTIED_DATES, KEPT_UID_KEYWORDS, TIME, U, X, Z

log = logging.getLogger(__name__)

BASIC_PROFILE = ("113100", "Basic Application Confidentiality Profile")
MODIFIED_DATES_OPTION = ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")
MIN_SHIFT_DAYS, MAX_SHIFT_DAYS = 30, 3650
PSEUDONYM_PREFIX = "SPS-"
# File meta attributes that name the sending / receiving systems (AE titles) or carry vendor data.
META_REMOVED = ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle", "ReceivingApplicationEntityTitle",
                "PrivateInformationCreatorUID", "PrivateInformation")


def _digest(key: bytes, purpose: str, value: str) -> bytes:
    return hmac.new(key, f"{purpose}\x00{value}".encode(), hashlib.sha256).digest()


def pseudonym_for(key: bytes, identity: str) -> str:
    """The patient's stand-in: the same ``identity`` under one ``key`` gives the same pseudonym."""
    return PSEUDONYM_PREFIX + _digest(key, "patient", identity).hex()[:16].upper()


def uid_replacement(key: bytes, uid: str) -> str:
    """A ``2.25.`` UID (at most 44 characters) derived from ``uid``: consistent, not reversible."""
    return "2.25." + str(int.from_bytes(_digest(key, "uid", uid)[:16], "big"))


def date_shift_for(key: bytes, identity: str) -> int:
    """Days to move the patient's dates back by (option 113107), ``MIN``..``MAX_SHIFT_DAYS``."""
    span = MAX_SHIFT_DAYS - MIN_SHIFT_DAYS + 1
    return MIN_SHIFT_DAYS + int.from_bytes(_digest(key, "date-shift", identity)[:8], "big") % span


def patient_identity(ds: Dataset) -> str | None:
    """What identifies the patient in ``ds``: Patient ID with its issuer, else name and birth
    date; ``None`` when the dataset carries none of them (already anonymised)."""
    patient_id = str(ds.get("PatientID", "") or "").strip()
    if patient_id:
        return f"id:{patient_id}|issuer:{str(ds.get('IssuerOfPatientID', '') or '').strip()}"
    name = str(ds.get("PatientName", "") or "").strip()
    birth = str(ds.get("PatientBirthDate", "") or "").strip()
    return f"name:{name.upper()}|birth:{birth}" if name else None


def check_burned_in(ds: Dataset, source: str) -> None:
    """``InputError`` naming ``source`` when the image says its pixels show identifying text."""
    if str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES":
        raise InputError(source, "Burned In Annotation (0028,0301) is YES: the pixels may show the patient's "
                                 "identity and this service does not clean pixel data; upload the series without "
                                 "burned-in text")


@dataclass(frozen=True)
class DeidentifyOptions:
    """key: the HMAC key of the replacements. pseudonym: Patient Name / Patient ID to write.
    date_shift_days: ``None`` removes the dates (Basic Profile); a number applies option 113107
    (dates moved back by that many days, times kept)."""

    key: bytes
    pseudonym: str
    date_shift_days: int | None = None


def _shift_date_text(text: str, days: int) -> str | None:
    """``YYYYMMDD...`` (DA, or the date of a DT) moved back ``days``; ``None`` when unreadable."""
    text = text.strip()
    try:
        day = date(int(text[0:4]), int(text[4:6]), int(text[6:8]))
    except (ValueError, IndexError):
        return None
    return (day - timedelta(days=days)).strftime("%Y%m%d") + text[8:]


def _remove_date(ds: Dataset, tag: int) -> None:
    if ds[tag].keyword in EMPTIED_DATES:
        ds[tag].value = ""
    else:
        del ds[tag]


def _date(ds: Dataset, tag: int, days: int | None) -> None:
    element = ds[tag]
    if days is None or element.VR not in ("DA", "DT"):
        _remove_date(ds, tag)
        return
    values = element.value if isinstance(element.value, (list, pydicom.multival.MultiValue)) else [element.value]
    shifted = [_shift_date_text(str(v), days) for v in values if str(v).strip()]
    if not shifted or any(v is None for v in shifted):
        _remove_date(ds, tag)
        return
    element.value = shifted[0] if len(shifted) == 1 else shifted


def _replace_uids(key: bytes, value: object) -> object:
    if isinstance(value, (list, pydicom.multival.MultiValue)):
        return [_replace_uids(key, v) for v in value]
    text = str(value or "").strip()
    return uid_replacement(key, text) if text else text


def _clean(ds: Dataset, options: DeidentifyOptions) -> None:
    """The table's actions on ``ds`` and, recursively, on every item of its sequences."""
    for element in list(ds):
        tag = int(element.tag)
        group = tag >> 16
        if element.tag.is_private or 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF:
            del ds[tag]
            continue
        keyword, action = ACTIONS_BY_TAG.get(tag, (element.keyword, ""))
        if action == X:
            del ds[tag]
        elif action == TIME and options.date_shift_days is None:
            _remove_date(ds, tag)
        elif action == Z:
            element.value = Sequence() if element.VR == "SQ" else ""
        elif action == "P":
            element.value = options.pseudonym
        elif action == DATE or (not action and element.VR in ("DA", "DT")):
            _date(ds, tag, options.date_shift_days)
        elif action == U or (not action and element.VR == "UI" and keyword not in KEPT_UID_KEYWORDS
                             and str(element.value or "") not in UID_dictionary):
            element.value = _replace_uids(options.key, element.value)
        elif not action and element.VR == "PN":
            element.value = ""
        elif element.VR == "SQ":
            for item in element.value:
                _clean(item, options)


def _record(ds: Dataset, options: DeidentifyOptions) -> None:
    # present even when the source lacked them; the name as one family-name component
    ds.PatientID = options.pseudonym
    ds.PatientName = options.pseudonym + "^" if options.pseudonym else ""
    ds.PatientIdentityRemoved = "YES"
    shifted = options.date_shift_days is not None
    ds.DeidentificationMethod = [
        "DICOM PS3.15 Annex E Basic Application Confidentiality Profile",
        "private attributes, overlays and curves removed",
        "UIDs replaced (keyed hash); patient id replaced by a pseudonym",
        "dates shifted per patient; times kept" if shifted else "dates and times removed",
    ]
    codes = [BASIC_PROFILE] + ([MODIFIED_DATES_OPTION] if shifted else [])
    items = []
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(items)
    ds.LongitudinalTemporalInformationModified = "MODIFIED" if shifted else "REMOVED"


def deidentify_dataset(ds: Dataset, options: DeidentifyOptions, *, source: str = "<dataset>") -> Dataset:
    """Apply the profile to ``ds`` (and its file meta) in place and return it.

    Raises ``InputError`` naming ``source`` when Burned In Annotation is YES (nothing is
    changed then)."""
    check_burned_in(ds, source)
    _clean(ds, options)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        for keyword in META_REMOVED:
            if keyword in meta:
                delattr(meta, keyword)
        if meta.get("MediaStorageSOPInstanceUID"):
            meta.MediaStorageSOPInstanceUID = uid_replacement(options.key, str(meta.MediaStorageSOPInstanceUID))
        if not ds.get("SOPInstanceUID") and meta.get("MediaStorageSOPInstanceUID"):
            ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID  # the file's own identity, already replaced
    _record(ds, options)
    return ds
