"""Levels read from a label map a person made (a correction, issue 32), not computed.

A corrected label map already says which voxels are which vertebra (VerSe ids), so nothing is
separated or named here: each id present becomes one ``VertebraLevel`` with confidence 1 (a
person named it), ordered top to bottom as a spine is counted, so the same measurements and
summary as a run's levels (``services.levels``) can be computed from it and shown beside them.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from spineseg.model.level_ids import CRANIOCAUDAL, NAME_BY_VERSE
from spineseg.model.levels import Levels, VertebraLevel

PERSON_CONFIDENCE = 1.0


def levels_from_labels(labels: np.ndarray, affine: np.ndarray) -> Levels:
    """``labels`` (I, J, K; 0 background, VerSe ids) as ``Levels`` on the same grid.

    ``complete`` is false for a vertebra touching the grid's border (cut by the field of view).
    Raises ``ValueError`` for an id that is not a VerSe vertebra id."""
    labels = np.asarray(labels).astype(np.int16, copy=False)
    present = [int(v) for v in np.unique(labels) if v != 0]
    unknown = [v for v in present if v not in NAME_BY_VERSE]
    if unknown:
        raise ValueError(f"label values {unknown} are not VerSe vertebra ids")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    top = max(present, default=0)
    boxes = ndi.find_objects(labels, max_label=top)
    vertebrae = []
    for value in sorted(present, key=CRANIOCAUDAL.index):
        box = boxes[value - 1]
        region = labels[box] == value
        count = int(region.sum())
        corner = np.array([b.start for b in box])
        centroid = affine @ np.r_[np.argwhere(region).mean(axis=0) + corner, 1.0]
        touches = any(b.start == 0 or b.stop == n for b, n in zip(box, labels.shape, strict=True))
        vertebrae.append(VertebraLevel(value, NAME_BY_VERSE[value], value, PERSON_CONFIDENCE, count,
                                       count * voxel_ml, tuple(float(c) for c in centroid[:3]), not touches, None))
    reason = None if vertebrae else "the corrected labels hold no vertebra"
    return Levels(labels, vertebrae, bool(vertebrae), ["named by a person (correction)"] if vertebrae else [], reason)
