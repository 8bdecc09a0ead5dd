"""An RT Structure Set (RTSTRUCT) with one ROI per vertebra, for radiotherapy planning systems.

Built with pydicom after DICOM PS3.3 A.19 (RT Structure Set IOD): Structure Set, ROI Contour and
RT ROI Observations modules. Each ROI holds one CLOSED_PLANAR contour per outline of the
vertebra on each source slice (marching squares on the label map sampled at the slice's pixel
centres), in patient (LPS) millimetres, referencing that slice's SOP instance.
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

import numpy as np
import pydicom
import pydicom.uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from skimage.measure import find_contours

from spineseg.errors import InputError
from spineseg.model.level_ids import colour, label_name
from spineseg.registry.version import package_version
from spineseg.services.dicom_seg import complete_identifiers, save_dicom, source_slices, values_on_slice
from spineseg.services.levels import shown_name

log = logging.getLogger(__name__)

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
STUDY_COMPONENT_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"  # the class DICOM uses for RT Referenced Study
PATIENT_STUDY_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                          "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
                          "FrameOfReferenceUID")
MIN_CONTOUR_POINTS = 3


def slice_contours(binary: np.ndarray, ds: pydicom.Dataset) -> list[np.ndarray]:
    """Outlines of ``binary`` (Rows, Columns) as (N, 3) LPS mm point lists on slice ``ds``."""
    orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
    along_row, along_col = orientation[:3], orientation[3:]
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    origin = np.asarray(ds.ImagePositionPatient, dtype=float)
    out = []
    for contour in find_contours(np.pad(binary.astype(np.float32), 1), 0.5):
        rc = contour[:-1] - 1.0  # closed: the last point repeats the first; undo the padding
        if len(rc) < MIN_CONTOUR_POINTS:
            continue
        out.append(origin + (rc[:, 1:2] * col_spacing) * along_row + (rc[:, 0:1] * row_spacing) * along_col)
    return out


def _reference(ds: pydicom.Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    return item


def write_rtstruct(levels: np.ndarray, affine: np.ndarray, dicom_folder: Path, series_uid: str | None,
                   path: Path, *, sources: list[pydicom.Dataset] | None = None,
                   withheld: frozenset[int] | set[int] = frozenset()) -> Path:
    """One ROI per vertebra label of ``levels`` (on the volume grid, ``affine`` voxel -> RAS mm);
    ``sources``: the series' ``source_slices`` when the caller has read them already; a label in
    ``withheld`` (its name withheld by the quality checks) is named "withheld (read as T7)"."""
    labels = [int(v) for v in np.unique(levels) if v > 0]
    if not labels:
        raise InputError("levels", "no vertebra was found in this run, so there is no structure to export")
    sources = sources if sources is not None else source_slices(dicom_folder, series_uid)
    complete_identifiers(sources)
    first = sources[0]
    now = datetime.datetime.now(datetime.UTC)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RT_STRUCTURE_SET_STORAGE
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = RT_STRUCTURE_SET_STORAGE, meta.MediaStorageSOPInstanceUID
    for keyword in PATIENT_STUDY_KEYWORDS:
        setattr(ds, keyword, first.get(keyword, ""))
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesNumber, ds.InstanceNumber = 902, 1
    ds.SeriesDescription = "Vertebrae (SpineSeg levels)"
    ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions = "SpineSeg", "SpineSeg", package_version()
    ds.StructureSetLabel = "Vertebrae"
    ds.StructureSetDate, ds.StructureSetTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")

    series = Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    series.ContourImageSequence = Sequence([_reference(s) for s in sources])
    study = Dataset()
    study.ReferencedSOPClassUID = STUDY_COMPONENT_SOP_CLASS
    study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study.RTReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])

    frames = [values_on_slice(np.asarray(levels, dtype=np.int16), affine, s) for s in sources]
    rois, contours, observations = [], [], []
    for number, label in enumerate(labels, start=1):
        roi = Dataset()
        roi.ROINumber, roi.ReferencedFrameOfReferenceUID = number, first.FrameOfReferenceUID
        roi.ROIName, roi.ROIGenerationAlgorithm = shown_name(label_name(label), label in withheld), "AUTOMATIC"
        rois.append(roi)
        items = []
        for source, values in zip(sources, frames, strict=True):
            for points in slice_contours(values == label, source):
                item = Dataset()
                item.ContourImageSequence = Sequence([_reference(source)])
                item.ContourGeometricType = "CLOSED_PLANAR"
                item.NumberOfContourPoints = len(points)
                item.ContourData = [f"{v:.3f}" for v in points.ravel()]
                items.append(item)
        roi_contour = Dataset()
        roi_contour.ROIDisplayColor = list(colour(label))
        roi_contour.ReferencedROINumber = number
        roi_contour.ContourSequence = Sequence(items)
        contours.append(roi_contour)
        observation = Dataset()
        observation.ObservationNumber, observation.ReferencedROINumber = number, number
        observation.RTROIInterpretedType, observation.ROIInterpreter = "ORGAN", ""
        observations.append(observation)
    ds.StructureSetROISequence = Sequence(rois)
    ds.ROIContourSequence = Sequence(contours)
    ds.RTROIObservationsSequence = Sequence(observations)

    path = save_dicom(ds, path, enforce_file_format=True)
    log.info("wrote an RTSTRUCT of %d vertebrae to %s", len(labels), path)
    return path
