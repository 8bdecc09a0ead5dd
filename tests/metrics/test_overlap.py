"""Confusion counts and overlap ratios on arrays small enough to count by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spineseg.errors import InputError
from spineseg.metrics import (
    confusion_counts,
    dice,
    f1_score,
    iou,
    precision,
    recall,
    specificity,
)

# Voxel by voxel (row, column):
#   (0,0) pred 1 truth 1 -> TP    (0,1) pred 1 truth 0 -> FP    (0,2) pred 1 truth 0 -> FP
#   (1,0) pred 0 truth 1 -> FN    (1,1) pred 1 truth 1 -> TP    (1,2) pred 0 truth 0 -> TN
# TP = 2, FP = 2, FN = 1, TN = 1
PRED_2D = np.array([[1, 1, 1], [0, 1, 0]], dtype=np.uint8)
TRUTH_2D = np.array([[1, 0, 0], [1, 1, 0]], dtype=np.uint8)


def test_counts_by_hand() -> None:
    counts = confusion_counts(PRED_2D, TRUTH_2D)
    assert (counts.tp, counts.fp, counts.fn, counts.tn) == (2, 2, 1, 1)
    assert counts.total == 6


def test_ratios_by_hand() -> None:
    # Dice = 2*2 / (2*2 + 2 + 1) = 4/7; IoU = 2 / (2 + 2 + 1) = 2/5
    assert dice(PRED_2D, TRUTH_2D) == pytest.approx(4 / 7)
    assert iou(PRED_2D, TRUTH_2D) == pytest.approx(2 / 5)
    # precision = 2 / (2 + 2) = 1/2; recall = 2 / (2 + 1) = 2/3; specificity = 1 / (1 + 2) = 1/3
    assert precision(PRED_2D, TRUTH_2D) == pytest.approx(1 / 2)
    assert recall(PRED_2D, TRUTH_2D) == pytest.approx(2 / 3)
    assert specificity(PRED_2D, TRUTH_2D) == pytest.approx(1 / 3)
    # F1 = 2 * (1/2) * (2/3) / (1/2 + 2/3) = (2/3) / (7/6) = 4/7 = Dice
    assert f1_score(PRED_2D, TRUTH_2D) == pytest.approx(4 / 7)


def test_swapping_prediction_and_truth_swaps_precision_and_recall() -> None:
    assert precision(TRUTH_2D, PRED_2D) == pytest.approx(2 / 3)
    assert recall(TRUTH_2D, PRED_2D) == pytest.approx(1 / 2)
    counts = confusion_counts(TRUTH_2D, PRED_2D)
    assert (counts.fp, counts.fn) == (1, 2)


def test_3d_counts_by_hand() -> None:
    # truth: a 2x2x2 cube (8 voxels) in a 4x4x4 grid (64 voxels); prediction: the same cube
    # shifted by one voxel along axis 0. Overlap = 1x2x2 = 4 voxels.
    truth = np.zeros((4, 4, 4), dtype=bool)
    truth[1:3, 1:3, 1:3] = True
    pred = np.zeros_like(truth)
    pred[2:4, 1:3, 1:3] = True
    counts = confusion_counts(pred, truth)
    # TP 4, FP 8-4 = 4, FN 8-4 = 4, TN 64 - 12 = 52
    assert (counts.tp, counts.fp, counts.fn, counts.tn) == (4, 4, 4, 52)
    assert dice(pred, truth) == pytest.approx(8 / 16)
    assert iou(pred, truth) == pytest.approx(4 / 12)
    assert specificity(pred, truth) == pytest.approx(52 / 56)


def test_nonzero_values_of_any_dtype_are_foreground() -> None:
    labels = np.array([[0, 27, 3], [0, 0, 0]], dtype=np.int16)
    floats = np.array([[0.0, 0.5, 2.0], [0.0, 0.0, 0.0]])
    assert dice(labels, floats) == 1.0


def test_both_empty_is_perfect_agreement() -> None:
    empty = np.zeros((3, 3, 3), dtype=np.uint8)
    assert dice(empty, empty) == 1.0
    assert iou(empty, empty) == 1.0
    assert precision(empty, empty) == 1.0
    assert recall(empty, empty) == 1.0
    assert f1_score(empty, empty) == 1.0
    assert specificity(empty, empty) == 1.0  # 27 TN / (27 TN + 0 FP)


def test_empty_prediction_leaves_precision_undefined() -> None:
    truth = np.zeros((3, 3), dtype=np.uint8)
    truth[1, 1] = 1
    pred = np.zeros_like(truth)
    assert dice(pred, truth) == 0.0
    assert iou(pred, truth) == 0.0
    assert recall(pred, truth) == 0.0
    assert math.isnan(precision(pred, truth))
    assert f1_score(pred, truth) == 0.0
    assert specificity(pred, truth) == 1.0  # 8 TN / (8 TN + 0 FP)


def test_empty_truth_leaves_recall_undefined() -> None:
    pred = np.zeros((3, 3), dtype=np.uint8)
    pred[0, 0] = 1
    truth = np.zeros_like(pred)
    assert dice(pred, truth) == 0.0
    assert iou(pred, truth) == 0.0
    assert precision(pred, truth) == 0.0
    assert math.isnan(recall(pred, truth))
    assert f1_score(pred, truth) == 0.0
    assert specificity(pred, truth) == pytest.approx(8 / 9)


def test_specificity_undefined_when_truth_fills_the_grid() -> None:
    full = np.ones((2, 2), dtype=np.uint8)
    assert math.isnan(specificity(full, full))
    assert dice(full, full) == 1.0


def test_shape_mismatch_quotes_both_shapes() -> None:
    with pytest.raises(InputError) as caught:
        confusion_counts(np.zeros((4, 5, 6)), np.zeros((4, 5, 7)))
    assert "(4, 5, 6)" in str(caught.value)
    assert "(4, 5, 7)" in str(caught.value)


def test_nan_voxels_are_refused() -> None:
    pred = np.zeros((2, 2))
    pred[0, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        dice(pred, np.zeros((2, 2)))


def test_non_numeric_mask_is_refused() -> None:
    with pytest.raises(InputError, match="dtype"):
        dice(np.array([["a", "b"]]), np.zeros((1, 2)))
