"""Surface Dice, signed surface distance and interior recall, on shapes worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spineseg.metrics import evaluate_masks
from spineseg.metrics.interior import interior_recall, interior_voxels
from spineseg.metrics.surface import surface_distances


def _box(shape: tuple[int, int, int], lo: int, hi: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[lo:hi, lo:hi, lo:hi] = True
    return mask


def test_a_mask_one_voxel_inside_is_negative_and_one_outside_positive() -> None:
    truth = _box((30, 30, 30), 5, 25)
    inner = _box((30, 30, 30), 6, 24)
    outer = _box((30, 30, 30), 4, 26)
    # Faces of the cubes are one voxel (1.5 mm) apart; edges and corners of the inner cube's
    # surface are farther from the truth's surface only along the diagonal, never nearer.
    inside = evaluate_masks(inner, truth, (1.5, 1.5, 1.5))["signed_surface_distance_mm"]
    outside = evaluate_masks(outer, truth, (1.5, 1.5, 1.5))["signed_surface_distance_mm"]
    assert inside == pytest.approx(-1.5, abs=0.05)
    assert outside == pytest.approx(1.5, abs=0.05)
    assert evaluate_masks(truth, truth, (1.5, 1.5, 1.5))["signed_surface_distance_mm"] == 0.0


def test_too_large_on_one_side_and_too_small_on_the_other_cancels_out() -> None:
    # Shifted by one voxel along axis 0: half the error is inside, half outside, so the signed
    # mean is 0 while ASSD is not: read the two together.
    truth = _box((20, 20, 20), 5, 15)
    shifted = np.roll(truth, 1, axis=0)
    r = evaluate_masks(shifted, truth, (1.0, 1.0, 1.0))
    assert r["signed_surface_distance_mm"] == pytest.approx(0.0, abs=1e-9)
    assert r["assd_mm"] > 0.1


def test_surface_dice_counts_surface_voxels_within_the_tolerance() -> None:
    truth = _box((30, 30, 30), 5, 25)
    inner = _box((30, 30, 30), 7, 23)  # two voxels inside all round
    # At 1 mm voxels every surface voxel of each is 2 mm (faces) or more (edges) from the other
    # surface: none within 1 mm, all faces within 2 mm.
    r = evaluate_masks(inner, truth, (1.0, 1.0, 1.0))
    assert r["surface_dice_1mm"] == 0.0
    # Face voxels are exactly 2 mm away: counted at 2 mm (the tolerance includes its bound).
    assert 0.8 < r["surface_dice_2mm"] < 1.0
    # At 0.5 mm voxels the same voxels are 1 mm apart: all faces within 1 mm.
    assert evaluate_masks(inner, truth, (0.5, 0.5, 0.5))["surface_dice_1mm"] > 0.8
    assert evaluate_masks(truth, truth, (1.0, 1.0, 1.0))["surface_dice_1mm"] == 1.0


def test_surface_dice_by_hand_on_two_slabs() -> None:
    # A 1-voxel-thick plate (every voxel is surface) against the same plate one voxel over.
    truth = np.zeros((5, 6, 6), dtype=bool)
    truth[2, 1:5, 1:5] = True
    pred = np.zeros_like(truth)
    pred[3, 1:5, 1:5] = True
    d = surface_distances(pred, truth, (1.2, 1.0, 1.0))
    assert d.surface_dice(1.0) == 0.0  # 1.2 mm apart
    assert d.surface_dice(1.2) == 1.0
    assert d.signed_mean_mm == pytest.approx(0.0)  # the plates do not overlap: +1.2 and -1.2


def test_empty_cases() -> None:
    truth = _box((10, 10, 10), 2, 8)
    empty = np.zeros_like(truth)
    missed = evaluate_masks(empty, truth, (1.0, 1.0, 1.0))
    assert missed["surface_dice_1mm"] == 0.0
    assert missed["signed_surface_distance_mm"] == -math.inf
    assert missed["interior_recall"] == 0.0
    invented = evaluate_masks(truth, empty, (1.0, 1.0, 1.0))
    assert invented["signed_surface_distance_mm"] == math.inf
    assert math.isnan(invented["interior_recall"])  # no truth, no interior
    both = evaluate_masks(empty, empty, (1.0, 1.0, 1.0))
    assert (both["surface_dice_1mm"], both["signed_surface_distance_mm"]) == (1.0, 0.0)


def test_a_hollow_body_loses_interior_recall_not_much_dice() -> None:
    # A 20 mm cube of 1 mm voxels (indices 5..24), predicted as its 4 mm thick shell (9..20 left
    # out). Depth is the distance to the nearest background voxel centre, so the face voxel
    # (index 5) is 1 mm deep and the interior (>= 3 mm) is indices 7..22, a 16^3 cube.
    truth = _box((30, 30, 30), 5, 25)
    shell = truth.copy()
    shell[9:21, 9:21, 9:21] = False
    inside = interior_voxels(truth, (1.0, 1.0, 1.0))
    assert int(inside.sum()) == 16 ** 3
    r = evaluate_masks(shell, truth, (1.0, 1.0, 1.0))
    assert r["interior_recall"] == pytest.approx(1 - 12 ** 3 / 16 ** 3)  # 0.58
    assert r["dice"] == pytest.approx(2 * (20 ** 3 - 12 ** 3) / (2 * 20 ** 3 - 12 ** 3))  # 0.88 hides it


def test_the_scans_ends_are_not_a_surface() -> None:
    # A body cut by the first and last slice of a three-slice series: its middle is interior.
    truth = np.zeros((20, 20, 3), dtype=bool)
    truth[4:16, 4:16, :] = True
    inside = interior_voxels(truth, (1.0, 1.0, 1.0))
    assert inside[:, :, 0].sum() == inside[:, :, 1].sum() == 8 * 8  # indices 6..13 in-plane
    # A thin truth has no interior: undefined, not a perfect score.
    thin = np.zeros((10, 10, 10), dtype=bool)
    thin[4:6, 2:8, 2:8] = True
    assert math.isnan(interior_recall(thin, thin, (1.0, 1.0, 1.0)))


def test_roi_cuts_both_masks_and_counts_negatives_inside_it() -> None:
    truth = _box((10, 10, 10), 2, 8)
    pred = truth.copy()
    pred[0, 0, 0] = True  # a false positive outside the ROI
    roi = np.zeros_like(truth)
    roi[1:9, 1:9, 1:9] = True
    r = evaluate_masks(pred, truth, (1.0, 1.0, 1.0), roi)
    assert (r["fp"], r["dice"]) == (0, 1.0)
    assert r["tn"] == 8 ** 3 - 6 ** 3
