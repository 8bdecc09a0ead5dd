"""Sizes of masks in physical units: volumes in mL and per-slice areas in mm².

``spacing`` is the voxel size in mm along each array axis, e.g. ``Volume.spacing``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spineseg.errors import InputError
from spineseg.metrics._inputs import as_binary_mask, as_binary_pair, as_spacing

MM3_PER_ML = 1000.0


def mask_volume_ml(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Foreground volume in mL: number of non-zero voxels times the voxel volume (mm³ / 1000)."""
    mask_b = as_binary_mask(mask, "mask")
    voxel_mm3 = math.prod(as_spacing(spacing, mask_b.ndim))
    return int(np.count_nonzero(mask_b)) * voxel_mm3 / MM3_PER_ML


@dataclass(frozen=True)
class VolumeComparison:
    """Predicted against true volume.

    volume_pred_ml, volume_truth_ml: foreground volumes in mL.
    abs_volume_diff_ml: ``|V_pred - V_truth|`` in mL.
    rel_volume_diff: signed ``(V_pred - V_truth) / V_truth`` (0.1 = 10 % too large,
        -0.1 = 10 % too small); 0.0 when both are empty, nan when only the truth is empty
        (a difference relative to nothing is undefined).
    """

    volume_pred_ml: float
    volume_truth_ml: float
    abs_volume_diff_ml: float
    rel_volume_diff: float


def compare_volumes(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> VolumeComparison:
    """Volumes of two masks of the same shape and their absolute and relative difference."""
    pred_b, truth_b = as_binary_pair(pred, truth)
    voxel_ml = math.prod(as_spacing(spacing, pred_b.ndim)) / MM3_PER_ML
    n_pred = int(np.count_nonzero(pred_b))
    n_truth = int(np.count_nonzero(truth_b))
    relative = (n_pred - n_truth) / n_truth if n_truth > 0 else (0.0 if n_pred == 0 else math.nan)
    return VolumeComparison(
        volume_pred_ml=n_pred * voxel_ml,
        volume_truth_ml=n_truth * voxel_ml,
        abs_volume_diff_ml=abs(n_pred - n_truth) * voxel_ml,
        rel_volume_diff=relative,
    )


def slice_areas_mm2(mask: np.ndarray, spacing: Sequence[float], axis: int = 2) -> np.ndarray:
    """Foreground area of every slice perpendicular to ``axis``, in mm².

    mask: shape ``(I, J, K)`` (any ndim >= 2 works); axis: the slice axis (2 = K for axial
    scans in this project's convention). Returns float64 of shape ``(mask.shape[axis],)``:
    voxel count per slice times the product of the in-plane voxel sizes.
    """
    mask_b = as_binary_mask(mask, "mask")
    sizes = as_spacing(spacing, mask_b.ndim)
    if not -mask_b.ndim <= axis < mask_b.ndim:
        raise InputError("axis", f"must be an axis of a {mask_b.ndim}D mask, got {axis}")
    axis = axis % mask_b.ndim
    in_plane_mm2 = math.prod(s for i, s in enumerate(sizes) if i != axis)
    other_axes = tuple(i for i in range(mask_b.ndim) if i != axis)
    counts = np.count_nonzero(mask_b, axis=other_axes)
    return counts.astype(np.float64) * in_plane_mm2
