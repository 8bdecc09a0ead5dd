"""A DICOM Segmentation object (binary, one segment "spine") referencing the CT series the
mask was computed from, built with highdicom.

The mask lives on the ``Volume`` grid (RAS+ affine); each source slice gets the mask sampled
(nearest neighbour) at its own pixel centres through DICOM geometry, so the SEG frames line up
with the source images even when the reader reordered, flipped or resampled the slices.
"""

from __future__ import annotations

import logging
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pydicom.uid
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes

from spineseg.errors import InputError
from spineseg.registry.version import package_version

log = logging.getLogger(__name__)

LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])


def source_slices(folder: Path, series_uid: str | None) -> list[pydicom.Dataset]:
    """The image datasets of ``series_uid`` (any series when ``None``) found under ``folder``,
    with pixel data, in the order of their position along the slice normal."""
    found: list[pydicom.Dataset] = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path)
        except (InvalidDicomError, OSError, ValueError, TypeError, KeyError):
            continue
        if "ImagePositionPatient" not in ds or "PixelData" not in ds:
            continue
        if series_uid is not None and ds.get("SeriesInstanceUID") != series_uid:
            continue
        found.append(ds)
    if not found:
        raise InputError(folder, f"no DICOM image of series {series_uid} was found to reference")
    normal = np.cross(*np.reshape(np.asarray(found[0].ImageOrientationPatient, dtype=float), (2, 3)))
    found.sort(key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float))))
    return found


def complete_identifiers(sources: list[pydicom.Dataset]) -> list[str]:
    """Fill identifiers that anonymisers blank but a SEG must reference, in memory only.

    SOP Class / Instance UIDs come from each file's meta header (the file's own identity).
    An empty Study, Series or Frame of Reference UID gets one UID derived from the instance
    UIDs (the same for every slice). Returns the names of the derived UIDs (empty when none)."""
    derived: list[str] = []
    for ds in sources:
        meta = getattr(ds, "file_meta", None)
        if not ds.get("SOPClassUID") and meta is not None:
            ds.SOPClassUID = meta.get("MediaStorageSOPClassUID", "")
        if not ds.get("SOPInstanceUID") and meta is not None:
            ds.SOPInstanceUID = meta.get("MediaStorageSOPInstanceUID", "")
    entropy = [str(ds.SOPInstanceUID) for ds in sources]
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        if all(ds.get(keyword) for ds in sources):
            continue
        uid = pydicom.uid.generate_uid(entropy_srcs=[keyword, *entropy])
        for ds in sources:
            setattr(ds, keyword, uid)
        derived.append(keyword)
    return derived


def mask_on_slice(mask: np.ndarray, affine: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    """``mask`` (I, J, K) sampled at the pixel centres of one DICOM slice -> (Rows, Columns) uint8."""
    return (values_on_slice(mask, affine, ds) > 0).astype(np.uint8)


def values_on_slice(mask: np.ndarray, affine: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    """``mask``'s values (labels) at the pixel centres of one DICOM slice (nearest neighbour,
    0 outside the grid) -> (Rows, Columns) of the mask's dtype."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
    along_row, along_col = orientation[:3], orientation[3:]  # directions of increasing column / row index
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    origin = np.asarray(ds.ImagePositionPatient, dtype=float)
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    lps = origin + (c[..., None] * col_spacing) * along_row + (r[..., None] * row_spacing) * along_col
    ras = lps * LPS_TO_RAS
    voxel = (np.c_[ras.reshape(-1, 3), np.ones(rows * cols)] @ np.linalg.inv(affine).T)[:, :3]
    index = np.rint(voxel).astype(np.int64)
    inside = np.all((index >= 0) & (index < np.array(mask.shape)), axis=1)
    values = np.zeros(rows * cols, dtype=mask.dtype)
    i, j, k = index[inside].T
    values[inside] = mask[i, j, k]
    return values.reshape(rows, cols)


def content_description(quality: str | None, derived: list[str]) -> str | None:
    """A SEG's ContentDescription (LO, at most 64 characters): the run's quality verdict
    (``services.quality``; its reasons are in the run summary and the measurement SR) and the
    identifiers derived because the source lacked them; None when there is neither."""
    parts = [f"SpineSeg quality: {quality}"] if quality else []
    if derived:
        parts.append("UIDs derived: source lacked " + "/".join(d[:5] for d in derived))
    return "; ".join(parts)[:64] or None


def write_dicom_seg(mask: np.ndarray, affine: np.ndarray, dicom_folder: Path, series_uid: str | None,
                    path: Path, *, model_id: str, sources: list[pydicom.Dataset] | None = None,
                    quality: str | None = None) -> Path:
    """Write a binary DICOM SEG of ``mask`` referencing the series in ``dicom_folder`` to ``path``
    (``sources``: that series' ``source_slices`` when the caller has read them already;
    ``quality``: the run's verdict, carried in the ContentDescription)."""
    sources = sources if sources is not None else source_slices(dicom_folder, series_uid)
    derived = complete_identifiers(sources)
    if derived:
        log.warning("source series lacks %s (anonymised?): the SEG references derived UIDs", ", ".join(derived))
    frames = np.stack([mask_on_slice(mask, affine, ds) for ds in sources])
    algorithm = hd.AlgorithmIdentificationSequence(
        name="SpineSeg 2.5D U-Net", version=model_id[:64], family=codes.cid7162.ArtificialIntelligence
    )
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Spine",
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=codes.SCT.BoneStructureOfSpine,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="SpineSeg",
        manufacturer_model_name="SpineSeg",
        software_versions=package_version(),
        device_serial_number="none",
        series_description="Spine segmentation (SpineSeg)",
        omit_empty_frames=False,
        content_description=content_description(quality, derived),
    )
    path = save_dicom(seg, path)
    log.info("wrote DICOM SEG of %d frames referencing %s to %s", len(sources), sources[0].SeriesInstanceUID, path)
    return path


def save_dicom(dataset: pydicom.Dataset, path: Path, *, enforce_file_format: bool = False) -> Path:
    """Write ``dataset`` to ``path`` in one rename (a reader never sees half a file); the folder
    is made when missing. Every DICOM output of a run (SEG, levels SEG, RTSTRUCT) is saved here."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".part-" + path.name)
    dataset.save_as(tmp, enforce_file_format=enforce_file_format)
    tmp.replace(path)
    return path
