"""Put a result back into the original's world before it goes to the PACS it came from (pure:
datasets in, the same datasets changed out).

A study is stored de-identified (``imaging.deidentify``): its UIDs are keyed replacements and
its patient a pseudonym, so a DICOM SEG made from it references instances the PACS has never
seen. Sending it back, the stored UIDs it references become the original ones again
(``uid_map``: stored -> original, built at import by ``uid_map_of``) and the patient / study
attributes become the original's (``header``), so the PACS files the SEG in the original study
beside the series it was computed from. Only UIDs found in the map change; the result's own
UIDs (its SOP Instance and Series) stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pydicom
from pydicom.dataset import Dataset

# What a derived object references of its source (SEG, RTSTRUCT): study, series, instances and
# the frame of reference. Every other UID of the source is irrelevant to the PACS.
MAPPED_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
# The Patient and General Study modules' attributes a PACS files an object by (and shows).
RETURN_KEYWORDS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
                   "StudyID", "AccessionNumber", "StudyDate", "StudyTime", "ReferringPhysicianName",
                   "StudyDescription")
# The de-identification record, which a result sent back under the original identity must not carry.
DEIDENTIFICATION_RECORD = ("PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence",
                           "LongitudinalTemporalInformationModified")


def uid_map_of(datasets: Iterable[Dataset], replacement: Callable[[str], str]) -> dict[str, str]:
    """stored UID -> original UID for the ``MAPPED_KEYWORDS`` of the original ``datasets``,
    ``replacement`` being the de-identification's own UID function (so the map matches what
    was stored exactly)."""
    found: dict[str, str] = {}
    for ds in datasets:
        for keyword in MAPPED_KEYWORDS:
            original = str(ds.get(keyword, "") or "").strip()
            if original:
                found[replacement(original)] = original
    return found


def return_header_of(ds: Dataset) -> dict[str, Any]:
    """The ``RETURN_KEYWORDS`` ``ds`` has, as DICOM JSON (PS3.18 F.2)."""
    header = Dataset()
    for keyword in RETURN_KEYWORDS:
        if keyword in ds:
            setattr(header, keyword, ds.data_element(keyword).value)
    return header.to_json_dict()


def _map_uids(ds: Dataset, uid_map: dict[str, str]) -> int:
    replaced = 0
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                replaced += _map_uids(item, uid_map)
        elif element.VR == "UI" and element.value:
            values = element.value if isinstance(element.value, (list, pydicom.multival.MultiValue)) else None
            if values is not None:
                mapped = [uid_map.get(str(v), str(v)) for v in values]
                replaced += sum(m != str(v) for m, v in zip(mapped, values, strict=True))
                element.value = mapped
            elif str(element.value) in uid_map:
                element.value = uid_map[str(element.value)]
                replaced += 1
    return replaced


def reidentify_result(ds: Dataset, uid_map: dict[str, str], header: Dataset) -> int:
    """Give a result (SEG, RTSTRUCT) made from a stored series the original's UIDs and patient /
    study attributes, in place. Returns how many UIDs were replaced; ``ValueError`` when its
    Study Instance UID is not in the map (the result was not made from that series)."""
    if str(ds.get("StudyInstanceUID", "")) not in uid_map:
        raise ValueError("the result's Study Instance UID is not one of the imported series' studies")
    replaced = _map_uids(ds, uid_map)
    for keyword in RETURN_KEYWORDS:
        if keyword in header:
            setattr(ds, keyword, header.data_element(keyword).value)
        elif keyword in ds:
            del ds[keyword]
    for keyword in DEIDENTIFICATION_RECORD:
        if keyword in ds:
            del ds[keyword]
    return replaced
