"""Where the slices of one DICOM series lie, and the affine that places the stacked array.

Conventions (shared with ``imaging.volume``):
- The stacked array has shape ``(columns, rows, slices)``: ``i`` runs along a DICOM row (the
  ImageOrientationPatient row cosine), ``j`` runs along a column *from the last row to the first*
  (rows flipped), ``k`` runs along the slice normal (row cosine x column cosine) in increasing
  order. This is the grid dcm2niix writes, so a Volume read here lines up voxel for voxel with
  the usual DICOM-to-NIfTI conversion of the same series.
- Positions come from ImagePositionPatient projected on the slice normal, never from file names,
  InstanceNumber or SliceLocation.
- The affine maps ``(i, j, k, 1)`` to RAS+ millimetres (DICOM's LPS with x and y negated).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spineseg.errors import InputError

DUPLICATE_TOLERANCE_MM = 0.01
IRREGULAR_GAP_FRACTION = 0.10
ABSURD_GAP_FACTOR = 5.0
TILT_NOTE_DEGREES = 0.5
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class SlicePlan:
    """How to turn a set of slices into a regular 3D grid.

    kept: indices (into the caller's slice list) of the slices to stack, in k order.
    positions_mm: their positions along the slice normal, increasing, shape (len(kept),).
    target_positions_mm: the positions of the output slices; equal to ``positions_mm`` unless
        the spacing was irregular and the stack must be resampled.
    affine: 4x4 voxel -> RAS+ mm of the output grid.
    notes: what was done on the way (duplicates dropped, gaps resampled, ...).
    """

    kept: tuple[int, ...]
    positions_mm: np.ndarray
    target_positions_mm: np.ndarray
    affine: np.ndarray
    notes: tuple[str, ...]

    @property
    def needs_resampling(self) -> bool:
        return len(self.target_positions_mm) != len(self.positions_mm) or not np.allclose(
            self.target_positions_mm, self.positions_mm
        )


def slice_normal(orientation: np.ndarray) -> np.ndarray:
    """Unit normal (LPS) of a slice from its 6 ImageOrientationPatient cosines."""
    row, col = orientation[:3], orientation[3:]
    normal = np.cross(row, col)
    length = float(np.linalg.norm(normal))
    if length < 1e-6:
        raise ValueError("row and column cosines are parallel")
    return normal / length


def plan_slices(
    source: str,
    orientation: np.ndarray,
    positions_lps: list[np.ndarray],
    pixel_spacing: tuple[float, float],
    rows: int,
    slice_thickness: float | None,
) -> SlicePlan:
    """Order, de-duplicate and check the slices of one series, and build the output affine.

    orientation: 6 cosines (row then column direction, LPS). positions_lps: one
    ImagePositionPatient (mm, LPS) per slice. pixel_spacing: (row spacing, column spacing) in
    mm, as DICOM PixelSpacing. rows: image height in pixels. slice_thickness: mm or ``None``.
    Raises ``InputError`` (naming ``source``) for slices off one line, absurd gaps, and
    duplicate positions that are not a stray copy: all slices at one position, or at least as
    many duplicates as distinct positions (several stacks mixed in one series).
    """
    notes: list[str] = []
    normal = slice_normal(orientation)
    points = np.asarray(positions_lps, dtype=np.float64).reshape(-1, 3)
    projections = points @ normal
    order = np.argsort(projections, kind="stable")

    kept = [int(order[0])]
    duplicates = 0
    for index in order[1:]:
        if projections[index] - projections[kept[-1]] < DUPLICATE_TOLERANCE_MM:
            duplicates += 1
            continue
        kept.append(int(index))
    if duplicates and (len(kept) == 1 or duplicates >= len(kept)):
        raise InputError(
            source,
            f"{len(points)} slices lie at only {len(kept)} distinct position(s): the series mixes several stacks "
            "(phases, echoes, reconstructions) or repeats one position; upload one stack",
        )
    if duplicates:
        notes.append(f"{duplicates} duplicate slice(s) at an already occupied position were dropped")
    positions = projections[kept]
    kept_points = points[kept]

    if len(kept) == 1:
        if slice_thickness and slice_thickness > 0:
            step_mm = float(slice_thickness)
        else:
            step_mm = 1.0
            notes.append("single slice without SliceThickness: slice thickness taken as 1 mm")
        step_direction = normal
        targets = positions.copy()
    else:
        step_direction = (kept_points[-1] - kept_points[0]) / (positions[-1] - positions[0])
        _check_collinear(source, kept_points, positions, step_direction, min(pixel_spacing))
        tilt = float(np.degrees(np.arccos(min(1.0, 1.0 / float(np.linalg.norm(step_direction))))))
        if tilt > TILT_NOTE_DEGREES:
            notes.append(f"slices are stacked {tilt:.1f} degrees off their normal (gantry tilt): sheared affine")
        targets, step_mm, gap_notes = _regular_targets(source, positions)
        notes.extend(gap_notes)

    row_cosine, col_cosine = orientation[:3], orientation[3:]
    row_spacing, col_spacing = pixel_spacing
    lps = np.eye(4)
    lps[:3, 0] = row_cosine * col_spacing
    lps[:3, 1] = -col_cosine * row_spacing  # rows flipped: j = 0 is the last image row
    lps[:3, 2] = step_direction * step_mm
    lps[:3, 3] = kept_points[0] + col_cosine * row_spacing * (rows - 1)
    affine = LPS_TO_RAS @ lps
    return SlicePlan(tuple(kept), positions, targets, affine, tuple(notes))


def _check_collinear(
    source: str, points: np.ndarray, positions: np.ndarray, direction: np.ndarray, tolerance_mm: float
) -> None:
    expected = points[0] + np.outer(positions - positions[0], direction)
    worst = float(np.max(np.linalg.norm(points - expected, axis=1)))
    if worst > max(tolerance_mm, 0.05):
        raise InputError(
            source,
            f"slice positions do not lie on one line (a slice is {worst:.2f} mm off); is this more than one stack?",
        )


def _regular_targets(source: str, positions: np.ndarray) -> tuple[np.ndarray, float, list[str]]:
    """Output slice positions: the input ones when evenly spaced, else a regular grid at the
    median gap spanning the same range. Raises ``InputError`` for gaps beyond
    ``ABSURD_GAP_FACTOR`` times the median."""
    gaps = np.diff(positions)
    median = float(np.median(gaps))
    widest = int(np.argmax(gaps))
    if gaps[widest] > ABSURD_GAP_FACTOR * median:
        raise InputError(
            source,
            f"gap of {gaps[widest]:.2f} mm between slices at {positions[widest]:.2f} and "
            f"{positions[widest + 1]:.2f} mm is more than {ABSURD_GAP_FACTOR:g}x the median "
            f"spacing of {median:.2f} mm; the series is incomplete",
        )
    if float(np.max(np.abs(gaps - median))) <= IRREGULAR_GAP_FRACTION * median:
        mean_step = float((positions[-1] - positions[0]) / (len(positions) - 1))
        return positions.copy(), mean_step, []
    span = float(positions[-1] - positions[0])
    count = round(span / median) + 1
    step = span / (count - 1)
    targets = positions[0] + step * np.arange(count)
    note = (
        f"irregular slice spacing (gaps {gaps.min():.2f} to {gaps.max():.2f} mm, median "
        f"{median:.2f} mm"
        + (", missing slice(s)" if gaps.max() > 1.5 * median else "")
        + f"): resampled linearly from {len(positions)} to {count} slices {step:.3f} mm apart"
    )
    return targets, step, [note]


def interpolate_slices(stack: np.ndarray, positions: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Linear interpolation along the last axis.

    stack: (I, J, N) float32; positions: (N,) increasing mm; targets: (M,) mm within
    [positions[0], positions[-1]]. Returns (I, J, M) float32. A target that coincides with an
    input slice (within 1e-4 mm) copies it exactly.
    """
    out = np.empty((*stack.shape[:2], len(targets)), dtype=np.float32)
    for m, target in enumerate(targets):
        upper = int(np.searchsorted(positions, target - 1e-4))
        upper = min(max(upper, 0), len(positions) - 1)
        if abs(positions[upper] - target) <= 1e-4 or upper == 0:
            out[:, :, m] = stack[:, :, upper]
            continue
        lower = upper - 1
        weight = float((target - positions[lower]) / (positions[upper] - positions[lower]))
        out[:, :, m] = (1.0 - weight) * stack[:, :, lower] + weight * stack[:, :, upper]
    return out
