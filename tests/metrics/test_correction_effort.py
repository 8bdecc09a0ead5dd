"""metrics.correction_effort on hand-made label maps with known changes."""

from __future__ import annotations

import numpy as np
import pytest

from spineseg.metrics.correction_effort import correction_effort
from spineseg.model.level_ids import label_name


def _spine() -> np.ndarray:
    labels = np.zeros((4, 4, 12), np.int16)
    labels[1:3, 1:3, 0:4] = 101   # unnamed 1: 16 voxels
    labels[1:3, 1:3, 4:8] = 102   # unnamed 2: 16 voxels (the lower half of one vertebra, split off)
    labels[1:3, 1:3, 8:12] = 22   # L3: 16 voxels
    return labels


def test_renames_merges_and_removals_are_counted() -> None:
    before = _spine()
    after = before.copy()
    after[before == 101] = 21   # named L2
    after[before == 102] = 22   # merged into L3
    after[0, 0, 0] = 22         # one voxel painted
    effort = correction_effort(before, after, label_name)
    assert effort["voxels_changed"] == 16 + 16 + 1
    assert effort["mask_voxels_changed"] == 1
    assert effort["labelled_voxels"] == 49
    assert effort["share_changed"] == pytest.approx(33 / 49)
    assert effort["levels_renamed"] == 2
    assert {(r["from"], r["to"]) for r in effort["renamed"]} == {("unnamed 1", "L2"), ("unnamed 2", "L3")}
    assert effort["merged"] == [{"into": "L3", "from": ["L3", "unnamed 2"]}]  # by label value: 22, 102
    assert effort["removed"] == []


def test_a_removed_vertebra_and_no_change() -> None:
    before = _spine()
    after = before.copy()
    after[before == 22] = 0
    effort = correction_effort(before, after, label_name)
    assert effort["removed"] == ["L3"] and effort["levels_renamed"] == 0
    assert effort["voxels_changed"] == effort["mask_voxels_changed"] == 16
    unchanged = correction_effort(before, before.copy())
    assert unchanged["voxels_changed"] == 0 and unchanged["share_changed"] == 0.0 and unchanged["merged"] == []
