"""Surface distances between two binary masks, in mm: HD95 and ASSD.

The surface of a mask is its set of boundary voxels: foreground voxels with at least one
face neighbour (6-connectivity in 3D) in the background; a voxel on the array's edge counts as
boundary. Distances are measured between voxel centres with the true, possibly anisotropic,
voxel size (``scipy.ndimage.distance_transform_edt(..., sampling=spacing)``).

- HD95: the larger of the two directed 95th percentiles (prediction -> truth and truth ->
  prediction) of surface-to-nearest-surface distances, a Hausdorff distance that ignores the
  worst 5 % of outliers.
- ASSD: the mean of all those distances from both directions pooled,
  ``(sum d(P->T) + sum d(T->P)) / (|S_P| + |S_T|)``.

- Normalised surface Dice at a tolerance t (Nikolov et al. 2021, the figure TotalSegmentator
  publishes at 1 mm): the share of both surfaces' voxels that lie within t of the other surface,
  ``(#{d(P->T) <= t} + #{d(T->P) <= t}) / (|S_P| + |S_T|)``. It counts boundary voxels rather
  than surface-element areas, like the two distances above.
- Signed mean surface distance: the same pooled distances with a sign, negative where the
  prediction lies inside the truth (a prediction surface voxel inside the truth, or a truth
  surface voxel outside the prediction) and positive where it lies outside. A mask that sits one
  voxel inside the truth all round scores minus one voxel size; one that is too large on one side
  and too small on the other can score 0 with a large ASSD, so read it beside ASSD.

Empty cases: both masks empty -> 0.0 (the surfaces agree: there are none) and surface Dice 1.0;
exactly one empty -> ``inf`` (no surface to measure to; callers writing JSON must turn it into
null), surface Dice 0.0, signed distance ``-inf`` for a missed truth and ``+inf`` for a
prediction where the truth has nothing.

Speed and memory: both masks are cropped to their joint bounding box plus a one-voxel margin
before the distance transforms. All surface voxels lie inside that box and the Euclidean
distance transform is exact, so the crop does not change any distance; it turns a 512x512x300
CT grid into the voxels around the spine (0.4 s for a whole spine column). A stray voxel in a
far corner can stretch the box over the whole grid, where the transform would need about
17 bytes per voxel (1.3 GB and 8 s for 512x512x300, far more for larger grids); above
``EDT_VOXEL_BUDGET`` voxels the same exact distances are found with a k-d tree over the
surface voxels' mm coordinates instead, whose cost follows the number of surface voxels only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import KDTree

from spineseg.metrics._inputs import as_binary_pair, as_spacing

CROP_MARGIN_VOXELS = 1
HD_PERCENTILE = 95.0
_TOLERANCE_SLACK_MM = 1e-6  # a distance of exactly t (voxel centres t apart) is within t
EDT_VOXEL_BUDGET = 16_000_000
"""Largest cropped box (voxels) measured with the distance transform (about 270 MB)."""


@dataclass(frozen=True)
class SurfaceDistances:
    """Directed surface distances in mm.

    pred_to_truth: for each boundary voxel of the prediction, the distance to the nearest
        boundary voxel of the truth; shape ``(n_pred_surface,)``.
    truth_to_pred: the same from the truth's boundary voxels; shape ``(n_truth_surface,)``.
    pred_inside_truth: for each of those prediction surface voxels, whether it lies in the truth;
    truth_inside_pred: for each truth surface voxel, whether it lies in the prediction (both
        give the sign of ``signed_mean_mm``; they default to all-false).
    Both are empty arrays when a mask is empty; see ``hd95_mm`` / ``assd_mm`` for what that
    yields.
    """

    pred_to_truth: np.ndarray
    truth_to_pred: np.ndarray
    pred_inside_truth: np.ndarray | None = None
    truth_inside_pred: np.ndarray | None = None

    @property
    def hd95_mm(self) -> float:
        """95th-percentile symmetric Hausdorff distance in mm (0.0 / inf for empty cases)."""
        empty = self._empty_case_value()
        if empty is not None:
            return empty
        return float(
            max(
                np.percentile(self.pred_to_truth, HD_PERCENTILE),
                np.percentile(self.truth_to_pred, HD_PERCENTILE),
            )
        )

    @property
    def assd_mm(self) -> float:
        """Average symmetric surface distance in mm (0.0 / inf for empty cases)."""
        empty = self._empty_case_value()
        if empty is not None:
            return empty
        total = float(self.pred_to_truth.sum() + self.truth_to_pred.sum())
        return total / (self.pred_to_truth.size + self.truth_to_pred.size)

    def surface_dice(self, tolerance_mm: float) -> float:
        """Normalised surface Dice at ``tolerance_mm`` (1.0 both empty, 0.0 one empty)."""
        empty = self._empty_case_value()
        if empty is not None:
            return 1.0 if empty == 0.0 else 0.0
        limit = float(tolerance_mm) + _TOLERANCE_SLACK_MM
        close = np.count_nonzero(self.pred_to_truth <= limit) + np.count_nonzero(self.truth_to_pred <= limit)
        return float(close) / (self.pred_to_truth.size + self.truth_to_pred.size)

    @property
    def signed_mean_mm(self) -> float:
        """Mean signed surface distance in mm: negative where the prediction sits inside the
        truth (0.0 both empty; -inf a missed truth, +inf a prediction against an empty truth)."""
        n_pred, n_truth = self.pred_to_truth.size, self.truth_to_pred.size
        if n_pred == 0 and n_truth == 0:
            return 0.0
        if n_pred == 0:
            return -math.inf
        if n_truth == 0:
            return math.inf
        pred_sign = _signs(self.pred_inside_truth, n_pred, inside=-1.0)
        truth_sign = _signs(self.truth_inside_pred, n_truth, inside=1.0)
        total = float(pred_sign @ self.pred_to_truth + truth_sign @ self.truth_to_pred)
        return total / (n_pred + n_truth)

    def _empty_case_value(self) -> float | None:
        n_pred, n_truth = self.pred_to_truth.size, self.truth_to_pred.size
        if n_pred == 0 and n_truth == 0:
            return 0.0
        if n_pred == 0 or n_truth == 0:
            return math.inf
        return None


def _signs(flags: np.ndarray | None, n: int, *, inside: float) -> np.ndarray:
    """+-1 per surface voxel: ``inside`` where ``flags`` is true, the opposite elsewhere."""
    if flags is None:
        flags = np.zeros(n, dtype=bool)
    return np.where(flags, inside, -inside)


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Boolean array, same shape as ``mask`` (boolean), true on its boundary voxels."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    interior = ndimage.binary_erosion(mask, structure=structure, border_value=0)
    return mask & ~interior


def _joint_crop(pred: np.ndarray, truth: np.ndarray) -> tuple[slice, ...] | None:
    """Slices of the joint bounding box of both masks plus the margin; None if both are empty."""
    union = pred | truth
    slices = []
    for axis in range(union.ndim):
        other = tuple(i for i in range(union.ndim) if i != axis)
        occupied = np.flatnonzero(union.any(axis=other))
        if occupied.size == 0:
            return None
        start = max(int(occupied[0]) - CROP_MARGIN_VOXELS, 0)
        stop = min(int(occupied[-1]) + 1 + CROP_MARGIN_VOXELS, union.shape[axis])
        slices.append(slice(start, stop))
    return tuple(slices)


def _directed(
    from_surface: np.ndarray, to_surface: np.ndarray, spacing: tuple[float, ...], use_edt: bool
) -> np.ndarray:
    """Distance (mm) from each voxel of ``from_surface`` to the nearest of ``to_surface``."""
    if not from_surface.any():
        return np.zeros(0, dtype=np.float64)
    if not to_surface.any():
        return np.full(int(np.count_nonzero(from_surface)), math.inf)
    if use_edt:
        distance_to_surface = ndimage.distance_transform_edt(~to_surface, sampling=spacing)
        return np.asarray(distance_to_surface[from_surface], dtype=np.float64)
    scale = np.asarray(spacing, dtype=np.float64)
    tree = KDTree(np.argwhere(to_surface) * scale)
    distances, _ = tree.query(np.argwhere(from_surface) * scale)
    return np.asarray(distances, dtype=np.float64)


def surface_distances(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing: Sequence[float],
    *,
    edt_voxel_budget: int = EDT_VOXEL_BUDGET,
) -> SurfaceDistances:
    """Directed boundary-to-boundary distances (mm) between two masks of the same shape.

    pred, truth: masks of shape ``(I, J, K)`` (any ndim); spacing: voxel size in mm per axis.
    edt_voxel_budget: crops up to this many voxels use the distance transform, larger ones the
        k-d tree (same distances, less memory); see the module notes.
    """
    pred_b, truth_b = as_binary_pair(pred, truth)
    sizes = as_spacing(spacing, pred_b.ndim)
    crop = _joint_crop(pred_b, truth_b)
    if crop is None:
        empty = np.zeros(0, dtype=np.float64)
        return SurfaceDistances(pred_to_truth=empty, truth_to_pred=empty)
    pred_crop, truth_crop = pred_b[crop], truth_b[crop]
    pred_surface = surface_voxels(pred_crop)
    truth_surface = surface_voxels(truth_crop)
    use_edt = pred_surface.size <= edt_voxel_budget
    return SurfaceDistances(
        pred_to_truth=_directed(pred_surface, truth_surface, sizes, use_edt),
        truth_to_pred=_directed(truth_surface, pred_surface, sizes, use_edt),
        pred_inside_truth=truth_crop[pred_surface],
        truth_inside_pred=pred_crop[truth_surface],
    )


def hd95(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile Hausdorff distance in mm (both empty -> 0.0, one empty -> inf)."""
    return surface_distances(pred, truth, spacing).hd95_mm


def assd(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> float:
    """Average symmetric surface distance in mm (both empty -> 0.0, one empty -> inf)."""
    return surface_distances(pred, truth, spacing).assd_mm
