"""The viewer's copies: RAS grid, cropped to the body (not the air, not a separate table), every
kept voxel at its old world position, labels never cut, outlines and stepped previews exact."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from spineseg.imaging.viewer_copy import outline, preview, viewer_ct, viewer_labels
from spineseg.imaging.volume import Provenance, Volume
from spineseg.services.viewer_files import ct_copy, decoded_size, label_copy, prepare_run


def body_ct(shape=(120, 110, 30)) -> tuple[np.ndarray, np.ndarray]:
    """Air around a box of soft tissue with a bony column, a table slab apart from the body."""
    hu = np.full(shape, -1000, dtype=np.int16)
    hu[30:90, 20:70, :] = 40
    hu[56:64, 25:33, :] = 700
    hu[10:110, 86:89, :] = 300  # the table, 16 voxels (13 mm) below the body
    mask = (hu == 700).astype(np.uint8)
    return hu, mask


def world_value(array: np.ndarray, affine: np.ndarray, mm: np.ndarray) -> float:
    ijk = np.rint(np.linalg.inv(affine) @ np.append(mm, 1))[:3].astype(int)
    return float(array[tuple(ijk)])


def test_crop_drops_air_and_table_and_keeps_world_positions() -> None:
    hu, mask = body_ct()
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    array, crop_affine, box = viewer_ct(Volume(hu.astype(np.float32), affine, Provenance("t", "numpy")), [mask])
    assert array.dtype == np.int16
    assert array.shape[0] < 90 and array.shape[1] < 80  # the air around and the table are gone
    assert (array == 300).sum() == 0
    assert box.canonical_shape == hu.shape
    rng = np.random.default_rng(1)
    for _ in range(20):
        ijk = [int(rng.integers(0, n)) for n in array.shape]
        mm = (crop_affine @ np.append(ijk, 1))[:3]
        assert world_value(hu, affine, mm) == array[tuple(ijk)]
    labels, label_affine = viewer_labels(mask, affine, box)
    np.testing.assert_allclose(label_affine, crop_affine)
    assert labels.sum() == mask.sum()  # no label voxel is cut


def test_pir_storage_comes_out_in_ras_order() -> None:
    hu, _mask = body_ct()
    # store as P-I-R: axis 0 runs posterior, axis 1 inferior, axis 2 right
    stored = np.transpose(hu, (1, 2, 0))[::-1, ::-1, :]
    affine = np.array([[0, 0, 0.8, 0], [-0.8, 0, 0, 60], [0, -2.0, 0, 60], [0, 0, 0, 1]], dtype=float)
    array, crop_affine, _box = viewer_ct(Volume(stored.astype(np.float32), affine, Provenance("t", "numpy")))
    assert nib.aff2axcodes(crop_affine) == ("R", "A", "S")
    mm = (crop_affine @ np.array([3, 4, 5, 1]))[:3]
    assert world_value(stored, affine, mm) == array[3, 4, 5]


def test_outline_is_the_shell_and_preview_keeps_exact_voxels() -> None:
    cube = np.zeros((9, 9, 9), dtype=np.uint8)
    cube[2:7, 2:7, 2:7] = 3
    shell = outline(cube)
    assert shell[4, 4, 4] == 0 and shell[2, 4, 4] == 3 and shell.sum() == 3 * (125 - 27)
    affine = np.diag([0.5, 0.5, 1.0, 1.0])
    affine[:3, 3] = [10, 20, 30]
    small, small_affine = preview(cube, affine, 2)
    assert small.shape == (5, 5, 9)  # every axial slice kept: the quick view skips none
    for ijk in [(1, 2, 3), (4, 0, 2), (2, 2, 7)]:
        mm = (small_affine @ np.append(ijk, 1))[:3]
        assert world_value(cube, affine, mm) == small[ijk]


def test_copies_are_cached_and_labels_share_the_ct_grid(tmp_path: Path) -> None:
    hu, mask = body_ct()
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    run = tmp_path / "study" / "runs" / "r1"
    run.mkdir(parents=True)
    nib.save(nib.Nifti1Image(hu, affine), str(run / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(mask, affine), str(run / "mask.nii.gz"))
    ct_path, box = ct_copy(tmp_path / "study", run / "ct.nii.gz", [run / "mask.nii.gz"])
    assert ct_path.parent == tmp_path / "study" / "viewer"  # the study's, shared by its runs
    stamp = ct_path.stat().st_mtime_ns
    assert ct_copy(tmp_path / "study", run / "ct.nii.gz")[0].stat().st_mtime_ns == stamp
    mask_path = label_copy(tmp_path / "study", run / "ct.nii.gz", run / "mask.nii.gz")
    assert mask_path.parent == run / "viewer"  # the run's own
    ct_image, mask_image = nib.load(str(ct_path)), nib.load(str(mask_path))
    assert ct_image.shape == mask_image.shape
    np.testing.assert_allclose(ct_image.affine, mask_image.affine)
    assert decoded_size(ct_path) == 352 + 2 * int(np.prod(ct_image.shape))
    stepped = label_copy(tmp_path / "study", run / "ct.nii.gz", run / "mask.nii.gz", step=2, as_outline=True)
    x, y, z = mask_image.shape
    assert nib.load(str(stepped)).shape == ((x + 1) // 2, (y + 1) // 2, z)  # every slice kept
    assert box.stop[0] - box.start[0] == ct_image.shape[0]


def test_prepare_run_makes_the_first_view_copies(tmp_path: Path) -> None:
    hu, mask = body_ct()
    run = tmp_path / "study" / "runs" / "r1"
    run.mkdir(parents=True)
    nib.save(nib.Nifti1Image(hu, np.eye(4)), str(run / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(mask, np.eye(4)), str(run / "mask.nii.gz"))
    prepare_run(tmp_path / "study", run / "ct.nii.gz", [run / "mask.nii.gz", run / "truth.nii.gz"], 2)
    assert (tmp_path / "study" / "viewer" / "ct-step2.nii.gz").is_file()
    assert (run / "viewer" / "mask-step2.nii.gz").is_file() and not (run / "viewer" / "truth.nii.gz").exists()
