"""A hollow vertebral body's interior: the holes an axial slice of a spine mask encloses that lie
where a body's cancellous bone lies, not where the spinal canal does.

One finder (``body_holes``) serves both the segmentation, which fills them
(``fill_body_holes``, in ``postprocess.refine_on_input_grid``), and the quality check that
reports a mask that is still a shell (``metrics.quality.check_hollow``), so the two can never
disagree about what a body's interior is.

A hollow body (the cortical shell marked, the cancellous interior not) is what the accuracy
issue found on a 3-slice series; the 3D ``postprocess.fill_enclosed`` cannot close it where the
scan's ends or a gap in an endplate open the cavity. What tells a body's interior from the
spinal canal, which a slice's mask also encloses, is where the hole lies: a body's interior
lies behind only the anterior cortex (1-3 mm thick), the canal behind the whole body (15-35
mm). The column's front is taken over neighbouring slices as well, so the canal of a slice
through an endplate's posterior rim (the body's front cut away by the disc) is not taken for a
body. Arrays are RAS views: axis 0 left-right, axis 1 posterior -> anterior, axis 2 head-foot.
"""

from __future__ import annotations

import warnings

import cc3d
import numpy as np

BODY_FRONT_MAX_MM = 5.0  # the thickest anterior cortex plus a voxel of partial volume
FRONT_WINDOW_MM = 10.0  # head-foot reach when finding the column's front (a vertebral body is 15-35 mm high)
BODY_HOLE_MAX_MM2 = 2500.0  # a lumbar body's whole cross-section is 15-20 cm^2
# Fat (-100 HU) or air enclosed by a mask is never marrow; dark marrow is: tptbox-lumbar's (P4)
# trabecular median is 66 HU, osteoporotic bodies go lower still.
BODY_HOLE_MIN_HU = 0.0


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The box of ``mask``'s voxels (None when it has none): one pass over the whole array (its
    axial projection), then passes over the projection's box only."""
    plane = mask.any(axis=2)
    ii, jj = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    if ii.size == 0:
        return None
    box_ij = (slice(int(ii[0]), int(ii[-1]) + 1), slice(int(jj[0]), int(jj[-1]) + 1))
    kk = np.flatnonzero(mask[box_ij].any(axis=(0, 1)))
    return (*box_ij, slice(int(kk[0]), int(kk[-1]) + 1))


def _column_front(inner: np.ndarray, reach: int) -> np.ndarray:
    """(I, K): the most anterior mask voxel of each (i, k) column, as the median over ``reach``
    slices either side (-1 where no slice of the window has mask in that column)."""
    n_j = inner.shape[1]
    front = np.where(inner.any(axis=1), n_j - 1 - np.argmax(inner[:, ::-1, :], axis=1), -1)
    padded = np.pad(front, ((0, 0), (reach, reach)), constant_values=-1)
    windows = np.lib.stride_tricks.sliding_window_view(padded.astype(float), 2 * reach + 1, axis=1)
    windows = np.where(windows < 0, np.nan, windows)  # slices without mask in that column do not vote
    with warnings.catch_warnings():  # a column with no mask in the whole window: -1, never a body
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nan_to_num(np.nanmedian(windows, axis=2), nan=-1.0)


def body_holes(
    mask: np.ndarray, hu: np.ndarray, spacing: tuple[float, float, float], *,
    max_front_mm: float = BODY_FRONT_MAX_MM, window_mm: float = FRONT_WINDOW_MM,
    max_area_mm2: float = BODY_HOLE_MAX_MM2, min_hu: float = BODY_HOLE_MIN_HU, min_area_mm2: float = 0.0,
) -> np.ndarray:
    """bool, ``mask``'s shape: the holes of each axial slice of ``mask`` that are a vertebral
    body's interior. A hole is background wholly enclosed by the mask within its slice, of
    ``min_area_mm2`` to ``max_area_mm2``, whose mean HU is at least ``min_hu`` and whose front
    edge lies at most ``max_front_mm`` behind the column's front in the same columns (the median
    over ``window_mm`` head-foot of each column's most anterior mask voxel). A slice's holes are
    found in that slice alone, so the first and last slices are judged like the others."""
    out = np.zeros(np.shape(mask), dtype=bool)
    found = _holes_in_box(mask, hu, spacing, max_front_mm=max_front_mm, window_mm=window_mm,
                          max_area_mm2=max_area_mm2, min_hu=min_hu, min_area_mm2=min_area_mm2)
    if found is not None:
        out[found[0]] = found[1]
    return out


def _holes_in_box(
    mask: np.ndarray, hu: np.ndarray, spacing: tuple[float, float, float], *, max_front_mm: float,
    window_mm: float, max_area_mm2: float, min_hu: float, min_area_mm2: float,
) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """``body_holes`` within the mask's box: (the box, the holes there); None for an empty mask."""
    mask = np.asarray(mask)
    box = _bounding_box(mask)
    if box is None:
        return None
    inner = np.array(mask[box], dtype=bool)  # a copy: slicing a reoriented view plane by plane is slow
    hu_box, holes = hu[box], np.zeros(inner.shape, dtype=bool)
    j_index = np.arange(inner.shape[1])
    column_front = _column_front(inner, int(window_mm // spacing[2]))
    pixel_mm2 = float(spacing[0]) * float(spacing[1])
    for k in range(inner.shape[2]):
        plane = inner[:, :, k]
        if not plane.any():
            continue
        background = cc3d.connected_components(~plane, connectivity=4)
        edge = np.unique(np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]]))
        stats = cc3d.statistics(background)
        for label in np.setdiff1d(np.unique(background[~plane]), edge):
            if not min_area_mm2 <= stats["voxel_counts"][label] * pixel_mm2 <= max_area_mm2:
                continue
            bi, bj = stats["bounding_boxes"][label]
            hole = background[bi, bj] == label
            if hu_box[bi, bj, k][hole].mean() < min_hu:
                continue
            columns = np.flatnonzero(hole.any(axis=1))
            hole_front = np.max(np.where(hole[columns], j_index[bj], -1), axis=1)
            depth_mm = np.median(column_front[bi.start + columns, k] - hole_front) * spacing[1]
            if depth_mm <= max_front_mm:
                holes[bi, bj, k] |= hole
    return box, holes


def fill_body_holes(
    mask: np.ndarray, hu: np.ndarray, spacing: tuple[float, float, float], *,
    max_front_mm: float = BODY_FRONT_MAX_MM, window_mm: float = FRONT_WINDOW_MM,
    max_area_mm2: float = BODY_HOLE_MAX_MM2, min_hu: float = BODY_HOLE_MIN_HU,
) -> np.ndarray:
    """``mask`` (bool copy) with its ``body_holes`` filled."""
    out = np.asarray(mask).astype(bool, copy=True)
    found = _holes_in_box(out, hu, spacing, max_front_mm=max_front_mm, window_mm=window_mm,
                          max_area_mm2=max_area_mm2, min_hu=min_hu, min_area_mm2=0.0)
    if found is not None:
        out[found[0]] |= found[1]
    return out
