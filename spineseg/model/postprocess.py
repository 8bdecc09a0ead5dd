"""Post-processing of a probability map into a plausible binary spine mask."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def remove_small_components(
    mask: np.ndarray, voxel_ml: float, *, min_ml: float, min_fraction: float = 0.01
) -> np.ndarray:
    """Drop 3D (26-connected) components smaller than ``max(min_ml, min_fraction * largest)``.

    Vertebrae are separate components (discs are not spine), so a relative rule keeps every
    vertebra of a long scan while removing specks; ``min_ml`` protects scans of a few slices,
    whose components are all small, from losing everything: the largest is always kept.
    """
    labelled, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        return mask.astype(np.uint8)
    sizes = np.bincount(labelled.ravel())[1:] * voxel_ml
    limit = max(min_ml, min_fraction * float(sizes.max()))
    keep = np.zeros(count + 1, dtype=bool)
    keep[1:] = sizes >= limit
    keep[1 + int(np.argmax(sizes))] = True
    return keep[labelled].astype(np.uint8)
