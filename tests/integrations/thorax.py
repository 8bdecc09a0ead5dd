"""The shared ts-dicom-thorax series as a PACS holds it: the shared files are anonymised (empty
Study / Series / SOP Instance UIDs, no patient), which a PACS refuses, so the tests load copies
(written under tmp_path, never in place) given a made-up patient, accession number and UIDs."""

from __future__ import annotations

from pathlib import Path

import pydicom

PATIENT_ID = "PACS-TEST-0016"
PATIENT_NAME = "Testpatient^Pacs"
ACCESSION = "ACC16-0001"
STUDY_UID = "1.2.826.0.1.3680043.10.1016.1"
SERIES_UID = "1.2.826.0.1.3680043.10.1016.1.1"
FRAME_UID = "1.2.826.0.1.3680043.10.1016.1.2"


def thorax_folder(shared_cases: Path) -> Path:
    return shared_cases / "ts-dicom-thorax" / "dicom"


def pacs_copy(shared_cases: Path, target: Path, *, modality: str = "CT", series_uid: str = SERIES_UID,
              limit: int | None = None) -> list[Path]:
    """Copies of the thorax slices with identifiers a PACS accepts; ``modality`` relabels them
    (a series that is not CT), ``limit`` keeps only the first slices."""
    target.mkdir(parents=True, exist_ok=True)
    written = []
    sources = sorted(thorax_folder(shared_cases).iterdir())[:limit]
    for index, path in enumerate(sources):
        ds = pydicom.dcmread(path)
        ds.PatientID, ds.PatientName, ds.AccessionNumber = PATIENT_ID, PATIENT_NAME, ACCESSION
        ds.PatientBirthDate, ds.PatientSex = "19600101", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY_UID, series_uid
        ds.FrameOfReferenceUID = FRAME_UID
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{series_uid}.{index + 1}"
        ds.Modality = modality
        if modality != "CT":
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.MRImageStorage
        out = target / f"{index + 1:03d}.dcm"
        ds.save_as(out)
        written.append(out)
    return written
