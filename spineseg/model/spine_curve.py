"""The spinal curve of a binary spine mask and the intervertebral gaps along it (pure numpy/scipy).

Arrays are on a canonical (RAS axis order) grid with ``spacing`` mm per axis; positions are
in grid millimetres (index * spacing). The curve runs through the vertebral bodies from the
top of the field of view to the bottom; ``s`` is the arc length along it in mm.

Method:
1. The body centre of each axial slice is the EDT-weighted centroid of the slice's thickest
   part (the vertebral body is the thickest bone of the spine; slices through a disc hold only
   thin posterior elements and are skipped).
2. The centres are smoothed (Gaussian, ``SMOOTH_MM``) and resampled every 1 mm of arc.
3. Every mask voxel within ``core_radius`` of the curve is projected to its nearest curve
   point; the count per 1 mm of arc is the body cross-section profile. Discs (not bone, not in
   a spine mask) are its deep minima; they are found with ``scipy.signal.find_peaks``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.signal import find_peaks
from scipy.spatial import cKDTree

SMOOTH_MM = 10.0
OUTLIER_MM = 8.0  # a slice centre this far off the smoothed curve is not on the body column
MIN_GAP_SPACING_MM = 11.0  # no two discs closer than this (a cervical body is ~13 mm)
GAP_DEPTH = 0.45  # a disc's profile lies below this share of the neighbouring bodies' profile
STEP_MM = 1.0
DISC_PERCENTILE = 25.0
BRIDGED_MEAN_PIECE_MM = 55.0
LONG_FACTOR = 1.6  # a piece this many typical vertebrae long holds a missed disc


@dataclass(frozen=True)
class SpineCurve:
    """points: (N, 3) grid mm, one per ``STEP_MM`` of arc from the top; tangents: (N, 3) unit,
    pointing down the spine; core_radius: mm, the body radius used for the profile;
    profile: (N,) body cross-section in mm² at each point; gaps: arc positions (mm) of the discs."""

    points: np.ndarray
    tangents: np.ndarray
    core_radius: float
    profile: np.ndarray
    gaps: np.ndarray

    @property
    def length(self) -> float:
        return float(max(len(self.points) - 1, 0) * STEP_MM)


def _slice_centres(edt: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per axial slice with spine: (z_mm, x_mm, y_mm, thickness_mm) of its thickest part."""
    rows = []
    for k in range(edt.shape[2]):
        plane = edt[:, :, k]
        top = float(plane.max())
        if top <= 0:
            continue
        core = plane >= 0.6 * top
        ii, jj = np.nonzero(core)
        w = plane[ii, jj]
        rows.append((k * spacing[2], np.average(ii, weights=w) * spacing[0],
                     np.average(jj, weights=w) * spacing[1], top))
    table = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    if len(table) == 0:
        return table, np.zeros(0, dtype=bool)
    # Slices through discs hold only posterior elements: much thinner than the bodies around.
    window = max(3, round(30.0 / spacing[2]) | 1)
    local = ndi.median_filter(table[:, 3], size=window, mode="nearest")
    keep = table[:, 3] >= 0.6 * local
    return table, keep


def _smooth_xy(kept: np.ndarray, z_grid: np.ndarray, dz: float) -> tuple[np.ndarray, np.ndarray]:
    x = np.interp(z_grid, kept[:, 0], kept[:, 1])
    y = np.interp(z_grid, kept[:, 0], kept[:, 2])
    if len(z_grid) > 2:
        x = ndi.gaussian_filter1d(x, SMOOTH_MM / dz, mode="nearest")
        y = ndi.gaussian_filter1d(y, SMOOTH_MM / dz, mode="nearest")
    return x, y


def _resample_by_arc(points: np.ndarray) -> np.ndarray:
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    arc = np.r_[0.0, np.cumsum(seg)]
    if arc[-1] <= 0:
        return points[:1]
    samples = np.arange(0.0, arc[-1] + 1e-6, STEP_MM)
    return np.stack([np.interp(samples, arc, points[:, d]) for d in range(3)], axis=1)


