"""Measurements of a vertebra label map that tell a plausible column from a broken one: pure
functions on the label map and its affine. They measure; ``metrics.quality`` judges them
against its thresholds (docs/quality.md has the figures behind those).

``vertebra_anatomy(labels, affine, order)`` -> one dict per vertebra of ``order`` (top to
bottom):

- ``lr_extent_ratio``: how far the vertebra reaches to its farther side over how far to its
  nearer one, from its body's median left-right position (the body is the front
  ``BODY_DEPTH_SHARE`` of its depth, which ribs and transverse processes do not reach). A
  vertebra's processes reach about as far left as right; a rib marked on one side, or the arch
  of one side left out, makes one side reach far more than the other.
- ``lr_imbalance``: (left - right) / (left + right) of its voxels about the same position.
- ``disc_fill_below``: how much of the disc between it and the next vertebra of ``order`` the
  mask covers (``disc_fill``): near 0 where a disc parts the bodies, near 1 where the mask runs
  solid from one body into the other (a bridged disc).

Arrays: ``labels`` (I, J, K) integer, 0 background; ``affine`` voxel -> RAS+ mm. The label map
is looked at in RAS axis order (a view); only each vertebra's box is copied.
"""

from __future__ import annotations

from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

# The body is the front part of a vertebra: in RAS order, the anterior share of its
# posterior-anterior extent. A vertebral body is 35-45 % of a vertebra's depth with its
# spinous process; 30 % keeps the pedicles and rib heads out.
BODY_DEPTH_SHARE = 0.30
# The disc is looked at in the bodies' core: within this share of the smaller body's radius
# (the radius of a circle of its median axial area) of the line joining their centres.
CORE_SHARE = 0.6
# A side's reach is this quantile of its voxels' distances from the body's mid-plane (the
# farthest voxel would follow a single stray voxel).
REACH_QUANTILE = 0.98


def _canonical(labels: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ornt = nib.orientations.io_orientation(affine)
    view = nib.orientations.apply_orientation(labels, ornt)
    can_affine = affine @ nib.orientations.inv_ornt_aff(ornt, labels.shape[:3])
    return view, np.linalg.norm(can_affine[:3, :3], axis=0)


def body_zone(region: np.ndarray) -> np.ndarray:
    """bool, ``region``'s shape: its voxels in the front ``BODY_DEPTH_SHARE`` of its depth (RAS
    axis 1 runs posterior -> anterior)."""
    ys = np.flatnonzero(region.any(axis=(0, 2)))
    if ys.size == 0:
        return np.zeros_like(region)
    front = ys[-1] - BODY_DEPTH_SHARE * (ys[-1] - ys[0] + 1)
    zone = np.zeros(region.shape[1], dtype=bool)
    zone[int(np.ceil(front)):] = True
    return region & zone[None, :, None]


def left_right(region: np.ndarray, spacing_x: float) -> tuple[float, float] | None:
    """``(lr_imbalance, lr_extent_ratio)`` of ``region`` (bool, RAS: axis 0 right -> left) about
    its body's median left-right position; None when it has no body."""
    body_x = np.nonzero(body_zone(region))[0]
    if body_x.size == 0:
        return None
    mid = float(np.median(body_x))
    per_x = np.count_nonzero(region, axis=(1, 2)).astype(np.float64)
    offset = (np.arange(region.shape[0]) - mid) * spacing_x
    left, right = per_x[offset > 0], per_x[offset < 0]
    imbalance = float((left.sum() - right.sum()) / max(left.sum() + right.sum(), 1.0))

    def reach(weights: np.ndarray, distance: np.ndarray) -> float:
        if weights.sum() == 0:
            return 0.0
        cumulative = np.cumsum(weights[np.argsort(distance)]) / weights.sum()
        return float(np.sort(distance)[np.searchsorted(cumulative, REACH_QUANTILE)])

    reaches = (reach(left, offset[offset > 0]), reach(right, -offset[offset < 0]))
    ratio = max(reaches) / max(min(reaches), spacing_x)
    return imbalance, ratio


def disc_fill(view: np.ndarray, upper: int, lower: int, spacing: np.ndarray) -> float | None:
    """How much of the disc between vertebrae ``upper`` and ``lower`` (labels of ``view``, RAS) the
    mask (any label) covers, measured along the line joining the two bodies' centres, so that a
    disc tilted in a kyphosis is crossed square, not cut obliquely by axial slices: the mask's
    voxels within ``CORE_SHARE`` of the smaller body's radius of that line, counted in bins of
    the coarsest voxel side; the emptiest bin as a share of the emptier end bin (at most 1).
    None when a body is missing or the two centres are nearer than three bins."""
    centres, radii = [], []
    for label in (upper, lower):
        body = body_zone(view == label)
        points = np.argwhere(body)
        if points.shape[0] == 0:
            return None
        centres.append(points.mean(axis=0) * spacing)
        areas = np.count_nonzero(body, axis=(0, 1))
        radii.append(np.sqrt(float(np.median(areas[areas > 0])) * spacing[0] * spacing[1] / np.pi))
    axis = centres[0] - centres[1]
    length = float(np.linalg.norm(axis))
    width = float(max(spacing))
    if length < 3 * width:
        return None
    axis /= length
    points = np.argwhere(view > 0) * spacing - centres[1]
    along = points @ axis
    across = np.linalg.norm(points - along[:, None] * axis, axis=1)
    n_bins = int(length / width)
    core = (across <= CORE_SHARE * min(radii)) & (along >= 0) & (along < n_bins * width)
    counts = np.bincount((along[core] / width).astype(int), minlength=n_bins)[:n_bins]
    ends = min(counts[0], counts[-1])
    return None if ends == 0 else min(float(counts.min()) / float(ends), 1.0)


def vertebra_anatomy(labels: np.ndarray, affine: np.ndarray, order: list[int]) -> list[dict[str, Any]]:
    """Per label of ``order`` (top to bottom): ``lr_imbalance``, ``lr_extent_ratio`` and
    ``disc_fill_below`` (module docstring; None where not measurable, and for the last)."""
    view, spacing = _canonical(labels, affine)
    top = max(order, default=0)
    boxes = ndi.find_objects(np.asarray(view), max_label=top) if top > 0 else []

    def box_of(label: int | None) -> tuple[slice, ...] | None:
        return boxes[label - 1] if label is not None and 0 < label <= len(boxes) else None

    out = []
    for index, label in enumerate(order):
        entry: dict[str, Any] = {"lr_imbalance": None, "lr_extent_ratio": None, "disc_fill_below": None}
        out.append(entry)
        box = box_of(label)
        if box is None:
            continue
        sides = left_right(np.asarray(view[box]) == label, float(spacing[0]))
        if sides is not None:
            entry["lr_imbalance"], entry["lr_extent_ratio"] = round(sides[0], 3), round(sides[1], 3)
        below = order[index + 1] if index + 1 < len(order) else None
        other = box_of(below)
        if other is not None:
            both = tuple(slice(min(p.start, q.start), max(p.stop, q.stop)) for p, q in zip(box, other, strict=True))
            fill = disc_fill(np.asarray(view[both]), label, below, spacing)
            entry["disc_fill_below"] = None if fill is None else round(fill, 3)
    return out
