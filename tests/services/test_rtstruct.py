"""RTSTRUCT of per-vertebra levels on the real ts-dicom-thorax series (T11, T12 labelled)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from skimage.draw import polygon

from spineseg.errors import InputError
from spineseg.imaging.io import load_labels, load_volume
from spineseg.services.dicom_seg import complete_identifiers, source_slices, values_on_slice
from spineseg.services.rtstruct import write_rtstruct

pytestmark = pytest.mark.shared_data


def test_one_roi_per_vertebra_with_contours_on_their_slices(tmp_path: Path, shared_cases: Path) -> None:
    folder = shared_cases / "ts-dicom-thorax"
    volume = load_volume(folder / "dicom")
    levels = load_labels(folder / "labels.nii.gz", volume).vertebrae
    path = write_rtstruct(levels, volume.affine, folder / "dicom", volume.provenance.series_uid, tmp_path / "rt.dcm")
    ds = pydicom.dcmread(path)
    assert ds.Modality == "RTSTRUCT" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3"
    assert [roi.ROIName for roi in ds.StructureSetROISequence] == ["T11", "T12"]
    slices = source_slices(folder / "dicom", None)
    complete_identifiers(slices)  # the UIDs the writer referenced (this anonymised series lacks some)
    sources = {s.SOPInstanceUID: s for s in slices}
    for roi, label in zip(ds.ROIContourSequence, (18, 19), strict=True):
        drawn: dict[str, np.ndarray] = {}
        for contour in roi.ContourSequence:
            source = sources[contour.ContourImageSequence[0].ReferencedSOPInstanceUID]
            points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
            assert contour.NumberOfContourPoints == len(points)
            orientation = np.asarray(source.ImageOrientationPatient, dtype=float)
            normal = np.cross(orientation[:3], orientation[3:])
            origin = np.asarray(source.ImagePositionPatient, dtype=float)
            assert np.allclose((points - origin) @ normal, 0.0, atol=1e-3)  # on its own slice
            # Back to pixels and filled: the same area as the label on that slice.
            col = (points - origin) @ orientation[:3] / float(source.PixelSpacing[1])
            row = (points - origin) @ orientation[3:] / float(source.PixelSpacing[0])
            canvas = drawn.setdefault(source.SOPInstanceUID, np.zeros((source.Rows, source.Columns), bool))
            rr, cc = polygon(row, col, canvas.shape)
            canvas[rr, cc] ^= True  # holes are contours inside contours
        assert drawn
        for uid, canvas in drawn.items():
            truth = values_on_slice(levels, volume.affine, sources[uid]) == label
            assert abs(int(canvas.sum()) - int(truth.sum())) <= 0.15 * truth.sum() + 20


def test_no_vertebra_is_refused(tmp_path: Path, shared_cases: Path) -> None:
    folder = shared_cases / "ts-dicom-thorax"
    volume = load_volume(folder / "dicom")
    with pytest.raises(InputError, match="no vertebra"):
        write_rtstruct(np.zeros(volume.shape, np.int16), volume.affine, folder / "dicom", None, tmp_path / "rt.dcm")
