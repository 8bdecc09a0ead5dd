"""Interior recall: does the prediction cover the inside of the truth, not just its shell?

A vertebral body whose cancellous interior is left out (a "hollow" mask of the cortical shell)
can still score a fair Dice, because the shell holds much of the volume and all of the surface.
Interior recall asks only about the truth's deep voxels: the share of truth voxels at least
``INTERIOR_DEPTH_MM`` from the truth's surface that the prediction marks.

Depth is the Euclidean distance (real voxel size) from a truth voxel's centre to the centre of
the nearest background voxel. The ends of the array are not a surface: a body cut open by the
scan's first or last slice still has its interior there (a scan of three slices through a body
keeps its middle). Truths with no voxel that deep (thin structures, coarse grids) give NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from spineseg.metrics._inputs import as_binary_pair, as_spacing

INTERIOR_DEPTH_MM = 3.0
"""How far inside the truth's surface a voxel must be to count as interior: more than the
cortex (about 1 mm) and the one-to-two-voxel edge disagreements, less than half of the smallest
vertebral body's depth."""


def interior_voxels(truth: np.ndarray, spacing: Sequence[float], depth_mm: float = INTERIOR_DEPTH_MM) -> np.ndarray:
    """Boolean mask of the truth's voxels at least ``depth_mm`` from its surface."""
    truth_b = np.asarray(truth, dtype=bool)
    sizes = as_spacing(spacing, truth_b.ndim)
    out = np.zeros(truth_b.shape, dtype=bool)
    if not truth_b.any():
        return out
    # The truth's bounding box plus one voxel: the distances inside it are those of the whole
    # grid (every background voxel that can be nearest lies in or next to the box), at a
    # fraction of the cost. Where the box meets the array's end there is no margin, so the
    # array's end is not taken for background.
    box = []
    for axis in range(truth_b.ndim):
        other = tuple(i for i in range(truth_b.ndim) if i != axis)
        occupied = np.flatnonzero(truth_b.any(axis=other))
        box.append(slice(max(int(occupied[0]) - 1, 0), min(int(occupied[-1]) + 2, truth_b.shape[axis])))
    crop = tuple(box)
    depth = ndimage.distance_transform_edt(truth_b[crop], sampling=sizes)
    out[crop] = depth >= depth_mm
    return out


def interior_recall(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float],
                    depth_mm: float = INTERIOR_DEPTH_MM) -> float:
    """Share of the truth's interior voxels (``interior_voxels``) that ``pred`` marks; NaN when
    the truth has no interior at that depth."""
    pred_b, truth_b = as_binary_pair(pred, truth)
    inside = interior_voxels(truth_b, spacing, depth_mm)
    n_inside = int(np.count_nonzero(inside))
    if n_inside == 0:
        return math.nan
    return int(np.count_nonzero(pred_b & inside)) / n_inside
