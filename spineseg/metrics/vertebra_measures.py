"""Per-vertebra measurements: trabecular attenuation (HU) and body heights, with the literature's
thresholds shown as flags, never as a diagnosis (definitions and sources in docs/levels.md).

- Vertebral body: the vertebra's voxels after a morphological opening that removes the thin
  posterior elements (pedicles, laminae, processes), keeping the largest piece, and then only
  its part in front of the spinal canal (an opening keeps thick lumbar pedicles and laminae).
- Body frame: u = the body's principal axis closest to head-foot (a body is wider and deeper
  than tall), a = anterior perpendicular to u, l = lateral; recomputed on the body in front of
  the canal until it settles, since an arch left in the body tilts the axes.
- Trabecular ROI: the body eroded by ``CORTEX_MM`` (the cortex and endplates), and only its
  middle ``MID_SHARE`` along u. Mean and median HU of the CT inside it.
  Flag (L1 only, where the thresholds were defined): <= 110 HU "osteoporosis range",
  <= 160 HU "low" (Pickhardt et al., Ann Intern Med 2013;158:588-595).
- Heights: in the mid-sagittal slab (``SLAB_MM`` thick), the body runs from its anterior wall
  back to the canal (the first gap behind it). Each column of that slab (``COLUMN_MM`` square
  in depth x lateral) has a height: the extent along u of the vertebra's voxel centres there,
  widened by one gap between them (a column of n slices is n slices tall). The anterior,
  middle and posterior heights are the median column heights in strips at 10-25 %, 40-60 % and
  75-90 % of the body's depth from the anterior wall.
  Ratios Ha/Hp (wedge), Hm/Hp (biconcave) and Hp / the neighbours' mean Hp (crush); a ratio's
  reduction of 20-25 % is grade 1, 25-40 % grade 2, > 40 % grade 3 in Genant's semi-quantitative
  scale (Genant et al., J Bone Miner Res 1993;8:1137-1148). Grades are given only to vertebrae
  that pass the quality gate (``metrics.height_gate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from scipy.stats import theilslopes

CORTEX_MM = 3.0
MID_SHARE = 0.6
SLAB_MM = 6.0
OPENING_SHARE = 0.45  # opening radius as a share of the vertebra's deepest point
# Strips of the body's depth, from the anterior wall, where the three heights are read.
HEIGHT_STRIPS = ((0.10, 0.25), (0.40, 0.60), (0.75, 0.90))
# Heights are the extents of rays along u through the body's voxels (each voxel a box): rays every
# RAY_DEPTH_MM of depth and RAY_LATERAL_MM across the slab, sampled every RAY_STEP_SHARE of the
# finest voxel side (a height is exact to that step on a box of whole voxels).
RAY_DEPTH_MM = 0.5
RAY_LATERAL_MM = 1.0
RAY_STEP_SHARE = 0.25
RAY_REACH_MM = 80.0  # rays reach at most this far either side of the body's centre, and never past the crop
# The walls are read on rays within this distance of the body's mid-height, the outermost
# WALL_SHARE of them: a crushed third still reaches mid-height, a stray voxel does not move a wall.
WALL_BAND_MM = 5.0
WALL_SHARE = 0.1
FRAME_ROUNDS = 4
# The endplates' slope is fitted between these shares of the body's depth (the rounded rims left out).
ENDPLATE_SPAN = (0.1, 0.9)
# A piece of the opened body is a piece of its own when it holds at least this share of the
# largest (specks and stray ends of the opening are smaller).
BODY_PIECE_SHARE = 0.15
PICKHARDT_L1 = ((110.0, "osteoporosis range (L1 <= 110 HU)"), (160.0, "low (L1 <= 160 HU)"))
GENANT = ((0.40, 3, "severe (> 40 % reduction)"), (0.25, 2, "moderate (25-40 % reduction)"),
          (0.20, 1, "mild (20-25 % reduction)"))
FLAG_NOTE = "a flag from published thresholds, not a diagnosis"


@dataclass(frozen=True)
class VertebraMeasures:
    """hu_mean / hu_median: trabecular ROI (None when the ROI is empty); roi_ml: its volume;
    heights_mm: anterior, middle, posterior (None where not measurable); body_ml: the volume of
    the vertebra's voxels in front of the body's posterior wall; body_pieces: pieces of the opened body in front of the
    canal of at least ``BODY_PIECE_SHARE`` of the largest (1 for a whole body); body_cut: those voxels touch the
    grid's edge (cut by the scan's ends or the field of view); axis_step_mm: the grid's sampling
    step along the height axis u (the heights' resolution)."""

    hu_mean: float | None
    hu_median: float | None
    roi_ml: float
    heights_mm: tuple[float | None, float | None, float | None]
    body_ml: float = 0.0
    body_pieces: int = 0
    body_cut: bool = False
    axis_step_mm: float | None = None


def _ball(radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    r = np.maximum(np.floor(radius_mm / spacing).astype(int), 0)
    grid = np.ogrid[tuple(slice(-k, k + 1) for k in r)]
    return sum((g * s / max(radius_mm, 1e-6)) ** 2 for g, s in zip(grid, spacing, strict=True)) <= 1.0


def _open_by_ball(region: np.ndarray, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """Opening of ``region`` by the ball of ``radius_mm`` (``_ball``; outside the grid counts as
    background), through two distance transforms instead of a erosion and a dilation with a
    large structure: a voxel survives the erosion when no background voxel lies within the
    radius, and the dilation keeps the voxels within the radius of a survivor."""
    padded = np.pad(region, 1)
    eroded = ndi.distance_transform_edt(padded, sampling=spacing) > radius_mm
    if not eroded.any():
        return np.zeros(region.shape, dtype=bool)
    opened = ndi.distance_transform_edt(~eroded, sampling=spacing) <= radius_mm
    return opened[1:-1, 1:-1, 1:-1]


def _opened_pieces(region: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, int, tuple[int, ...]]:
    """The pieces of ``region`` opened by a ball of ``OPENING_SHARE`` of its deepest point's depth
    (labels 1..n), the label of the largest (the body, its posterior elements removed), and the
    index of the region's deepest voxel inside it (a body is the thickest part of a vertebra)."""
    depth = ndi.distance_transform_edt(region, sampling=spacing)
    deepest = np.unravel_index(int(np.argmax(depth)), depth.shape)
    radius = OPENING_SHARE * float(depth.max())
    if radius < spacing.max():
        return region.astype(np.int32), 1, deepest
    labels, n = ndi.label(_open_by_ball(region, radius, spacing))
    if n == 0:
        return region.astype(np.int32), 1, deepest
    largest = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    deepest = np.unravel_index(int(np.argmax(np.where(labels == largest, depth, -1.0))), depth.shape)
    return labels, largest, deepest


def vertebral_body(region: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """The body of one vertebra (bool): opening removes the posterior elements."""
    labels, largest, _ = _opened_pieces(region, spacing)
    return labels == largest


ANTERIOR = np.array([0.0, 1.0, 0.0])  # RAS+: +y is anterior
HEAD = np.array([0.0, 0.0, 1.0])


def _perpendicular_frame(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(u, a): ``u`` pointing head-wards and a = anterior made perpendicular to it."""
    u = u if u[2] >= 0 else -u
    a = ANTERIOR - np.dot(ANTERIOR, u) * u
    return u, a / max(np.linalg.norm(a), 1e-9)


def _frame(points_mm: np.ndarray, axis_hint: np.ndarray = HEAD) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre, u, a) of a body's points: u is the principal axis closest to ``axis_hint`` (a body
    is wider and deeper than tall, so that is its height axis), a anterior perpendicular to u."""
    centre = points_mm.mean(axis=0)
    _, _, vt = np.linalg.svd(points_mm - centre, full_matrices=False)
    u, a = _perpendicular_frame(vt[int(np.argmax(np.abs(vt @ axis_hint)))])
    return centre, u, a


def _axis_step(direction: np.ndarray, axes: np.ndarray) -> float:
    """The sampling step of the voxel grid along ``direction`` (a unit vector, RAS): the root sum
    of squares of the voxel's edges projected on it (``axes``: the affine's 3x3 part). The slice
    spacing along the slice axis, the voxel side in any direction for a cubic voxel."""
    return float(np.linalg.norm(axes.T @ direction))


def _voxel_extent(direction: np.ndarray, axes: np.ndarray) -> float:
    """Length of one voxel's shadow on ``direction`` (a unit vector, RAS); ``axes``: the affine's
    3x3 part, whose columns are the voxel's edges in RAS mm."""
    return float(np.sum(np.abs(axes.T @ direction)))


def _reach(shape: tuple[int, ...], affine: np.ndarray, direction: np.ndarray) -> tuple[float, float]:
    """How far a ray from inside the crop (``shape``) can travel along ``direction`` before it
    leaves it, at most ``RAY_REACH_MM``: the range of t worth sampling."""
    extent = float(np.sum(np.abs(affine[:3, :3].T @ direction) * np.asarray(shape)))
    reach = min(RAY_REACH_MM, extent)
    return -reach, reach


def _sampled(mask: np.ndarray, inverse: np.ndarray, origins: np.ndarray, direction: np.ndarray, t: np.ndarray,
             margin: int) -> slice:
    """The samples of ``t`` worth taking in ``_runs_through``: those where some line can be in
    ``mask``'s bounding box, and ``margin`` more either side. Every sample left out is outside
    the mask on every line and farther than the closing reaches from any sample inside it, so the
    runs (and the sample nearest to t = 0) are those of the whole range, at a fraction of the cost."""
    nonzero = [np.flatnonzero(mask.any(axis=tuple(k for k in range(mask.ndim) if k != axis)))
               for axis in range(mask.ndim)]
    if any(len(n) == 0 for n in nonzero):
        return slice(0, 0)
    lo = np.array([n[0] for n in nonzero], dtype=np.float64) - 0.5  # rint(x) = i for x in [i - 0.5, i + 0.5]
    hi = np.array([n[-1] for n in nonzero], dtype=np.float64) + 0.5
    start = origins @ inverse[:3, :3].T + inverse[:3, 3]  # (rays, 3) in voxels
    speed = inverse[:3, :3] @ direction  # voxels per mm along each axis
    enter = np.full(len(origins), -np.inf)
    leave = np.full(len(origins), np.inf)
    for axis in range(3):
        if abs(speed[axis]) < 1e-12:
            out = (start[:, axis] < lo[axis]) | (start[:, axis] > hi[axis])
            leave[out] = -np.inf
            continue
        a = (lo[axis] - start[:, axis]) / speed[axis]
        b = (hi[axis] - start[:, axis]) / speed[axis]
        enter = np.maximum(enter, np.minimum(a, b))
        leave = np.minimum(leave, np.maximum(a, b))
    meets = enter <= leave
    if not meets.any():
        return slice(0, 0)
    step = float(t[1] - t[0]) if len(t) > 1 else 1.0
    first = int(np.searchsorted(t, enter[meets].min() - step, side="left")) - margin
    last = int(np.searchsorted(t, leave[meets].max() + step, side="right")) + margin
    return slice(max(first, 0), min(last, len(t)))


def _runs_through(mask: np.ndarray, affine: np.ndarray, origins: np.ndarray, direction: np.ndarray,
                  t_range: tuple[float, float], step: float, bridge_mm: float,
                  also: np.ndarray | None = None) -> Any:
    """(start, end) along ``direction`` (mm from each origin; NaN where a line misses ``mask``) of
    the run of ``mask`` on each line ``origins + t direction`` that holds t = 0, or else the run
    nearest to it. Each voxel is a box (nearest-neighbour lookup), so a run's length is exact to
    ``step``; gaps shorter than ``bridge_mm`` inside a run are closed (a one-voxel crack of a
    mask does not halve a body). With ``also`` (a subset of ``mask`` on its grid), the same lines
    are sampled once for both, and the answer is [mask's, also's]."""
    t = np.arange(t_range[0], t_range[1] + step / 2, step)
    inverse = np.linalg.inv(affine)
    width = int(np.ceil(bridge_mm / step))
    t = t[_sampled(mask, inverse, origins, direction, t, width + 2)]
    targets = [mask] if also is None else [mask, also]
    if len(t) == 0:  # no line comes near the mask
        answers = [(np.full(len(origins), np.nan), np.full(len(origins), np.nan)) for _ in targets]
        return answers[0] if also is None else answers
    pts = origins[:, None, :] + t[None, :, None] * direction
    ijk = np.rint(pts @ inverse[:3, :3].T + inverse[:3, 3]).astype(np.int64)
    ok = np.all((ijk >= 0) & (ijk < np.asarray(mask.shape)), axis=2)
    where = tuple(ijk[ok].T)
    answers = [_run_near_zero(target[where], ok, t, step, width) for target in targets]
    return answers[0] if also is None else answers


def _run_near_zero(values: np.ndarray, ok: np.ndarray, t: np.ndarray, step: float,
                   width: int) -> tuple[np.ndarray, np.ndarray]:
    """``_runs_through``'s runs from the samples ``values`` taken where ``ok`` (rays x t)."""
    inside = np.zeros(ok.shape, dtype=bool)
    inside[ok] = values
    if width > 1:
        inside = ndi.binary_closing(inside, structure=np.ones((1, width), dtype=bool)) & ok | inside
    hit = inside.any(axis=1)
    starts = inside & ~np.pad(inside, ((0, 0), (1, 0)))[:, :-1]
    run = np.cumsum(starts, axis=1) * inside
    distance = np.where(inside, np.abs(t)[None, :], np.inf)
    target = run[np.arange(len(run)), np.argmin(distance, axis=1)]
    chosen = (run == target[:, None]) & inside
    first = np.argmax(chosen, axis=1)
    last = chosen.shape[1] - 1 - np.argmax(chosen[:, ::-1], axis=1)
    return np.where(hit, t[first] - step / 2, np.nan), np.where(hit, t[last] + step / 2, np.nan)


def _endplate_slope(depth: np.ndarray, bottom: np.ndarray, top: np.ndarray) -> float:
    """The mean slope (dh/dd) of the upper and lower endplates (Theil-Sen lines through the rays'
    tops and bottoms): heights are read across the endplates, as on a lateral radiograph, not
    along a fixed axis."""
    pick = np.isfinite(top)
    if pick.sum() < 4 or np.ptp(depth[pick]) <= 0:
        return 0.0
    with np.errstate(invalid="ignore", divide="ignore"):  # theilslopes' confidence interval, unused
        return 0.5 * (float(theilslopes(top[pick], depth[pick])[0])
                      + float(theilslopes(bottom[pick], depth[pick])[0]))


@dataclass(frozen=True)
class BodyFrame:
    """The body's mid-sagittal frame in RAS mm: ``u`` across the endplates (head-wards), ``a``
    anterior and perpendicular to u, lateral = u x a; ``back_mm`` / ``front_mm`` the posterior and
    anterior walls' depth along a from ``centre`` (in the mid-sagittal slab); ``step_u_mm`` the
    grid's sampling step along u (``_axis_step``: the heights' resolution)."""

    centre: np.ndarray
    u: np.ndarray
    a: np.ndarray
    back_mm: float
    front_mm: float
    step_u_mm: float

    def coordinates(self, points_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(depth along a, height along u, lateral) of ``points_mm`` (N, 3) relative to the centre."""
        rel = points_mm - self.centre
        return rel @ self.a, rel @ self.u, rel @ np.cross(self.u, self.a)


class _Body:
    """One vertebra's body in its crop: ``region`` the vertebra's voxels, ``core`` the opened body
    in front of the canal (for the trabecular ROI), the frame, how many pieces the opened body
    has in front of the canal, and how to cast rays through it."""

    def __init__(self, region: np.ndarray, core: np.ndarray, affine: np.ndarray, frame: BodyFrame,
                 pieces: int) -> None:
        self.region, self.core, self.affine, self.frame, self.pieces = region, core, affine, frame, pieces
        self.step = RAY_STEP_SHARE * float(np.linalg.norm(affine[:3, :3], axis=0).min())

    def rays(self, depths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(depth, bottom, top) of the rays along u at ``depths`` x ``RAY_LATERAL_MM`` across the
        slab, each through the body's run nearest to the centre's height."""
        f = self.frame
        lateral = np.arange(-SLAB_MM / 2, SLAB_MM / 2 + 1e-6, RAY_LATERAL_MM)
        dd, ll = (g.ravel() for g in np.meshgrid(depths, lateral, indexing="ij"))
        origins = f.centre + dd[:, None] * f.a + ll[:, None] * np.cross(f.u, f.a)
        bottom, top = _runs_through(self.region, self.affine, origins, f.u, _reach(self.region.shape, self.affine, f.u),
                                    self.step, _voxel_extent(f.u, self.affine[:3, :3]))
        return dd, bottom, top


def _walls(region: np.ndarray, body: np.ndarray, affine: np.ndarray, seed: np.ndarray, centre: np.ndarray,
           u: np.ndarray, a: np.ndarray) -> tuple[float, float] | None:
    """(back, front): the body's posterior and anterior walls along ``a`` (mm from ``centre``),
    where rays from the body's deepest point (``seed``, moved to the centre's mid-sagittal plane)
    leave it, over a bundle of rays within ``WALL_BAND_MM`` of its height across the slab (the
    ``WALL_SHARE`` outermost of them). The back wall is read on the opened ``body``, whose thin
    bridges to the arch are cut (a coarse mask can join them across the canal), the front on
    the vertebra itself (the opening would trim a thin anterior wedge)."""
    heights = np.arange(-WALL_BAND_MM, WALL_BAND_MM + 1e-6, RAY_LATERAL_MM)
    across = np.arange(-SLAB_MM / 2, SLAB_MM / 2 + 1e-6, RAY_LATERAL_MM)
    hh, ll = (g.ravel() for g in np.meshgrid(heights, across, indexing="ij"))
    lateral = np.cross(u, a)
    seed = seed - float((seed - centre) @ lateral) * lateral  # in the mid-sagittal plane
    origins = seed + hh[:, None] * u + ll[:, None] * lateral
    step = RAY_STEP_SHARE * float(np.linalg.norm(affine[:3, :3], axis=0).min())
    bridge = _voxel_extent(a, affine[:3, :3])
    reach = _reach(region.shape, affine, a)
    # The opened body is a subset of the vertebra: one sampling of the lines serves both.
    (_, front), (back, _) = _runs_through(region, affine, origins, a, reach, step, bridge, also=body)
    if not (np.isfinite(back).any() and np.isfinite(front).any()):
        return None
    offset = float((seed - centre) @ a)
    return (offset + float(np.nanpercentile(back, 100 * WALL_SHARE)),
            offset + float(np.nanpercentile(front, 100 * (1 - WALL_SHARE))))


def _locate_body(region: np.ndarray, pieces: np.ndarray, largest: int, seed_index: tuple[int, ...],
                 affine: np.ndarray, axis_hint: np.ndarray, hinted: np.ndarray | None = None) -> _Body | None:
    """The body of ``region`` (``body``: its opened body) and its frame; None when no ray finds it.

    The frame starts from ``axis_hint`` (``hinted``: the caller's, None for the default) at the
    body's deepest voxel. Each round finds the body's
    walls (``_walls``) and takes the frame of the opened body's voxels between them (an opening
    keeps thick lumbar pedicles and laminae, which would tilt it), until they settle. Then
    (a, u) turn in the sagittal plane until u is across the endplates (``_endplate_slope``).
    Heights are read on the vertebra's own voxels, not the opened body (the opening rounds the
    body's rims and would shorten a thin wedge)."""
    axes, shift = affine[:3, :3], affine[:3, 3]
    body = pieces == largest
    body_idx = np.argwhere(body)
    body_pts = body_idx @ axes.T + shift
    seed = axes @ np.asarray(seed_index, dtype=np.float64) + shift
    keep = np.ones(len(body_pts), dtype=bool)
    centre = body_pts.mean(axis=0)
    u, a = _perpendicular_frame(axis_hint)
    for _ in range(FRAME_ROUNDS):
        walls = _walls(region, body, affine, seed, centre, u, a)
        if walls is None:
            return None
        body_d = (body_pts - centre) @ a
        margin = _voxel_extent(a, axes)
        new_keep = (body_d >= walls[0] - margin) & (body_d <= walls[1] + margin)
        if new_keep.sum() < 10:
            break
        settled = np.array_equal(new_keep, keep)
        keep = new_keep
        centre, u, a = _frame(body_pts[keep], axis_hint)
        if settled:
            break
    core = np.zeros(region.shape, dtype=bool)
    core[tuple(body_idx[keep].T)] = True

    def framed(u: np.ndarray, a: np.ndarray) -> _Body | None:
        walls = _walls(region, body, affine, seed, centre, u, a)
        if walls is None:
            return None
        # Pieces of the opened body in front of the posterior wall: one for a whole body (the
        # arch's pieces, when the opening keeps them, lie behind it).
        idx = np.argwhere(pieces > 0)
        front_of_wall = ((idx @ axes.T + shift - centre) @ a) >= walls[0] - _voxel_extent(a, axes)
        sizes = np.bincount(pieces[tuple(idx[front_of_wall].T)], minlength=largest + 1)[1:]
        count = int(np.sum(sizes >= BODY_PIECE_SHARE * sizes.max())) if sizes.any() else 0
        return _Body(region, core, affine, BodyFrame(centre, u, a, walls[0], walls[1], step), count)

    # The heights' resolution: the grid's step along the spine's axis here (the hint), or the
    # body's own axis before it turns to the endplates (a fracture tilts an endplate; it must
    # not change the verdict on the voxels).
    step = _axis_step(u if hinted is None else hinted, axes)
    located = framed(u, a)
    for _ in range(FRAME_ROUNDS):
        if located is None:
            return None
        f = located.frame
        span = f.front_mm - f.back_mm
        depths = np.arange(f.back_mm + ENDPLATE_SPAN[0] * span, f.front_mm - ENDPLATE_SPAN[0] * span, 2 * RAY_DEPTH_MM)
        slope = _endplate_slope(*located.rays(depths))
        if abs(slope) < 0.01:
            break
        norm = float(np.hypot(1.0, slope))
        u, a = (u - slope * a) / norm, (a + slope * u) / norm
        located = framed(u, a)
    return located


def _strip_heights(located: _Body) -> tuple[float | None, float | None, float | None]:
    """Anterior, middle and posterior heights: the median extent along u of the body's rays in each
    of ``HEIGHT_STRIPS`` (None for a strip where fewer than 2 rays meet the body)."""
    f = located.frame
    span = f.front_mm - f.back_mm
    out: list[float | None] = []
    for lo_share, hi_share in HEIGHT_STRIPS:
        depths = np.arange(f.front_mm - hi_share * span, f.front_mm - lo_share * span + 1e-6, RAY_DEPTH_MM)
        _, bottom, top = located.rays(depths)
        heights = (top - bottom)[np.isfinite(top)]
        out.append(float(np.median(heights)) if heights.size >= 2 else None)
    return out[0], out[1], out[2]


def _body_and_frame(region: np.ndarray, affine: np.ndarray, axis_hint: np.ndarray | None) -> _Body | None:
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    pieces, largest, deepest = _opened_pieces(region, spacing)
    if np.count_nonzero(pieces == largest) < 10:
        return None
    hinted = None if axis_hint is None else np.asarray(axis_hint, dtype=np.float64) / np.linalg.norm(axis_hint)
    return _locate_body(region, pieces, largest, deepest, affine, HEAD if hinted is None else hinted, hinted)


def body_frame(region: np.ndarray, affine: np.ndarray, *, axis_hint: np.ndarray | None = None) -> BodyFrame | None:
    """The frame in which ``measure_vertebra`` reads the heights of ``region`` (None when it finds
    no body): for tests and for deforming a body on purpose (``bench/measure_truth.py``)."""
    located = _body_and_frame(region, affine, axis_hint)
    return None if located is None else located.frame


def measure_vertebra(region: np.ndarray, hu: np.ndarray, affine: np.ndarray, *,
                     corner: tuple[int, int, int] = (0, 0, 0),
                     grid_shape: tuple[int, int, int] | None = None,
                     axis_hint: np.ndarray | None = None) -> VertebraMeasures:
    """Measures of one vertebra ``region`` (bool, same grid as ``hu``; ``affine`` voxel -> RAS mm).
    Work on a box around the region: pass crops (with their shifted affine) for speed, and the
    crop's ``corner`` in the whole grid and the grid's shape, so that a body cut by the grid's
    edge is told apart from one that only fills its crop (default: the crop is the grid).
    ``axis_hint``: the spine's head-foot direction there (RAS, e.g. from the neighbours'
    centroids; default world z), where the body's frame starts."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    located = _body_and_frame(region, affine, axis_hint)
    if located is None:
        return VertebraMeasures(None, None, 0.0, (None, None, None))
    heights = _strip_heights(located)
    frame, core = located.frame, located.core
    to_mm = affine[:3, :3].T
    # The body's own voxels: the vertebra in front of the posterior wall (the arch lies behind it).
    region_idx = np.argwhere(region)
    margin = _voxel_extent(frame.a, affine[:3, :3])
    front_idx = region_idx[frame.coordinates(region_idx @ to_mm + affine[:3, 3])[0] >= frame.back_mm - margin]
    grid = np.asarray(region.shape if grid_shape is None else grid_shape)
    full_idx = front_idx + np.asarray(corner)
    cut = bool(np.any(full_idx == 0) or np.any(full_idx == grid - 1))
    idx = np.argwhere(core)
    along = frame.coordinates(idx @ to_mm + affine[:3, 3])[1]
    # Trabecular ROI: eroded body, middle share along u.
    inner = ndi.binary_erosion(core, structure=_ball(CORTEX_MM, spacing)) if CORTEX_MM > 0 else core
    inner_idx = np.argwhere(inner)
    hu_mean = hu_median = None
    roi_ml = 0.0
    if len(inner_idx):
        t = frame.coordinates(inner_idx @ to_mm + affine[:3, 3])[1]
        lo, hi = np.percentile(along, [50 - 50 * MID_SHARE, 50 + 50 * MID_SHARE])
        pick = (t >= lo) & (t <= hi)
        values = hu[tuple(inner_idx[pick].T)]
        if values.size:
            hu_mean, hu_median = float(values.mean()), float(np.median(values))
            roi_ml = float(values.size * np.prod(spacing) / 1000.0)
    body_ml = float(len(front_idx) * np.prod(spacing) / 1000.0)
    return VertebraMeasures(hu_mean, hu_median, roi_ml, heights, body_ml, located.pieces, cut, frame.step_u_mm)


def axis_hints(centroids_mm: list[tuple[float, float, float]]) -> list[np.ndarray | None]:
    """The spine's head-foot direction at each vertebra (top to bottom), from its neighbours'
    centroids (RAS mm): a start for ``measure_vertebra``'s frame on a tilted or curved spine.
    None for a vertebra without neighbours."""
    points = np.asarray(centroids_mm, dtype=np.float64).reshape(-1, 3)
    hints: list[np.ndarray | None] = []
    for i in range(len(points)):
        above, below = points[max(i - 1, 0)], points[min(i + 1, len(points) - 1)]
        step = above - below
        norm = float(np.linalg.norm(step))
        hints.append(step / norm if norm > 1e-6 else None)
    return hints


def density_flag(name: str, hu_mean: float | None) -> str | None:
    """Pickhardt's L1 thresholds, on L1 only; None elsewhere or above them."""
    if name != "L1" or hu_mean is None:
        return None
    for limit, text in PICKHARDT_L1:
        if hu_mean <= limit:
            return text
    return None


def genant_grade(ratio: float | None) -> tuple[int, str | None]:
    """(grade 0..3, text) for a height ratio (1 = no reduction)."""
    if ratio is None:
        return 0, None
    reduction = 1.0 - ratio
    for limit, grade, text in GENANT:
        if reduction > limit or (grade == 1 and reduction >= limit):
            return grade, text
    return 0, None


def height_ratios(heights: list[tuple[float | None, float | None, float | None]],
                  usable: list[bool] | None = None) -> list[dict[str, object]]:
    """Per vertebra (top to bottom): Ha/Hp, Hm/Hp, Hp/neighbours' Hp and the worst Genant grade.
    ``usable``: which vertebrae may serve as a neighbour's reference (default: all)."""
    usable = [True] * len(heights) if usable is None else usable
    rows = []
    for i, (ha, hm, hp) in enumerate(heights):
        neighbours = [heights[j][2] for j in (i - 1, i + 1)
                      if 0 <= j < len(heights) and usable[j] and heights[j][2]]
        wedge = ha / hp if ha and hp else None
        biconcave = hm / hp if hm and hp else None
        crush = hp / float(np.mean(neighbours)) if hp and neighbours else None
        grades = [genant_grade(r) for r in (wedge, biconcave, crush)]
        grade, text = max(grades, key=lambda g: g[0])
        rows.append({"ha_hp": wedge, "hm_hp": biconcave, "hp_neighbours": crush, "genant_grade": grade,
                     "height_flag": text})
    return rows
