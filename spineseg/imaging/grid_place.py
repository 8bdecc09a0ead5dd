"""Put a label map that lies voxel for voxel on a grid (that grid, or a box of it in any axis
order, such as the viewer's canonical crop) back onto that grid, without resampling.

Used for an edited label volume sent back by the browser: the viewer edits a canonical (RAS),
cropped copy of the run's grid (``imaging.viewer_copy``), and the edit must land on exactly the
voxels it was drawn on. A grid that does not coincide voxel for voxel is refused, never
interpolated.
"""

from __future__ import annotations

import numpy as np

from spineseg.errors import InputError

TOLERANCE = 1e-3  # in voxels: float32 affines of the same grid agree far better than this


def place_on_grid(values: np.ndarray, affine: np.ndarray, base: np.ndarray, grid_affine: np.ndarray,
                  source: object = "labels") -> np.ndarray:
    """``base`` (the grid's own array) with the voxels of ``values`` (on ``affine``) written in.

    ``values``' grid must be the target grid or a box of it, its axes a permutation of the
    target's with any flips: ``inv(grid_affine) @ affine`` is a signed permutation with an integer
    shift. Voxels of ``base`` outside the box keep their values. ``InputError`` about ``source``
    naming what does not fit."""
    if values.ndim != 3:
        raise InputError(source, f"a label volume has 3 axes, this one has {values.ndim} ({values.shape})")
    transform = np.linalg.inv(np.asarray(grid_affine, dtype=np.float64)) @ np.asarray(affine, dtype=np.float64)
    rotation, shift = transform[:3, :3], transform[:3, 3]
    rounded = np.rint(rotation)
    is_permutation = (np.abs(rotation - rounded).max() < TOLERANCE and np.all(np.abs(rounded).sum(axis=0) == 1)
                      and np.all(np.abs(rounded).sum(axis=1) == 1))
    if not is_permutation or np.abs(shift - np.rint(shift)).max() >= TOLERANCE:
        raise InputError(source, "its voxels are not the voxels of the run's mask (a different grid: spacing, "
                                 "origin or direction differ); save it on the grid of the mask it corrects")
    source_axis = [int(np.flatnonzero(rounded[axis])[0]) for axis in range(3)]  # target axis <- source axis
    signs = [int(rounded[axis, source_axis[axis]]) for axis in range(3)]
    placed = np.transpose(values, source_axis)
    starts = []
    for axis in range(3):
        size, offset = placed.shape[axis], int(np.rint(shift[axis]))
        if signs[axis] < 0:
            placed = np.flip(placed, axis)
            offset -= size - 1
        starts.append(offset)
    stops = [start + size for start, size in zip(starts, placed.shape, strict=True)]
    if min(starts) < 0 or any(stop > n for stop, n in zip(stops, base.shape, strict=True)):
        raise InputError(source, f"it reaches outside the run's grid {tuple(base.shape)} (its box runs from voxel "
                                 f"{tuple(starts)} to {tuple(s - 1 for s in stops)})")
    out = np.array(base, copy=True)
    out[tuple(slice(a, b) for a, b in zip(starts, stops, strict=True))] = placed
    return out