@dataclass(frozen=True)
class Projection:
    """Every mask voxel (M, 3 indices, C order), its nearest curve sample and the distance (mm)."""

    voxels: np.ndarray
    index: np.ndarray
    dist: np.ndarray


def fit_curve(mask: np.ndarray, spacing: tuple[float, float, float], hu: np.ndarray | None = None) -> SpineCurve | None:
    """The spinal curve and disc gaps of ``mask`` (bool, canonical grid); ``None`` when the mask
    is empty or has no slice thick enough to hold a vertebral body. With ``hu`` (the CT, same
    grid) the profile counts only the denser part of the body column (see ``body_profile``)."""
    return fit_curve_projected(mask, spacing, hu)[0]


def fit_curve_projected(mask: np.ndarray, spacing: tuple[float, float, float], hu: np.ndarray | None = None,
                        depth: np.ndarray | None = None) -> tuple[SpineCurve | None, Projection | None]:
    """``fit_curve``, and the mask's voxels projected onto the curve (computed once for the
    profile; the separation reuses it). ``depth``: the mask's distance transform at ``spacing``,
    when the caller has it already."""
    sp = np.asarray(spacing, dtype=np.float64)
    edt = ndi.distance_transform_edt(mask, sampling=sp) if depth is None else depth
    table, keep = _slice_centres(edt, sp)
    if keep.sum() < 1:
        return None, None
    z_all = table[:, 0]
    z_grid = np.arange(z_all.min(), z_all.max() + 1e-6, sp[2])
    kept = table[keep]
    for _ in range(3):  # smooth, drop centres far off the smooth curve (posterior jumps), again
        x, y = _smooth_xy(kept, z_grid, sp[2])
        off = np.hypot(np.interp(kept[:, 0], z_grid, x) - kept[:, 1], np.interp(kept[:, 0], z_grid, y) - kept[:, 2])
        inlier = off <= max(OUTLIER_MM, 2 * sp[:2].max())
        if inlier.all() or inlier.sum() < 2:
            break
        kept = kept[inlier]
    # Top of the field of view first: the curve runs down the spine.
    coarse = np.stack([x, y, z_grid], axis=1)[::-1]
    points = _resample_by_arc(coarse)
    if len(points) < 2:
        points = np.vstack([coarse[:1], coarse[:1] - [0, 0, STEP_MM]])
    tangents = np.gradient(points, axis=0)
    tangents /= np.maximum(np.linalg.norm(tangents, axis=1, keepdims=True), 1e-9)
    core_radius = float(np.clip(np.median(kept[:, 3]), 2.0 * sp.min(), 14.0))
    # The mask's own gaps first; only a mask that bridges the discs (pieces far longer than any
    # vertebra) is read again with the CT's density (``body_profile`` with ``hu``).
    voxels = np.argwhere(mask)
    index, dist = project_voxels(voxels * sp, points)
    projection = Projection(voxels, index, dist)
    profile = body_profile(mask, sp, points, core_radius, projection=projection)
    gaps = find_gaps(profile)
    if hu is not None and len(profile) * STEP_MM / (len(gaps) + 1) > BRIDGED_MEAN_PIECE_MM:
        profile = body_profile(mask, sp, points, core_radius, hu, projection=projection)
        gaps = find_gaps(profile)
    gaps = split_long_segments(profile, gaps)
    return SpineCurve(points, tangents, core_radius, profile, gaps), projection


