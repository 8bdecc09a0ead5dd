"""Voxel overlap of two binary masks: confusion counts and the ratios built from them.

Masks are arrays of any shape (normally ``(I, J, K)``); a voxel is foreground when non-zero.
All ratios are plain floats in ``[0, 1]`` or ``nan`` when undefined.

Empty cases (the rules every function here follows):

===========================  =====  =====  =========  ======  ===========
case                          Dice   IoU   precision  recall  F1
===========================  =====  =====  =========  ======  ===========
both masks empty              1.0    1.0   1.0        1.0     1.0
prediction empty, truth not   0.0    0.0   nan        0.0     0.0
truth empty, prediction not   0.0    0.0   0.0        nan     0.0
===========================  =====  =====  =========  ======  ===========

Both empty is perfect agreement on "no spine here", so every overlap score is 1.0. When only
one mask is empty, Dice and IoU are 0 (nothing overlaps), and the ratio whose denominator
counts the empty mask's voxels (precision = TP / (TP + FP) for an empty prediction, recall =
TP / (TP + FN) for an empty truth) has no voxels to be computed over: it is ``nan``
("undefined"), not 0, so that averages over cases can skip it instead of being dragged down by
a number that was never measured. F1 stays defined (0.0) and equal to Dice. Specificity,
TN / (TN + FP), is ``nan`` only when the truth fills every voxel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spineseg.metrics._inputs import as_binary_pair


@dataclass(frozen=True)
class ConfusionCounts:
    """Voxel counts of a binary prediction against a binary truth.

    tp: foreground in both; fp: foreground in the prediction only; fn: foreground in the truth
    only; tn: background in both. ``tp + fp + fn + tn`` is the number of voxels.
    """

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def both_empty(self) -> bool:
        """True when neither mask has a foreground voxel."""
        return self.tp == 0 and self.fp == 0 and self.fn == 0


def confusion_counts(pred: np.ndarray, truth: np.ndarray) -> ConfusionCounts:
    """Count TP, FP, TN, FN over the voxels of two masks of the same shape.

    Raises ``InputError`` when the shapes differ (quoting both) or a mask holds NaN.
    """
    pred_b, truth_b = as_binary_pair(pred, truth)
    n_pred = int(np.count_nonzero(pred_b))
    n_truth = int(np.count_nonzero(truth_b))
    tp = int(np.count_nonzero(pred_b & truth_b))
    fp = n_pred - tp
    fn = n_truth - tp
    tn = int(pred_b.size) - tp - fp - fn
    return ConfusionCounts(tp=tp, fp=fp, tn=tn, fn=fn)


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def dice_from_counts(counts: ConfusionCounts) -> float:
    """Dice = 2 TP / (2 TP + FP + FN); 1.0 when both masks are empty."""
    if counts.both_empty:
        return 1.0
    return 2 * counts.tp / (2 * counts.tp + counts.fp + counts.fn)


def iou_from_counts(counts: ConfusionCounts) -> float:
    """IoU (Jaccard) = TP / (TP + FP + FN); 1.0 when both masks are empty."""
    if counts.both_empty:
        return 1.0
    return counts.tp / (counts.tp + counts.fp + counts.fn)


def precision_from_counts(counts: ConfusionCounts) -> float:
    """Precision = TP / (TP + FP); 1.0 when both are empty, nan when only the prediction is."""
    if counts.both_empty:
        return 1.0
    return _ratio(counts.tp, counts.tp + counts.fp)


def recall_from_counts(counts: ConfusionCounts) -> float:
    """Recall (sensitivity) = TP / (TP + FN); 1.0 when both are empty, nan when only the
    truth is."""
    if counts.both_empty:
        return 1.0
    return _ratio(counts.tp, counts.tp + counts.fn)


def specificity_from_counts(counts: ConfusionCounts) -> float:
    """Specificity = TN / (TN + FP); nan when the truth has no background voxel."""
    return _ratio(counts.tn, counts.tn + counts.fp)


def f1_from_counts(counts: ConfusionCounts) -> float:
    """F1 = harmonic mean of precision and recall, 2 P R / (P + R).

    For binary masks this equals Dice. When one of the two is undefined (one mask empty) the
    other is 0 and no voxel overlaps, so F1 is 0.0, again equal to Dice.
    """
    precision = precision_from_counts(counts)
    recall = recall_from_counts(counts)
    if math.isnan(precision) or math.isnan(recall) or precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient of two masks of the same shape (see module notes for empty masks)."""
    return dice_from_counts(confusion_counts(pred, truth))


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union (Jaccard index) of two masks of the same shape."""
    return iou_from_counts(confusion_counts(pred, truth))


def precision(pred: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of predicted voxels that are truly foreground."""
    return precision_from_counts(confusion_counts(pred, truth))


def recall(pred: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of true foreground voxels that were predicted (sensitivity)."""
    return recall_from_counts(confusion_counts(pred, truth))


def specificity(pred: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of true background voxels predicted as background."""
    return specificity_from_counts(confusion_counts(pred, truth))


def f1_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """F1 from precision and recall; equal to Dice for binary masks."""
    return f1_from_counts(confusion_counts(pred, truth))
