"""Post-processing of a probability map into a plausible binary spine mask."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def remove_small_components(
    mask: np.ndarray, voxel_ml: float, *, min_ml: float, min_fraction: float = 0.01
) -> np.ndarray:
    """Drop 3D (26-connected) components smaller than ``max(min_ml, min_fraction * largest)``.

    Vertebrae are separate components (discs are not spine), so a relative rule keeps every
    vertebra of a long scan while removing specks; ``min_ml`` protects scans of a few slices,
    whose components are all small, from losing everything: the largest is always kept.
    """
    labelled, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        return mask.astype(np.uint8)
    sizes = np.bincount(labelled.ravel())[1:] * voxel_ml
    limit = max(min_ml, min_fraction * float(sizes.max()))
    keep = np.zeros(count + 1, dtype=bool)
    keep[1:] = sizes >= limit
    keep[1 + int(np.argmax(sizes))] = True
    return keep[labelled].astype(np.uint8)


def implausible_components(
    foreground: np.ndarray,
    body: np.ndarray,
    spacing: tuple[float, float, float],
    *,
    max_offset_mm: float = 60.0,
    midline_tolerance_mm: float = 50.0,
) -> np.ndarray:
    """Voxels of components that cannot be spine because they lie far from the spinal axis.

    Works on a RAS grid (axes 0, 1 in-plane, 2 inferior -> superior). The axis is traced through
    the reference component: the largest one whose centre lies within ``midline_tolerance_mm``
    of the body's left-right midline (``body``: voxels denser than air). Another component is
    implausible when its voxels lie on average more than ``max_offset_mm`` in-plane from the
    axis at their own slice (arms, femurs, a far rib). Returns a boolean mask of those voxels.
    """
    labelled, count = ndimage.label(foreground, structure=np.ones((3, 3, 3), dtype=bool))
    if count < 2:
        return np.zeros(foreground.shape, dtype=bool)
    sizes = np.bincount(labelled.ravel(), minlength=count + 1)
    fg_i, fg_j, fg_k = np.nonzero(labelled)
    fg_ids = labelled[fg_i, fg_j, fg_k]
    centre_x = np.bincount(fg_ids, weights=fg_i * spacing[0], minlength=count + 1)[1:] / np.maximum(sizes[1:], 1)
    body_x = float(np.nonzero(body.any(axis=(1, 2)))[0].mean() * spacing[0]) if body.any() else centre_x.mean()
    candidates = np.flatnonzero(np.abs(centre_x - body_x) <= midline_tolerance_mm) + 1
    reference = int(candidates[np.argmax(sizes[candidates])]) if candidates.size else int(np.argmax(sizes[1:]) + 1)

    # The axis: the reference's centroid per slice, held constant beyond its ends.
    ref = labelled == reference
    per_slice = ref.sum(axis=(0, 1))
    present = np.flatnonzero(per_slice)
    ci = (ref * np.arange(ref.shape[0])[:, None, None]).sum(axis=(0, 1))[present] / per_slice[present]
    cj = (ref * np.arange(ref.shape[1])[None, :, None]).sum(axis=(0, 1))[present] / per_slice[present]
    all_k = np.arange(ref.shape[2])
    axis_i = np.interp(all_k, present, ci)
    axis_j = np.interp(all_k, present, cj)

    distance = np.hypot((fg_i - axis_i[fg_k]) * spacing[0], (fg_j - axis_j[fg_k]) * spacing[1])
    mean_distance = np.bincount(fg_ids, weights=distance, minlength=count + 1)[1:] / np.maximum(sizes[1:], 1)
    drop = np.zeros(count + 1, dtype=bool)
    drop[1:] = mean_distance > max_offset_mm
    drop[reference] = False
    return drop[labelled]


def plausible_spine(
    foreground: np.ndarray, body: np.ndarray, spacing: tuple[float, float, float], *, min_ml: float
) -> np.ndarray:
    """``foreground`` (RAS grid) without components far from the spinal axis and without small
    components (see ``implausible_components`` and ``remove_small_components``)."""
    far = implausible_components(foreground, body, spacing)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return remove_small_components(foreground & ~far, voxel_ml, min_ml=min_ml).astype(bool)
