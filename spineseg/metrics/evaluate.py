"""All metrics of one prediction against one truth, and their mean over several cases.

``evaluate_masks`` is the pure function; ``CaseMetrics`` accumulates per-case results and
gives the mean row a report or a model card needs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
from scipy import ndimage

from spineseg.metrics._inputs import as_binary_pair, as_spacing
from spineseg.metrics.interior import interior_recall
from spineseg.metrics.overlap import (
    confusion_counts,
    dice_from_counts,
    f1_from_counts,
    iou_from_counts,
    precision_from_counts,
    recall_from_counts,
    specificity_from_counts,
)
from spineseg.metrics.surface import surface_distances
from spineseg.metrics.volume import compare_volumes

METRIC_KEYS: tuple[str, ...] = (
    "dice",
    "iou",
    "precision",
    "recall",
    "specificity",
    "f1",
    "hd95_mm",
    "assd_mm",
    "surface_dice_1mm",
    "surface_dice_2mm",
    "signed_surface_distance_mm",
    "interior_recall",
    "tp",
    "fp",
    "tn",
    "fn",
    "volume_pred_ml",
    "volume_truth_ml",
    "abs_volume_diff_ml",
    "rel_volume_diff",
)
"""The keys of ``evaluate_masks``'s result, in the order reports show them."""


def evaluate_masks(
    pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float], roi: np.ndarray | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str, float | int]:
    """Every overlap, surface and volume metric of ``pred`` against ``truth``.

    pred, truth: masks of the same shape ``(I, J, K)``, non-zero = spine.
    spacing: voxel size in mm along each axis.
    roi: optional mask of the same shape: only voxels inside it are scored (both masks are cut
        to it), for truths that are complete only in part of the grid (P7's column box).

    Returns a dict with exactly the keys of ``METRIC_KEYS``: dice, iou, precision, recall,
    specificity, f1 (floats, nan when undefined; see ``metrics.overlap``), hd95_mm and
    assd_mm (mm; 0.0 when both masks are empty, inf when one is), tp, fp, tn, fn (ints,
    voxel counts), volume_pred_ml, volume_truth_ml, abs_volume_diff_ml (mL) and
    rel_volume_diff (signed fraction of the true volume; see ``metrics.volume``),
    surface_dice_1mm / _2mm (normalised surface Dice at 1 and 2 mm), signed_surface_distance_mm
    (negative when the prediction sits inside the truth; see ``metrics.surface``) and
    interior_recall (``metrics.interior``).

    timings: when given, receives the seconds of each part (``overlap``, ``surface``,
    ``interior``, ``volumes``).

    Every part is computed on the masks' joint bounding box plus one voxel (found in one pass
    per mask): outside it both masks are empty, so only true negatives lie there and are added
    to the count; surfaces, depths and volumes are those of the whole grid (see
    ``metrics.surface`` and ``metrics.interior`` on why such a crop changes no distance).
    """
    clock = _Clock(timings)
    with clock("overlap"):
        pred_b, truth_b = as_binary_pair(pred, truth)
        sizes = as_spacing(spacing, pred_b.ndim)
        counts = None
        if roi is not None:
            inside, _ = as_binary_pair(roi, truth_b)
            pred_b, truth_b = pred_b & inside, truth_b & inside
            counts = confusion_counts(pred_b, truth_b)
            # Outside the ROI nothing is scored: true negatives are counted inside it only.
            counts = replace(counts, tn=int(np.count_nonzero(inside)) - counts.tp - counts.fp - counts.fn)
        box = joint_box(pred_b, truth_b)
        if box is not None:
            outside = pred_b.size - int(np.prod([s.stop - s.start for s in box]))
            pred_b, truth_b = pred_b[box], truth_b[box]
            if counts is None:
                counts = confusion_counts(pred_b, truth_b)
                counts = replace(counts, tn=counts.tn + outside)
        counts = counts or confusion_counts(pred_b, truth_b)
    with clock("surface"):
        distances = surface_distances(pred_b, truth_b, sizes)
    with clock("interior"):
        interior = interior_recall(pred_b, truth_b, sizes)
    with clock("volumes"):
        volumes = compare_volumes(pred_b, truth_b, sizes)
    return {
        "dice": dice_from_counts(counts),
        "iou": iou_from_counts(counts),
        "precision": precision_from_counts(counts),
        "recall": recall_from_counts(counts),
        "specificity": specificity_from_counts(counts),
        "f1": f1_from_counts(counts),
        "hd95_mm": distances.hd95_mm,
        "assd_mm": distances.assd_mm,
        "surface_dice_1mm": distances.surface_dice(1.0),
        "surface_dice_2mm": distances.surface_dice(2.0),
        "signed_surface_distance_mm": distances.signed_mean_mm,
        "interior_recall": interior,
        "tp": counts.tp,
        "fp": counts.fp,
        "tn": counts.tn,
        "fn": counts.fn,
        "volume_pred_ml": volumes.volume_pred_ml,
        "volume_truth_ml": volumes.volume_truth_ml,
        "abs_volume_diff_ml": volumes.abs_volume_diff_ml,
        "rel_volume_diff": volumes.rel_volume_diff,
    }


