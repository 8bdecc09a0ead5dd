"""How much a person changed a label map (the effort of a correction, issue 32).

Pure: two label maps of the same grid (0 background, one value per vertebra) in, a dict out.
``voxels_changed`` counts voxels whose label differs (a renamed vertebra changes all of its
voxels); ``mask_voxels_changed`` only those that entered or left the spine; ``share_changed`` is
``voxels_changed`` over the voxels labelled in either map. A vertebra of ``before`` is *renamed*
when most of its voxels carry one other non-zero label after, *removed* when most became
background; two or more vertebrae whose voxels went mostly to one label were *merged*.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def correction_effort(before: np.ndarray, after: np.ndarray, name: Callable[[int], str] = str) -> dict[str, Any]:
    """The effort of changing ``before`` into ``after`` (same shape); ``name`` turns a label
    value into the name reported (default: the number)."""
    if before.shape != after.shape:
        raise ValueError(f"label maps of different shapes: {before.shape} and {after.shape}")
    before = np.asarray(before).astype(np.int32, copy=False)
    after = np.asarray(after).astype(np.int32, copy=False)
    labelled = (before > 0) | (after > 0)
    changed = int(np.count_nonzero(before != after))
    mask_changed = int(np.count_nonzero((before > 0) != (after > 0)))
    union = int(np.count_nonzero(labelled))
    pairs_before, pairs_after = before[labelled], after[labelled]
    renamed, removed, went_to = [], [], {}
    for value in (int(v) for v in np.unique(pairs_before) if v > 0):
        counts = np.bincount(pairs_after[pairs_before == value])
        target = int(np.argmax(counts))
        went_to[value] = target
        if target == 0:
            removed.append(name(value))
        elif target != value:
            renamed.append({"from": name(value), "to": name(target)})
    merged: dict[int, list[int]] = {}
    for value, target in went_to.items():
        if target:
            merged.setdefault(target, []).append(value)
    return {
        "voxels_changed": changed,
        "mask_voxels_changed": mask_changed,
        "labelled_voxels": union,
        "share_changed": changed / union if union else 0.0,
        "levels_renamed": len(renamed),
        "renamed": renamed,
        "removed": removed,
        "merged": [{"into": name(t), "from": [name(v) for v in sorted(vs)]} for t, vs in merged.items() if len(vs) > 1],
    }
