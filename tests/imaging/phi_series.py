"""A synthetic CT series carrying made-up patient data in every attribute group of the
de-identification table (patient, physicians, institution, ids, dates, descriptions, UIDs,
private tags), and the identifiers a test searches every output for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

# Each value is unique enough that finding it anywhere in an output means it leaked.
PHI = {
    "name": "DOE^JANE^QUINTESSA",
    "mrn": "MRN-998877",
    "birth_date": "19470312",
    "other_id": "OTHERID-424242",
    "accession": "ACC-5551234",
    "institution": "Saint Zebulon Infirmary",
    "address": "17 Quarry Lane, Wexford",
    "referring": "HOUSE^GREGORY",
    "performing": "CAMERON^ALLISON",
    "operator": "CHASE^ROBERT",
    "station": "ZEBULON-CT-7",
    "serial": "SN-0077123",
    "study_description": "CT THORAX FOR JANE DOE",
    "series_description": "Jane Doe spine 1mm",
    "protocol": "DOE-PROTOCOL-X",
    "comment": "patient Quintessa Doe, room 12",
    "telephone": "+41-61-555-0199",
    "private": "PRIVATE-DOE-VALUE",
    "study_date": "20240229",
    "study_uid": "1.2.826.0.1.3680043.8.498.111",
    "series_uid": "1.2.826.0.1.3680043.8.498.222",
    "frame_uid": "1.2.826.0.1.3680043.8.498.333",
}
SOP_UID_ROOT = "1.2.826.0.1.3680043.8.498.444."
FILE_NAME = "DOE_JANE_MRN-998877"


def needles() -> dict[str, bytes]:
    """What to search outputs for: each identifier, plus the name's parts and the date."""
    found = {key: value.encode() for key, value in PHI.items()}
    found |= {"name-family": b"QUINTESSA", "file-name": FILE_NAME.encode(), "sop-uid": SOP_UID_ROOT.encode()}
    return found


def rows_text(database_url: str) -> str:
    """Every row of every table of the database at ``database_url``, as text (to search for PHI)."""
    from sqlalchemy import MetaData, select

    from spineseg.store.database import open_database

    database = open_database(database_url)
    metadata = MetaData()
    metadata.reflect(database.engine)
    with database.engine.connect() as connection:
        text = "\n".join(repr(tuple(row)) for table in metadata.sorted_tables
                         for row in connection.execute(select(table)))
    database.dispose()
    return text


def leaks(data: bytes) -> list[str]:
    """The identifiers found in ``data`` (case-insensitive)."""
    lower = data.lower()
    return [key for key, needle in needles().items() if needle.lower() in lower]


def phi_dataset(index: int, *, rows: int = 48, slices_mm: float = 2.5, patient: dict[str, str] | None = None,
                burned_in: str | None = None) -> Dataset:
    """Slice ``index`` of a small CT series (a bright block as 'bone') with the PHI above."""
    phi = PHI | (patient or {})
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = SOP_UID_ROOT + str(index + 1)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.SourceApplicationEntityTitle = "ZEBULON_PACS"
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.BodyPartExamined, ds.Manufacturer = "CT", "CHEST", "ACME"
    # patient
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = phi["name"], phi["mrn"], phi["birth_date"], "F"
    ds.OtherPatientIDs, ds.PatientAddress = phi["other_id"], phi["address"]
    ds.PatientTelephoneNumbers = phi["telephone"]
    ds.PatientAge, ds.PatientWeight, ds.PatientComments = "077Y", "61", phi["comment"]
    ds.IssuerOfPatientID = "ZEBULON"
    # physicians and operators
    ds.ReferringPhysicianName, ds.PerformingPhysicianName = phi["referring"], phi["performing"]
    ds.OperatorsName, ds.PhysiciansOfRecord = phi["operator"], phi["referring"]
    # institution and device
    ds.InstitutionName, ds.InstitutionAddress = phi["institution"], phi["address"]
    ds.InstitutionalDepartmentName, ds.StationName, ds.DeviceSerialNumber = "Radiology", phi["station"], phi["serial"]
    # ids
    ds.AccessionNumber, ds.StudyID = phi["accession"], "STUDY-77"
    # dates and times
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = phi["study_date"]
    ds.StudyTime = ds.SeriesTime = "101500"
    # descriptions
    ds.StudyDescription, ds.SeriesDescription, ds.ProtocolName = (
        phi["study_description"], phi["series_description"], phi["protocol"])
    ds.ImageComments = phi["comment"]
    request = Dataset()
    request.RequestedProcedureID, request.ScheduledProcedureStepID = phi["accession"], phi["other_id"]
    ds.RequestAttributesSequence = Sequence([request])
    # UIDs
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = (
        phi["study_uid"], phi["series_uid"], phi["frame_uid"])
    referenced = Dataset()
    referenced.ReferencedSOPClassUID = CTImageStorage
    referenced.ReferencedSOPInstanceUID = SOP_UID_ROOT + "999"
    ds.ReferencedImageSequence = Sequence([referenced])
    # private
    ds.add_new(0x00091010, "LO", "ACME 1.0")
    ds.add_new(0x00091001, "LO", phi["private"])
    ds.private_block(0x0029, "ZEBULON PRIVATE", create=True).add_new(0x01, "LO", phi["private"])
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    # geometry and pixels
    ds.SeriesNumber, ds.InstanceNumber = 3, index + 1
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-60.0, -60.0, index * slices_mm]
    ds.PixelSpacing, ds.SliceThickness = [2.5, 2.5], slices_mm
    ds.Rows = ds.Columns = rows
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    pixels = np.full((rows, rows), 1024 - 50, dtype=np.int16)
    pixels[rows // 3: rows // 2, rows // 3: rows // 2] = 1024 + 700
    ds.PixelData = pixels.tobytes()
    return ds


def write_phi_series(folder: Path, count: int = 12, **kwargs: object) -> list[Path]:
    """``count`` slices as ``folder/DOE_JANE_MRN-998877_<n>.dcm`` (the file names carry PHI too)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"{FILE_NAME}_{index:03d}.dcm"
        phi_dataset(index, **kwargs).save_as(path, enforce_file_format=True)  # type: ignore[arg-type]
        paths.append(path)
    return paths
