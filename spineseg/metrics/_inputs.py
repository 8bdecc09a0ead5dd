"""Checks shared by the metric modules: two masks of one shape, a usable voxel spacing.

Every metric accepts any numeric or boolean array as a mask; a voxel is foreground when it is
non-zero. Problems are reported as ``InputError`` naming the parameter and the value rejected,
so a caller never sees a bare numpy broadcasting error.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spineseg.errors import InputError


def as_binary_mask(mask: np.ndarray, name: str) -> np.ndarray:
    """``mask`` as a boolean array (non-zero = foreground). NaN voxels are rejected because
    they are neither foreground nor background."""
    array = np.asarray(mask)
    if array.dtype == bool:
        return array
    if not (np.issubdtype(array.dtype, np.number)):
        raise InputError(name, f"mask must be numeric or boolean, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.floating) and np.isnan(array).any():
        raise InputError(name, f"mask contains {int(np.isnan(array).sum())} NaN voxel(s)")
    return array != 0


def as_binary_pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as boolean arrays of one shape; a shape mismatch quotes both shapes."""
    pred_b = as_binary_mask(pred, "pred")
    truth_b = as_binary_mask(truth, "truth")
    if pred_b.shape != truth_b.shape:
        raise InputError(
            "pred/truth",
            f"masks differ in shape: prediction {pred_b.shape} vs truth {truth_b.shape}",
        )
    return pred_b, truth_b


def as_spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    """``spacing`` (mm per voxel along each array axis) as a tuple of ``ndim`` positive floats."""
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError) as exc:
        raise InputError("spacing", f"expected {ndim} numbers in mm, got {spacing!r}") from exc
    if len(values) != ndim:
        raise InputError("spacing", f"expected {ndim} values (one per axis), got {len(values)}: {values}")
    if not all(np.isfinite(v) and v > 0 for v in values):
        raise InputError("spacing", f"every voxel size must be a positive finite number of mm, got {values}")
    return values
