"""Volumes in mL and per-slice areas in mm², with anisotropic voxels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spineseg.errors import InputError
from spineseg.metrics import compare_volumes, mask_volume_ml, slice_areas_mm2

# 2.0 x 1.0 x 0.5 mm = 1 mm³ per voxel, so 1000 voxels = 1 mL
SPACING = (2.0, 1.0, 0.5)


def test_volume_of_a_block_in_ml() -> None:
    mask = np.zeros((12, 12, 12), dtype=np.uint8)
    mask[:10, :10, :10] = 1
    assert mask_volume_ml(mask, SPACING) == pytest.approx(1.0)
    # 3 mm isotropic: 27 mm³ per voxel, 10 voxels = 270 mm³ = 0.27 mL
    line = np.zeros((10, 1, 1), dtype=bool)
    line[:, 0, 0] = True
    assert mask_volume_ml(line, (3.0, 3.0, 3.0)) == pytest.approx(0.27)


def test_prediction_20_percent_too_large() -> None:
    truth = np.zeros((12, 12, 12), dtype=np.uint8)
    truth[:10, :10, :10] = 1  # 1000 voxels = 1.0 mL
    pred = np.zeros_like(truth)
    pred[:10, :10, :12] = 1  # 1200 voxels = 1.2 mL
    result = compare_volumes(pred, truth, SPACING)
    assert result.volume_pred_ml == pytest.approx(1.2)
    assert result.volume_truth_ml == pytest.approx(1.0)
    assert result.abs_volume_diff_ml == pytest.approx(0.2)
    assert result.rel_volume_diff == pytest.approx(0.2)
    # the other way round: 1.0 vs 1.2 mL -> -0.2 / 1.2 = -1/6, absolute difference unchanged
    swapped = compare_volumes(truth, pred, SPACING)
    assert swapped.rel_volume_diff == pytest.approx(-1 / 6)
    assert swapped.abs_volume_diff_ml == pytest.approx(0.2)


def test_empty_volume_cases() -> None:
    empty = np.zeros((4, 4, 4), dtype=np.uint8)
    one = empty.copy()
    one[0, 0, 0] = 1
    both = compare_volumes(empty, empty, SPACING)
    assert (both.abs_volume_diff_ml, both.rel_volume_diff) == (0.0, 0.0)
    missed = compare_volumes(empty, one, SPACING)
    assert missed.rel_volume_diff == -1.0  # (0 - 1) / 1
    assert missed.abs_volume_diff_ml == pytest.approx(0.001)
    spurious = compare_volumes(one, empty, SPACING)
    assert math.isnan(spurious.rel_volume_diff)
    assert spurious.volume_pred_ml == pytest.approx(0.001)


def test_slice_areas_along_each_axis() -> None:
    mask = np.zeros((3, 4, 2), dtype=np.uint8)
    mask[0, 0:3, 0] = 1  # slice k=0: 3 voxels
    mask[1, 0:4, 1] = 1  # slice k=1: 4 voxels ...
    mask[2, 0, 1] = 1  # ... + 1 = 5
    # axis 2: in-plane voxel = 2.0 * 1.0 = 2 mm²  -> [3 * 2, 5 * 2]
    np.testing.assert_allclose(slice_areas_mm2(mask, SPACING, axis=2), [6.0, 10.0])
    # axis 0: in-plane voxel = 1.0 * 0.5 = 0.5 mm²; slices i=0,1,2 hold 3, 4, 1 voxels
    np.testing.assert_allclose(slice_areas_mm2(mask, SPACING, axis=0), [1.5, 2.0, 0.5])
    # negative axis counts from the end
    np.testing.assert_allclose(slice_areas_mm2(mask, SPACING, axis=-1), [6.0, 10.0])


def test_bad_spacing_and_axis_are_refused() -> None:
    mask = np.ones((2, 2, 2))
    with pytest.raises(InputError, match="spacing"):
        mask_volume_ml(mask, (1.0, 1.0))
    with pytest.raises(InputError, match="spacing"):
        mask_volume_ml(mask, (1.0, 0.0, 1.0))
    with pytest.raises(InputError, match="spacing"):
        mask_volume_ml(mask, (1.0, float("nan"), 1.0))
    with pytest.raises(InputError, match="spacing"):
        mask_volume_ml(mask, "abc")
    with pytest.raises(InputError, match="axis"):
        slice_areas_mm2(mask, (1.0, 1.0, 1.0), axis=3)
    with pytest.raises(InputError, match=r"\(2, 2, 2\).*\(2, 2, 3\)"):
        compare_volumes(mask, np.ones((2, 2, 3)), (1.0, 1.0, 1.0))