def project_voxels(coords_mm: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest curve sample (index) and the distance to it (mm) for (M, 3) positions."""
    tree = cKDTree(points)
    dist, index = tree.query(coords_mm, k=1)
    return index.astype(np.int64), dist


def body_profile(mask: np.ndarray, sp: np.ndarray, points: np.ndarray, core_radius: float,
                 hu: np.ndarray | None = None, *, projection: Projection | None = None) -> np.ndarray:
    """Cross-section (mm²) of the mask within ``core_radius`` of the curve, per 1 mm of arc
    (``projection``: the mask's voxels already projected onto ``points``).

    A mask that bridges the discs (a network may include them) has no gaps in that count, so
    with ``hu`` only voxels denser than the column's ``DISC_PERCENTILE`` percentile count: the
    discs (70-110 HU) fall below the bone of the bodies and their endplates."""
    if projection is None:
        voxels = np.argwhere(mask)
        index, dist = project_voxels(voxels * sp, points)
    else:
        voxels, index, dist = projection.voxels, projection.index, projection.dist
    near = dist <= core_radius
    if hu is not None and near.any():
        values = hu[tuple(voxels[near].T)]
        dense = values >= np.percentile(values, DISC_PERCENTILE)
        picked = np.flatnonzero(near)[~dense]
        near[picked] = False
    counts = np.bincount(index[near], minlength=len(points)).astype(np.float64)
    area = counts * float(np.prod(sp)) / STEP_MM
    return ndi.gaussian_filter1d(area, 1.2, mode="nearest") if len(area) > 2 else area


def find_gaps(profile: np.ndarray) -> np.ndarray:
    """Arc positions (mm) of the profile's deep minima: the intervertebral discs."""
    if len(profile) < 5 or profile.max() <= 0:
        return np.zeros(0)
    reference = float(np.percentile(profile[profile > 0], 75))
    distance = max(1, int(MIN_GAP_SPACING_MM / STEP_MM))
    minima, _props = find_peaks(-profile, distance=distance, prominence=(1 - GAP_DEPTH) * 0.5 * reference)
    deep = []
    for m in minima:
        lo, hi = max(0, m - 25), min(len(profile), m + 26)
        left, right = profile[lo:m + 1].max(), profile[m:hi].max()
        if profile[m] <= GAP_DEPTH * min(left, right):
            deep.append(m)
    # A run of zeros (a wide gap, e.g. a disc the mask left out entirely) counts once, at its middle.
    zero_runs = _zero_run_centres(profile)
    gaps = sorted(set(deep) | set(zero_runs))
    merged: list[int] = []
    for g in gaps:
        if merged and g - merged[-1] < distance:
            merged[-1] = g if profile[g] < profile[merged[-1]] else merged[-1]
        else:
            merged.append(g)
    return np.asarray(merged, dtype=np.float64) * STEP_MM


def split_long_segments(profile: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    """Add gaps inside pieces much longer than the typical vertebra of this spine (discs the
    depth test missed, e.g. a mask bridging thoracic discs): a piece of length L gets
    ``round(L / typical) - 1`` more gaps at its deepest minima (any prominence)."""
    bounds = np.r_[0.0, gaps, (len(profile) - 1) * STEP_MM]
    lengths = np.diff(bounds)
    inner = lengths[1:-1] if len(lengths) > 2 else lengths
    plausible = inner[(inner >= 14.0) & (inner <= 50.0)]
    if len(plausible) == 0:
        return gaps
    typical = float(np.median(plausible))
    added = []
    for a, b in itertools.pairwise(bounds):
        parts = round((b - a) / typical)
        if (b - a) < LONG_FACTOR * typical or parts < 2:
            continue
        lo, hi = int(a / STEP_MM) + 3, int(b / STEP_MM) - 3
        segment = profile[lo:hi]
        minima, props = find_peaks(-segment, distance=max(1, int(0.6 * typical / STEP_MM)), prominence=0)
        if len(minima) == 0:
            continue
        best = minima[np.argsort(-props["prominences"])][: parts - 1]
        added.extend((lo + best) * STEP_MM)
    return np.sort(np.r_[gaps, np.asarray(added, dtype=np.float64)])


def _zero_run_centres(profile: np.ndarray) -> list[int]:
    empty = profile <= 1e-6
    labels, n = ndi.label(empty)
    centres = []
    for run in range(1, n + 1):
        idx = np.flatnonzero(labels == run)
        if idx[0] > 0 and idx[-1] < len(profile) - 1:  # interior runs only
            centres.append(int(idx[len(idx) // 2]))
    return centres
