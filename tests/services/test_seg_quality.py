"""The run's quality verdict travels in the DICOM SEGs (ContentDescription), where a PACS shows it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from spineseg.services.dicom_seg import content_description, write_dicom_seg
from tests.conftest import CASES


def test_description_carries_the_verdict_within_64_characters():
    assert content_description("review", []) == "SpineSeg quality: review"
    both = content_description("not assessable", ["StudyInstanceUID", "FrameOfReferenceUID"])
    assert both.startswith("SpineSeg quality: not assessable; UIDs derived") and len(both) <= 64
    assert content_description(None, []) is None  # a run made before the checks claims nothing


@pytest.mark.shared_data
def test_seg_of_a_real_series_says_its_verdict(tmp_path: Path) -> None:
    folder = CASES / "ts-dicom-thorax" / "dicom"
    if not folder.is_dir():
        pytest.skip(f"shared data not found at {folder} (set SPINESEG_SHARED_DATA)")
    from spineseg.imaging.io import load_volume

    volume = load_volume(folder)
    bone = (volume.array > 250).astype(np.uint8)  # any mask on the series' grid will do
    path = write_dicom_seg(bone, volume.affine, folder, volume.provenance.series_uid, tmp_path / "seg.dcm",
                           model_id="test", quality="review")
    seg = pydicom.dcmread(path)
    assert seg.ContentDescription.startswith("SpineSeg quality: review")  # then the derived UIDs, if any
    assert seg.SeriesDescription == "Spine segmentation (SpineSeg)"
