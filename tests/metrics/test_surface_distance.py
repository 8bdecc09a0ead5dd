"""HD95 and ASSD in mm: hand-computed cubes with anisotropic voxels, a brute-force check,
and every empty case."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from spineseg.errors import InputError
from spineseg.metrics import assd, hd95, surface_distances

SPACING = (2.0, 0.7, 0.5)  # mm along axes 0, 1, 2: deliberately different


def _cube_pair(shift_axis: int, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """A 2x2x2 cube (every voxel is a surface voxel) and the same cube moved by ``shift``
    voxels along ``shift_axis``."""
    truth = np.zeros((12, 12, 12), dtype=bool)
    truth[2:4, 2:4, 2:4] = True
    pred = np.roll(truth, shift, axis=shift_axis)
    return pred, truth


def test_cubes_three_voxels_apart_along_axis_0() -> None:
    # Truth occupies i = 2, 3; prediction i = 5, 6 (same j, k). From the prediction's layer
    # i = 5 the nearest truth voxel is i = 3: 2 voxels * 2.0 mm = 4.0 mm (4 voxels); from
    # layer i = 6 it is 3 voxels = 6.0 mm (4 voxels). The truth side mirrors this.
    # Directed distances: [4, 4, 4, 4, 6, 6, 6, 6] mm each way.
    # ASSD = (8 * 4 + 8 * 6) / 16 = 5.0 mm.
    # 95th percentile of 8 sorted values sits at position 0.95 * 7 = 6.65, between two 6.0s.
    pred, truth = _cube_pair(shift_axis=0, shift=3)
    distances = surface_distances(pred, truth, SPACING)
    np.testing.assert_allclose(np.sort(distances.pred_to_truth), [4, 4, 4, 4, 6, 6, 6, 6])
    np.testing.assert_allclose(np.sort(distances.truth_to_pred), [4, 4, 4, 4, 6, 6, 6, 6])
    assert assd(pred, truth, SPACING) == pytest.approx(5.0)
    assert hd95(pred, truth, SPACING) == pytest.approx(6.0)


def test_same_shift_along_the_fine_axis_gives_mm_of_that_axis() -> None:
    # Same geometry along axis 2 (0.5 mm): distances 2 * 0.5 = 1.0 and 3 * 0.5 = 1.5 mm.
    pred, truth = _cube_pair(shift_axis=2, shift=3)
    assert assd(pred, truth, SPACING) == pytest.approx(1.25)
    assert hd95(pred, truth, SPACING) == pytest.approx(1.5)


def test_single_voxels_offset_diagonally() -> None:
    # 3 voxels along axis 0 (2.0 mm) and 4 along axis 2 (0.5 mm): sqrt(6² + 2²) = sqrt(40) mm
    pred = np.zeros((8, 3, 8), dtype=np.uint8)
    truth = np.zeros_like(pred)
    truth[1, 1, 1] = 1
    pred[4, 1, 5] = 1
    assert hd95(pred, truth, SPACING) == pytest.approx(math.sqrt(40.0))
    assert assd(pred, truth, SPACING) == pytest.approx(math.sqrt(40.0))


def test_hd95_ignores_one_outlier_voxel_but_assd_sees_it() -> None:
    # Truth: a 3x3x3 cube -> 26 surface voxels (all but the centre). Prediction: the same cube
    # plus one stray voxel 6 slices above its top face along axis 2: 6 * 0.5 = 3.0 mm away.
    # pred->truth: 26 zeros and one 3.0 (27 values); truth->pred: 26 zeros.
    # 95th percentile of 27 sorted values: position 0.95 * 26 = 24.7, between two zeros -> 0.
    # ASSD = 3.0 / (27 + 26) = 3/53 mm.
    truth = np.zeros((10, 10, 16), dtype=bool)
    truth[2:5, 2:5, 2:5] = True
    pred = truth.copy()
    pred[2, 2, 10] = True
    distances = surface_distances(pred, truth, SPACING)
    assert distances.pred_to_truth.size == 27
    assert distances.truth_to_pred.size == 26
    assert distances.pred_to_truth.max() == pytest.approx(3.0)
    assert hd95(pred, truth, SPACING) == 0.0
    assert assd(pred, truth, SPACING) == pytest.approx(3.0 / 53.0)


def test_identical_masks_are_zero_apart() -> None:
    mask = np.zeros((9, 9, 9), dtype=bool)
    mask[1:7, 2:8, 3:5] = True
    assert hd95(mask, mask, SPACING) == 0.0
    assert assd(mask, mask, SPACING) == 0.0


def _boundary_by_neighbours(mask: np.ndarray) -> np.ndarray:
    """Independent boundary definition: foreground with a background (or off-grid) face
    neighbour, found by shifting a zero-padded copy six ways."""
    padded = np.pad(mask, 1, constant_values=False)
    all_neighbours_in = np.ones_like(mask)
    for axis in range(3):
        for step in (-1, 1):
            shifted = np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
            all_neighbours_in &= shifted
    return mask & ~all_neighbours_in


def _brute_force(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...]) -> tuple[float, float]:
    scale = np.asarray(spacing)
    p = np.argwhere(_boundary_by_neighbours(pred)) * scale
    t = np.argwhere(_boundary_by_neighbours(truth)) * scale
    pairwise = cdist(p, t)
    d_pt, d_tp = pairwise.min(axis=1), pairwise.min(axis=0)
    hd = max(np.percentile(d_pt, 95), np.percentile(d_tp, 95))
    mean = (d_pt.sum() + d_tp.sum()) / (d_pt.size + d_tp.size)
    return float(hd), float(mean)


def test_random_blobs_match_brute_force_pairwise_distances() -> None:
    rng = np.random.default_rng(7)
    for _ in range(3):
        pred = rng.random((14, 12, 10)) > 0.7
        truth = rng.random((14, 12, 10)) > 0.6
        # blobs that touch the grid's edges too, where the crop margin is clipped
        expected_hd, expected_assd = _brute_force(pred, truth, SPACING)
        assert hd95(pred, truth, SPACING) == pytest.approx(expected_hd)
        assert assd(pred, truth, SPACING) == pytest.approx(expected_assd)


def test_kd_tree_path_gives_the_same_distances_as_the_distance_transform() -> None:
    # edt_voxel_budget=0 forces the k-d tree used for huge crops; both must be exact.
    rng = np.random.default_rng(11)
    pred = rng.random((13, 11, 9)) > 0.65
    truth = rng.random((13, 11, 9)) > 0.55
    via_edt = surface_distances(pred, truth, SPACING)
    via_tree = surface_distances(pred, truth, SPACING, edt_voxel_budget=0)
    np.testing.assert_allclose(via_tree.pred_to_truth, via_edt.pred_to_truth)
    np.testing.assert_allclose(via_tree.truth_to_pred, via_edt.truth_to_pred)
    expected_hd, expected_assd = _brute_force(pred, truth, SPACING)
    assert via_tree.hd95_mm == pytest.approx(expected_hd)
    assert via_tree.assd_mm == pytest.approx(expected_assd)
    # and the hand-computed cubes through the tree
    cube_pred, cube_truth = _cube_pair(shift_axis=0, shift=3)
    cubes = surface_distances(cube_pred, cube_truth, SPACING, edt_voxel_budget=0)
    assert (cubes.assd_mm, cubes.hd95_mm) == (pytest.approx(5.0), pytest.approx(6.0))


def test_crop_does_not_change_the_result() -> None:
    rng = np.random.default_rng(3)
    small_pred = rng.random((10, 9, 8)) > 0.5
    small_truth = rng.random((10, 9, 8)) > 0.5
    big_pred = np.zeros((60, 50, 40), dtype=bool)
    big_truth = np.zeros_like(big_pred)
    big_pred[20:30, 5:14, 30:38] = small_pred
    big_truth[20:30, 5:14, 30:38] = small_truth
    big = surface_distances(big_pred, big_truth, SPACING)
    # Inside the big grid the blobs are not cut by the array edge, so the reference is the
    # small pair with a one-voxel zero border (the uncropped answer for that geometry).
    padded = surface_distances(np.pad(small_pred, 1), np.pad(small_truth, 1), SPACING)
    np.testing.assert_allclose(np.sort(big.pred_to_truth), np.sort(padded.pred_to_truth))
    np.testing.assert_allclose(np.sort(big.truth_to_pred), np.sort(padded.truth_to_pred))
    assert big.pred_to_truth.size == int(np.count_nonzero(padded.pred_to_truth >= 0))


def test_empty_cases() -> None:
    empty = np.zeros((6, 6, 6), dtype=bool)
    blob = empty.copy()
    blob[2:4, 2:4, 2:4] = True
    assert hd95(empty, empty, SPACING) == 0.0
    assert assd(empty, empty, SPACING) == 0.0
    assert hd95(empty, blob, SPACING) == math.inf
    assert assd(empty, blob, SPACING) == math.inf
    assert hd95(blob, empty, SPACING) == math.inf
    assert assd(blob, empty, SPACING) == math.inf


def test_bad_inputs() -> None:
    with pytest.raises(InputError, match=r"\(4, 4, 4\).*\(4, 4, 5\)"):
        hd95(np.ones((4, 4, 4)), np.ones((4, 4, 5)), SPACING)
    with pytest.raises(InputError, match="spacing"):
        assd(np.ones((4, 4, 4)), np.ones((4, 4, 4)), (1.0, -1.0, 1.0))


def test_large_ct_grid_with_a_spine_sized_object_is_quick() -> None:
    # A 512x512x120 grid (CT size, fewer slices to keep memory small in the test) holding a
    # column 40x40 voxels wide through every slice; prediction shifted by 2 voxels in-plane.
    # The interesting check is correctness on a crop far from the origin; speed is measured
    # in the report, not asserted here (the CPU is shared).
    truth = np.zeros((512, 512, 120), dtype=bool)
    truth[300:340, 200:240, :] = True
    pred = np.zeros_like(truth)
    pred[302:342, 200:240, :] = True
    spacing = (0.8, 0.8, 2.0)
    # Along axis 0 the side faces coincide (distance 0); the two end faces i = 300 (truth) and
    # i = 302 (pred) are 2 voxels (1.6 mm) from the nearest surface of the other mask; the
    # faces i = 339 (truth, inside pred) and i = 341 are likewise 1.6 mm from their nearest.
    result = surface_distances(pred, truth, spacing)
    assert result.pred_to_truth.max() == pytest.approx(1.6)
    assert result.truth_to_pred.max() == pytest.approx(1.6)
