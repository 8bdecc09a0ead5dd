"""The faster scoring and label paths of issue 31 give what the plain computations give: the
joint-box crop of ``evaluate_masks``, the lookup-table TotalSegmentator mapping, the sliced
``labels_onto_grid`` and the cropped marching cubes of ``mask_surface``."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import marching_cubes

from spineseg.imaging.labels import detect_convention, totalsegmentator_to_verse
from spineseg.imaging.resample import labels_onto_grid
from spineseg.metrics.evaluate import evaluate_masks, joint_box
from spineseg.metrics.interior import interior_recall
from spineseg.metrics.overlap import confusion_counts
from spineseg.metrics.surface import surface_distances
from spineseg.services.mesh import mask_surface


def _blobs(shape: tuple[int, int, int], seed: int, touch_edge: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, dtype=bool)
    truth[10:30, 12:34, 5:25] = True
    truth[18:22, 20:26, 8:22] = False  # a hollow
    pred = np.roll(truth, 2, axis=0) | (rng.random(shape) > 0.999)  # shifted, with specks far away
    if touch_edge:
        truth[:, :, :3] = truth[:, :, 5:8]
        pred[:, :, :2] = True
    return pred, truth


@pytest.mark.parametrize("touch_edge", [False, True])
def test_evaluate_masks_on_the_joint_box_equals_the_whole_grid(touch_edge: bool) -> None:
    pred, truth = _blobs((60, 70, 40), 3, touch_edge)
    spacing = (0.7, 0.8, 2.5)
    timings: dict[str, float] = {}
    got = evaluate_masks(pred, truth, spacing, timings=timings)
    counts = confusion_counts(pred, truth)
    distances = surface_distances(pred, truth, spacing)
    assert (got["tp"], got["fp"], got["tn"], got["fn"]) == (counts.tp, counts.fp, counts.tn, counts.fn)
    assert got["hd95_mm"] == distances.hd95_mm and got["assd_mm"] == distances.assd_mm
    assert got["signed_surface_distance_mm"] == distances.signed_mean_mm
    assert got["surface_dice_1mm"] == distances.surface_dice(1.0)
    assert got["interior_recall"] == interior_recall(pred, truth, spacing)
    assert set(timings) == {"overlap", "surface", "interior", "volumes"}


def test_evaluate_masks_with_a_roi_and_empty_masks() -> None:
    pred, truth = _blobs((50, 50, 30), 5)
    roi = np.zeros_like(truth)
    roi[:, :, 10:] = True
    got = evaluate_masks(pred, truth, (1.0, 1.0, 1.0), roi)
    counts = confusion_counts(pred & roi, truth & roi)
    assert (got["tp"], got["fp"], got["fn"]) == (counts.tp, counts.fp, counts.fn)
    assert got["tn"] == int(roi.sum()) - counts.tp - counts.fp - counts.fn
    empty = np.zeros_like(truth)
    assert evaluate_masks(empty, empty, (1.0, 1.0, 1.0))["tn"] == empty.size
    assert joint_box(empty, empty) is None
    box = joint_box(pred[:40, :40, :20] * 0 > 0, truth[:40, :40, :20])
    assert box == (slice(9, 31), slice(11, 35), slice(4, 20))


def test_totalsegmentator_lookup_table_matches_the_rule() -> None:
    ids = np.arange(0, 200, dtype=np.uint8).reshape(8, 25, 1)
    got = totalsegmentator_to_verse(ids)
    expected = np.where((ids >= 27) & (ids <= 50), 51 - ids.astype(np.int16), 0)
    expected[(ids == 25) | (ids == 26)] = 26
    assert got.dtype == np.int16
    np.testing.assert_array_equal(got, expected)
    wide = np.array([0, 27, 70_000], dtype=np.int32)  # beyond the table: the boolean path
    np.testing.assert_array_equal(totalsegmentator_to_verse(wide), [0, 24, 0])


def test_detect_convention_on_stored_integer_types() -> None:
    from pathlib import Path

    assert detect_convention(Path("a.nii.gz"), np.array([0, 255, 255], dtype=np.uint8)) == "binary"
    assert detect_convention(Path("a.nii.gz"), np.zeros(4, dtype=np.uint8)) == "binary"
    assert detect_convention(Path("a.nii.gz"), np.array([0, 31, 117], dtype=np.uint8)) == "totalsegmentator"
    assert detect_convention(Path("a.nii.gz"), np.array([0, 20, 28], dtype=np.uint16)) == "verse"


def _brute_force(labels: np.ndarray, label_affine: np.ndarray, shape: tuple[int, int, int],
                 affine: np.ndarray) -> np.ndarray:
    index_map = np.linalg.inv(label_affine) @ affine
    grid = np.indices(shape).reshape(3, -1)
    src = np.rint(index_map[:3, :3] @ grid + index_map[:3, 3:4]).astype(int)
    ok = np.all((src >= 0) & (src < np.array(labels.shape)[:, None]), axis=0)
    out = np.zeros(grid.shape[1], dtype=labels.dtype)
    out[ok] = labels[src[0, ok], src[1, ok], src[2, ok]]
    return out.reshape(shape)


@pytest.mark.parametrize("case", ["same", "flipped", "permuted", "shifted", "coarser"])
def test_labels_onto_grid_slices_match_the_voxel_by_voxel_lookup(case: str) -> None:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 30, size=(9, 11, 7)).astype(np.int16)
    label_affine = np.diag([0.8, 0.8, 2.0, 1.0])
    affine, shape = label_affine.copy(), labels.shape
    if case == "flipped":
        affine = label_affine @ np.array([[-1, 0, 0, 8], [0, 1, 0, 0], [0, 0, -1, 6], [0, 0, 0, 1]], dtype=float)
    elif case == "permuted":
        affine = label_affine @ np.array([[0, 1, 0, 0], [0, 0, -1, 6], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
        shape = (7, 11, 7)
    elif case == "shifted":
        affine = label_affine @ np.array([[1, 0, 0, -3], [0, 1, 0, 4], [0, 0, 1, 2], [0, 0, 0, 1]], dtype=float)
    elif case == "coarser":
        affine = label_affine @ np.diag([2.0, 1.0, 1.0, 1.0])
    got, inside = labels_onto_grid(labels, label_affine, shape, affine)
    np.testing.assert_array_equal(got, _brute_force(labels, label_affine, shape, affine))
    assert 0 < inside <= 1


def test_mask_surface_on_the_box_equals_the_whole_grid() -> None:
    pred, _truth = _blobs((40, 44, 30), 11)
    affine = np.array([[-0.7, 0, 0, 10], [0, 0.7, 0, -5], [0, 0, 2.5, 3], [0, 0, 0, 1]])
    vertices, faces = mask_surface(pred, affine)
    full, full_faces, _n, _v = marching_cubes(np.pad(pred.astype(np.float32), 1), level=0.5)
    full = (full - 1.0) @ affine[:3, :3].T + affine[:3, 3]
    np.testing.assert_array_equal(vertices, full)
    np.testing.assert_array_equal(faces, full_faces)  # this affine mirrors: the winding is kept