def joint_box(pred: np.ndarray, truth: np.ndarray) -> tuple[slice, ...] | None:
    """The joint bounding box of two boolean masks plus one voxel each way (clipped to the
    grid); ``None`` when both are empty. One C pass per mask (``ndimage.find_objects``)."""
    boxes = [b[0] for b in (ndimage.find_objects(m.view(np.uint8)) for m in (pred, truth)) if b and b[0]]
    if not boxes:
        return None
    return tuple(slice(max(min(b[a].start for b in boxes) - 1, 0), min(max(b[a].stop for b in boxes) + 1, size))
                 for a, size in enumerate(pred.shape))


class _Clock:
    """``with clock(name):`` adds the block's seconds to ``timings[name]`` (nothing when ``None``)."""

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            if self.timings is not None:
                self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - started


def mean_metrics(cases: Sequence[Mapping[str, float | int]]) -> dict[str, float]:
    """Mean of each key of ``METRIC_KEYS`` over several ``evaluate_masks`` results.

    A nan (a metric undefined for that case, e.g. precision of an empty prediction) is left
    out of its key's mean; the mean is nan only when the metric is undefined in every case.
    An inf (a surface distance to a structure that was missed entirely) is kept, so the mean
    is inf: one missed case must not be averaged away. Counts are averaged too (floats).
    """
    if not cases:
        return {key: math.nan for key in METRIC_KEYS}
    means: dict[str, float] = {}
    for key in METRIC_KEYS:
        values = np.array([float(case[key]) for case in cases], dtype=np.float64)
        defined = values[~np.isnan(values)]
        means[key] = float(defined.mean()) if defined.size else math.nan
    return means


class CaseMetrics:
    """Accumulates ``evaluate_masks`` results case by case.

    >>> acc = CaseMetrics()
    >>> acc.add("case-1", pred, truth, spacing)     # doctest: +SKIP
    >>> acc.mean()["dice"]                          # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._names: list[str] = []
        self._results: list[dict[str, float | int]] = []

    def add(
        self, name: str, pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float],
        roi: np.ndarray | None = None,
    ) -> dict[str, float | int]:
        """Evaluate one case, remember it under ``name`` and return its metrics."""
        result = evaluate_masks(pred, truth, spacing, roi)
        self._names.append(name)
        self._results.append(result)
        return result

    def __len__(self) -> int:
        return len(self._results)

    @property
    def rows(self) -> list[tuple[str, dict[str, float | int]]]:
        """``(name, metrics)`` for every case in the order they were added."""
        return list(zip(self._names, self._results, strict=True))

    def mean(self) -> dict[str, float]:
        """The mean row (see ``mean_metrics`` for how nan and inf are treated)."""
        return mean_metrics(self._results)
