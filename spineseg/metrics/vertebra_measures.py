"""Per-vertebra measurements: trabecular attenuation (HU) and body heights, with the literature's
thresholds shown as flags, never as a diagnosis (definitions and sources in docs/levels.md).

- Vertebral body: the vertebra's voxels after a morphological opening that removes the thin
  posterior elements (pedicles, laminae, processes), keeping the largest piece.
- Trabecular ROI: the body eroded by ``CORTEX_MM`` (the cortex and endplates), and only its
  middle ``MID_SHARE`` along the spine's axis. Mean and median HU of the CT inside it.
  Flag (L1 only, where the thresholds were defined): <= 110 HU "osteoporosis range",
  <= 160 HU "low" (Pickhardt et al., Ann Intern Med 2013;158:588-595).
- Heights: in the vertebra's own frame (u = its superior-inferior principal axis, a = anterior
  perpendicular to u), the extent along u of the body's mid-sagittal slab (``SLAB_MM`` thick)
  in strips at 10-25 % (anterior), 40-60 % (middle) and 75-90 % (posterior) of its depth.
  Ratios Ha/Hp (wedge), Hm/Hp (biconcave) and Hp / the neighbours' mean Hp (crush); a ratio's
  reduction of 20-25 % is grade 1, 25-40 % grade 2, > 40 % grade 3 in Genant's semi-quantitative
  scale (Genant et al., J Bone Miner Res 1993;8:1137-1148).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

CORTEX_MM = 3.0
MID_SHARE = 0.6
SLAB_MM = 6.0
OPENING_SHARE = 0.45  # opening radius as a share of the vertebra's deepest point
PICKHARDT_L1 = ((110.0, "osteoporosis range (L1 <= 110 HU)"), (160.0, "low (L1 <= 160 HU)"))
GENANT = ((0.40, 3, "severe (> 40 % reduction)"), (0.25, 2, "moderate (25-40 % reduction)"),
          (0.20, 1, "mild (20-25 % reduction)"))
FLAG_NOTE = "a flag from published thresholds, not a diagnosis"


@dataclass(frozen=True)
class VertebraMeasures:
    """hu_mean / hu_median: trabecular ROI (None when the ROI is empty); roi_ml: its volume;
    heights_mm: anterior, middle, posterior (None where not measurable)."""

    hu_mean: float | None
    hu_median: float | None
    roi_ml: float
    heights_mm: tuple[float | None, float | None, float | None]


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


def vertebral_body(region: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """The body of one vertebra (bool): opening removes the posterior elements."""
    depth = ndi.distance_transform_edt(region, sampling=spacing)
    radius = OPENING_SHARE * float(depth.max())
    if radius < spacing.max():
        return region.copy()
    opened = _open_by_ball(region, radius, spacing)
    labels, n = ndi.label(opened)
    if n == 0:
        return region.copy()
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (int(np.argmax(sizes)) + 1)


def _frame(points_mm: np.ndarray, anterior_hint: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    centre = points_mm.mean(axis=0)
    _, _, vt = np.linalg.svd(points_mm - centre, full_matrices=False)
    # The superior-inferior axis is the principal axis closest to world z (a body is wider than tall,
    # so the smallest-variance axis is the height axis).
    u = vt[int(np.argmax(np.abs(vt[:, 2])))]
    u = u if u[2] >= 0 else -u
    a = anterior_hint - np.dot(anterior_hint, u) * u
    a /= max(np.linalg.norm(a), 1e-9)
    return centre, u, a


def measure_vertebra(region: np.ndarray, hu: np.ndarray, affine: np.ndarray) -> VertebraMeasures:
    """Measures of one vertebra ``region`` (bool, same grid as ``hu``; ``affine`` voxel -> RAS mm).
    Work on a box around the region: pass crops (with their shifted affine) for speed."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    body = vertebral_body(region, spacing)
    idx = np.argwhere(body)
    if len(idx) < 10:
        return VertebraMeasures(None, None, 0.0, (None, None, None))
    pts = idx @ affine[:3, :3].T + affine[:3, 3]
    centre, u, a = _frame(pts, np.array([0.0, 1.0, 0.0]))
    along = (pts - centre) @ u
    depth_axis = (pts - centre) @ a
    lateral = (pts - centre) @ np.cross(u, a)
    # Trabecular ROI: eroded body, middle share along u.
    inner = ndi.binary_erosion(body, structure=_ball(CORTEX_MM, spacing)) if CORTEX_MM > 0 else body
    inner_idx = np.argwhere(inner)
    hu_mean = hu_median = None
    roi_ml = 0.0
    if len(inner_idx):
        inner_pts = inner_idx @ affine[:3, :3].T + affine[:3, 3]
        t = (inner_pts - centre) @ u
        lo, hi = np.percentile(along, [50 - 50 * MID_SHARE, 50 + 50 * MID_SHARE])
        pick = (t >= lo) & (t <= hi)
        values = hu[tuple(inner_idx[pick].T)]
        if values.size:
            hu_mean, hu_median = float(values.mean()), float(np.median(values))
            roi_ml = float(values.size * np.prod(spacing) / 1000.0)
    heights = _heights(along, depth_axis, lateral, spacing)
    return VertebraMeasures(hu_mean, hu_median, roi_ml, heights)


def _heights(along: np.ndarray, depth: np.ndarray, lateral: np.ndarray,
             spacing: np.ndarray) -> tuple[float | None, float | None, float | None]:
    slab = np.abs(lateral) <= max(SLAB_MM / 2, spacing.max())
    if slab.sum() < 5:
        return (None, None, None)
    d, h = depth[slab], along[slab]
    front, back = float(d.max()), float(d.min())
    span = front - back
    out: list[float | None] = []
    step = float(np.median(spacing))
    for lo_share, hi_share in ((0.10, 0.25), (0.40, 0.60), (0.75, 0.90)):
        hi_d, lo_d = front - lo_share * span, front - hi_share * span
        strip = (d <= hi_d) & (d >= lo_d)
        if strip.sum() < 3:
            out.append(None)
            continue
        out.append(float(h[strip].max() - h[strip].min() + step))
    return (out[0], out[1], out[2])


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


def height_ratios(heights: list[tuple[float | None, float | None, float | None]]) -> list[dict[str, object]]:
    """Per vertebra (top to bottom): Ha/Hp, Hm/Hp, Hp/neighbours' Hp and the worst Genant grade."""
    rows = []
    for i, (ha, hm, hp) in enumerate(heights):
        neighbours = [heights[j][2] for j in (i - 1, i + 1) if 0 <= j < len(heights) and heights[j][2]]
        wedge = ha / hp if ha and hp else None
        biconcave = hm / hp if hm and hp else None
        crush = hp / float(np.mean(neighbours)) if hp and neighbours else None
        grades = [genant_grade(r) for r in (wedge, biconcave, crush)]
        grade, text = max(grades, key=lambda g: g[0])
        rows.append({"ha_hp": wedge, "hm_hp": biconcave, "hp_neighbours": crush, "genant_grade": grade,
                     "height_flag": text})
    return rows
