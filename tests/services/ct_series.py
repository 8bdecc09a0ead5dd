"""A real CT volume written as a DICOM CT series (one file per axial slice, written under the
test's tmp_path, never in the shared folder): the shared DICOM cases hold 20 slices (one or two
vertebrae), and the reports need a study with many whole vertebrae."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pydicom.uid
from pydicom.dataset import Dataset, FileMetaDataset

PATIENT_ID, PATIENT_NAME = "SR-TEST-0005", "Report^Test"
STUDY_DATE = "20210304"
UID_ROOT = "1.2.826.0.1.3680043.10.1033"  # study .1, series .2, frame of reference .3, slice k: .4.k


def write_ct_series(hu: np.ndarray, affine: np.ndarray, folder: Path, *, uid_root: str = UID_ROOT) -> list[Path]:
    """``hu`` (I, J, K) with ``affine`` voxel -> RAS mm, written as axial slices (rows along
    anterior-posterior, columns along right-left) of a CT series; returns the files."""
    ras = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(hu, dtype=np.int16), affine))
    data, canonical = np.asarray(ras.dataobj, dtype=np.int16), ras.affine
    spacing = np.sqrt((canonical[:3, :3] ** 2).sum(axis=0))
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = f"{uid_root}.1", f"{uid_root}.2", f"{uid_root}.3"
    written = []
    for k in range(data.shape[2]):
        # pixel (row r, column c) is voxel (i=c, j=r, k): a row runs along +i, a column along +j;
        # DICOM wants these directions in LPS (RAS with x and y negated)
        origin_ras = canonical @ np.array([0, 0, k, 1.0])
        row_dir = canonical[:3, 0] / spacing[0]
        col_dir = canonical[:3, 1] / spacing[1]
        to_lps = np.array([-1.0, -1.0, 1.0])
        ds = Dataset()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
        meta.MediaStorageSOPInstanceUID = f"{uid_root}.4.{k + 1}"
        meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = PATIENT_ID, PATIENT_NAME, "19600101", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate = ds.SeriesDate = STUDY_DATE
        ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "101500", "1", "ACC-SR-1", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in origin_ras[:3] * to_lps]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in np.r_[row_dir * to_lps, col_dir * to_lps]]
        ds.PixelSpacing = [f"{spacing[1]:.4f}", f"{spacing[0]:.4f}"]  # row spacing (along j), column (along i)
        ds.SliceThickness = f"{spacing[2]:.4f}"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = data.shape[1], data.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
        ds.PixelData = np.ascontiguousarray(data[:, :, k].T).tobytes()  # rows = j, columns = i
        path = folder / f"{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
    return written
