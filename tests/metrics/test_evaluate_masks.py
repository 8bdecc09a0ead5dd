"""evaluate_masks: the full dict on a hand-counted pair, empty cases, and the mean row."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spineseg.metrics import METRIC_KEYS, CaseMetrics, evaluate_masks, mean_metrics

SPACING = (2.0, 1.0, 0.5)  # 1 mm³ per voxel

EXPECTED_KEYS = {
    "dice", "iou", "precision", "recall", "specificity", "f1", "hd95_mm", "assd_mm",
    "surface_dice_1mm", "surface_dice_2mm", "signed_surface_distance_mm", "interior_recall",
    "tp", "fp", "tn", "fn", "volume_pred_ml", "volume_truth_ml", "abs_volume_diff_ml",
    "rel_volume_diff",
}  # fmt: skip


def _shifted_cubes() -> tuple[np.ndarray, np.ndarray]:
    # truth: 2x2x2 cube at i = 2..3 in a 6x4x4 grid (96 voxels); prediction: the same cube at
    # i = 3..4. Overlap: the layer i = 3 (4 voxels).
    truth = np.zeros((6, 4, 4), dtype=np.uint8)
    truth[2:4, 1:3, 1:3] = 1
    pred = np.zeros_like(truth)
    pred[3:5, 1:3, 1:3] = 1
    return pred, truth


def test_keys_are_exactly_the_documented_ones() -> None:
    pred, truth = _shifted_cubes()
    result = evaluate_masks(pred, truth, SPACING)
    assert set(result) == EXPECTED_KEYS
    assert set(METRIC_KEYS) == EXPECTED_KEYS


def test_values_by_hand() -> None:
    pred, truth = _shifted_cubes()
    r = evaluate_masks(pred, truth, SPACING)
    # TP 4, FP 4, FN 4, TN 96 - 12 = 84
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (4, 4, 4, 84)
    assert isinstance(r["tp"], int)
    assert r["dice"] == pytest.approx(0.5)  # 8 / 16
    assert r["f1"] == pytest.approx(0.5)
    assert r["iou"] == pytest.approx(1 / 3)  # 4 / 12
    assert r["precision"] == pytest.approx(0.5)
    assert r["recall"] == pytest.approx(0.5)
    assert r["specificity"] == pytest.approx(84 / 88)
    # Every voxel of a 2x2x2 cube is on its surface. Shifted by one voxel (2.0 mm) along
    # axis 0: the shared layer i = 3 is 0 mm from the other surface, the other layer 2.0 mm.
    # Each direction: [0, 0, 0, 0, 2, 2, 2, 2] -> ASSD 1.0 mm; 95th percentile -> 2.0 mm.
    assert r["assd_mm"] == pytest.approx(1.0)
    assert r["hd95_mm"] == pytest.approx(2.0)
    # 8 voxels of 1 mm³ each = 0.008 mL on both sides
    assert r["volume_pred_ml"] == pytest.approx(0.008)
    assert r["volume_truth_ml"] == pytest.approx(0.008)
    assert r["abs_volume_diff_ml"] == 0.0
    assert r["rel_volume_diff"] == 0.0


def test_both_empty() -> None:
    empty = np.zeros((4, 4, 4), dtype=np.uint8)
    r = evaluate_masks(empty, empty, SPACING)
    assert [r[k] for k in ("dice", "iou", "precision", "recall", "f1", "specificity")] == [1.0] * 6
    assert (r["hd95_mm"], r["assd_mm"]) == (0.0, 0.0)
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (0, 0, 0, 64)
    assert (r["abs_volume_diff_ml"], r["rel_volume_diff"]) == (0.0, 0.0)


def test_missed_spine() -> None:
    _, truth = _shifted_cubes()
    r = evaluate_masks(np.zeros_like(truth), truth, SPACING)
    assert (r["dice"], r["iou"], r["recall"], r["f1"]) == (0.0, 0.0, 0.0, 0.0)
    assert math.isnan(r["precision"])
    assert r["hd95_mm"] == math.inf and r["assd_mm"] == math.inf
    assert r["rel_volume_diff"] == -1.0


def test_spine_predicted_where_there_is_none() -> None:
    pred, _ = _shifted_cubes()
    r = evaluate_masks(pred, np.zeros_like(pred), SPACING)
    assert (r["dice"], r["precision"], r["f1"]) == (0.0, 0.0, 0.0)
    assert math.isnan(r["recall"])
    assert math.isnan(r["rel_volume_diff"])
    assert r["hd95_mm"] == math.inf


def test_mean_skips_undefined_values_but_keeps_infinite_ones() -> None:
    cases = [
        {**dict.fromkeys(METRIC_KEYS, 1.0), "dice": 1.0, "precision": math.nan, "hd95_mm": 2.0},
        {**dict.fromkeys(METRIC_KEYS, 3.0), "dice": 0.5, "precision": 0.5, "hd95_mm": 4.0},
    ]
    mean = mean_metrics(cases)
    assert mean["dice"] == pytest.approx(0.75)
    assert mean["precision"] == pytest.approx(0.5)  # the nan case is left out
    assert mean["hd95_mm"] == pytest.approx(3.0)
    assert mean["tp"] == pytest.approx(2.0)
    missed = mean_metrics([*cases, {**cases[1], "hd95_mm": math.inf, "precision": math.nan}])
    assert missed["hd95_mm"] == math.inf
    assert math.isnan(mean_metrics([cases[0]])["precision"])
    assert all(math.isnan(v) for v in mean_metrics([]).values())


def test_accumulator_keeps_rows_in_order_and_averages_them() -> None:
    pred, truth = _shifted_cubes()
    acc = CaseMetrics()
    first = acc.add("shifted", pred, truth, SPACING)
    acc.add("perfect", truth, truth, SPACING)
    assert len(acc) == 2
    assert [name for name, _ in acc.rows] == ["shifted", "perfect"]
    assert acc.rows[0][1] == first
    assert acc.mean()["dice"] == pytest.approx(0.75)  # (0.5 + 1.0) / 2
    assert acc.mean()["assd_mm"] == pytest.approx(0.5)  # (1.0 + 0.0) / 2
