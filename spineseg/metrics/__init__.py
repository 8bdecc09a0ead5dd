"""Segmentation metrics on numpy masks: overlap, surface distances, volumes, Bland-Altman.

Pure functions of arrays (non-zero = spine) and voxel spacings in mm; nothing here reads
files or knows about the web, the database or the CLI.
"""

from __future__ import annotations

from spineseg.metrics.bland_altman import BlandAltmanStats, bland_altman
from spineseg.metrics.evaluate import METRIC_KEYS, CaseMetrics, evaluate_masks, mean_metrics
from spineseg.metrics.overlap import (
    ConfusionCounts,
    confusion_counts,
    dice,
    f1_score,
    iou,
    precision,
    recall,
    specificity,
)
from spineseg.metrics.plots import plot_bland_altman
from spineseg.metrics.surface import SurfaceDistances, assd, hd95, surface_distances
from spineseg.metrics.volume import VolumeComparison, compare_volumes, mask_volume_ml, slice_areas_mm2

__all__ = [
    "METRIC_KEYS",
    "BlandAltmanStats",
    "CaseMetrics",
    "ConfusionCounts",
    "SurfaceDistances",
    "VolumeComparison",
    "assd",
    "bland_altman",
    "compare_volumes",
    "confusion_counts",
    "dice",
    "evaluate_masks",
    "f1_score",
    "hd95",
    "iou",
    "mask_volume_ml",
    "mean_metrics",
    "plot_bland_altman",
    "precision",
    "recall",
    "slice_areas_mm2",
    "specificity",
    "surface_distances",
]
