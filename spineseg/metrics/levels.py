"""Scoring vertebra levels: per-vertebra Dice, the VerSe identification rate and localisation
distance (Sekuboyina et al., "VerSe: a vertebrae labelling and segmentation benchmark",
Medical Image Analysis 2021).

A true vertebra v is *identified* when the prediction has label v, its centroid lies within
``ID_RADIUS_MM`` (20 mm) of v's true centroid, and v's true centroid is the closest true
centroid to it. The localisation distance is the mean distance between predicted and true
centroids of the labels both hold. Both label maps are VerSe ids on one grid; ``spacing`` (mm)
or a full ``affine`` places the voxels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spineseg.model.level_ids import UNNAMED_BASE, label_name

ID_RADIUS_MM = 20.0


@dataclass(frozen=True)
class LevelScores:
    """per_vertebra: true label -> {name, dice, identified, distance_mm (None if not predicted)};
    identification_rate: identified / true vertebrae; localisation_mm: mean centroid distance over
    the labels both maps hold (nan when none)."""

    per_vertebra: dict[int, dict[str, object]]
    identification_rate: float
    localisation_mm: float
    true_count: int
    predicted_labels: list[int]

    def summary(self) -> dict[str, object]:
        return {
            "identification_rate": self.identification_rate,
            "localisation_mm": self.localisation_mm,
            "true_vertebrae": self.true_count,
            "predicted_labels": self.predicted_labels,
            "per_vertebra": {label_name(k): v for k, v in self.per_vertebra.items()},
        }


def centroids_mm(labels: np.ndarray, affine: np.ndarray) -> dict[int, np.ndarray]:
    """Centroid (world mm) of every nonzero label. Sums over the labelled voxels only (the
    spine is a few per cent of a CT grid), not a pass over the whole grid per label."""
    labels = np.asarray(labels)
    where = np.nonzero(labels > 0)
    ids = labels[where].astype(np.int64)
    if ids.size == 0:
        return {}
    counts = np.bincount(ids)
    sums = np.stack([np.bincount(ids, weights=axis, minlength=counts.size) for axis in where], axis=1)
    present = np.flatnonzero(counts)
    centres = sums[present] / counts[present, None]
    return {int(i): (affine @ np.r_[c, 1.0])[:3] for i, c in zip(present, centres, strict=True)}


def score_levels(pred: np.ndarray, truth: np.ndarray, affine: np.ndarray) -> LevelScores:
    """Scores of a predicted level map against the true one (same shape, VerSe ids)."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from the truth's {truth.shape}")
    pred = np.asarray(pred).astype(np.int32, copy=False)
    truth = np.asarray(truth).astype(np.int32, copy=False)
    true_c = centroids_mm(truth, affine)
    pred_c = centroids_mm(pred, affine)
    per: dict[int, dict[str, object]] = {}
    identified = 0
    distances = []
    true_ids = sorted(true_c)
    true_stack = np.stack([true_c[i] for i in true_ids]) if true_ids else np.zeros((0, 3))
    # Voxel counts per label in one pass each (not two full-volume comparisons per label).
    top = int(max(truth.max(initial=0), pred.max(initial=0))) + 1
    true_n = np.bincount(truth[truth > 0], minlength=top)
    pred_n = np.bincount(pred[pred > 0], minlength=top)
    both_n = np.bincount(truth[(truth == pred) & (truth > 0)], minlength=top)
    for label in true_ids:
        denom = int(true_n[label] + pred_n[label])
        dice = 2.0 * int(both_n[label]) / denom if denom else float("nan")
        entry: dict[str, object] = {"name": label_name(label), "dice": dice, "identified": False, "distance_mm": None}
        if label in pred_c:
            d = float(np.linalg.norm(pred_c[label] - true_c[label]))
            distances.append(d)
            closest = true_ids[int(np.argmin(np.linalg.norm(true_stack - pred_c[label], axis=1)))]
            entry["distance_mm"] = d
            entry["identified"] = bool(d <= ID_RADIUS_MM and closest == label)
        identified += int(bool(entry["identified"]))
        per[label] = entry
    rate = identified / len(true_ids) if true_ids else float("nan")
    localisation = float(np.mean(distances)) if distances else float("nan")
    predicted = sorted(int(i) for i in pred_c)
    return LevelScores(per, rate, localisation, len(true_ids), predicted)


def named_only(labels: np.ndarray) -> np.ndarray:
    """``labels`` with unnamed vertebrae (``UNNAMED_BASE + k``) set to 0: they claim no level."""
    out = np.asarray(labels).copy()
    out[out > UNNAMED_BASE] = 0
    return out
