"""imaging.reidentify: a result made from a de-identified series gets the original's UIDs and
patient / study attributes back, and only those."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from spineseg.imaging.deidentify import uid_replacement
from spineseg.imaging.reidentify import reidentify_result, return_header_of, uid_map_of

KEY = b"k" * 32


def _original(index: int) -> Dataset:
    ds = Dataset()
    ds.PatientName, ds.PatientID, ds.AccessionNumber = "Doe^Jane", "MRN-1", "ACC-9"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3", "1.2.3.4"
    ds.SOPInstanceUID, ds.FrameOfReferenceUID = f"1.2.3.4.{index}", "1.2.3.5"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    return ds


def _result_from_stored() -> Dataset:
    """A SEG-like dataset referencing the stored (replaced) UIDs, with the pseudonym."""
    seg = Dataset()
    seg.PatientName, seg.PatientID, seg.PatientIdentityRemoved = "SPS-1", "SPS-1", "YES"
    seg.StudyInstanceUID = uid_replacement(KEY, "1.2.3")
    seg.FrameOfReferenceUID = uid_replacement(KEY, "1.2.3.5")
    seg.SeriesInstanceUID, seg.SOPInstanceUID = "9.9", "9.9.1"  # the result's own
    ref = Dataset()
    ref.SeriesInstanceUID = uid_replacement(KEY, "1.2.3.4")
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.ReferencedSOPInstanceUID = uid_replacement(KEY, "1.2.3.4.2")
    ref.ReferencedInstanceSequence = Sequence([item])
    seg.ReferencedSeriesSequence = Sequence([ref])
    return seg


def test_map_header_and_reidentify() -> None:
    originals = [_original(i) for i in (1, 2)]
    uid_map = uid_map_of(originals, lambda uid: uid_replacement(KEY, uid))
    assert sorted(uid_map.values()) == ["1.2.3", "1.2.3.4", "1.2.3.4.1", "1.2.3.4.2", "1.2.3.5"]
    header = Dataset.from_json(return_header_of(originals[0]))
    seg = _result_from_stored()
    assert reidentify_result(seg, uid_map, header) == 4
    assert (seg.StudyInstanceUID, seg.FrameOfReferenceUID) == ("1.2.3", "1.2.3.5")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == "1.2.3.4"
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == "1.2.3.4.2"
    assert (seg.SeriesInstanceUID, seg.SOPInstanceUID) == ("9.9", "9.9.1")  # its own UIDs stay
    assert (str(seg.PatientName), seg.PatientID, seg.AccessionNumber) == ("Doe^Jane", "MRN-1", "ACC-9")
    assert "PatientIdentityRemoved" not in seg


def test_a_result_of_another_study_is_refused() -> None:
    seg = _result_from_stored()
    seg.StudyInstanceUID = "7.7.7"
    with pytest.raises(ValueError, match="not one of the imported series' studies"):
        reidentify_result(seg, {"x": "y"}, Dataset())
