"""VerSe identification rate and localisation distance on label maps of known geometry."""

from __future__ import annotations

import math

import numpy as np

from spineseg.metrics.levels import named_only, score_levels


def three_blocks(shift_mm: float = 0.0, spacing: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """L1, L2, L3 (VerSe 20..22) as 10-voxel blocks along z; ``shift_mm`` moves them all up."""
    labels = np.zeros((10, 10, 60), dtype=np.int16)
    step = round(shift_mm / spacing)
    for n, verse in enumerate((20, 21, 22)):
        z0 = 5 + n * 15 + step
        labels[2:8, 2:8, z0:z0 + 10] = verse
    return labels, np.diag([spacing, spacing, spacing, 1.0])


def test_identical_levels_are_all_identified():
    truth, affine = three_blocks()
    scores = score_levels(truth, truth, affine)
    assert scores.identification_rate == 1.0 and scores.localisation_mm == 0.0
    assert all(e["dice"] == 1.0 for e in scores.per_vertebra.values())


def test_a_shift_beyond_20_mm_or_nearer_another_vertebra_is_not_identified():
    truth, affine = three_blocks()
    near, _ = three_blocks(shift_mm=10.0)  # 10 mm off: within 20 mm, still closest to its own
    scores = score_levels(near, truth, affine)
    assert scores.identification_rate == 1.0
    assert math.isclose(scores.localisation_mm, 10.0)
    far, _ = three_blocks(shift_mm=22.0)  # 22 mm: beyond the radius (and nearer the next one up)
    assert score_levels(far, truth, affine).identification_rate == 0.0
    # Names off by one (L1 drawn where L2 is): nothing identified, although the masks overlap.
    off_by_one = truth.copy()
    off_by_one[truth > 0] += 1
    scores = score_levels(off_by_one, truth, affine)
    assert scores.identification_rate == 0.0
    assert scores.per_vertebra[20]["distance_mm"] is None  # nothing predicted as L1


def test_unnamed_vertebrae_claim_no_level():
    truth, affine = three_blocks()
    pred = truth.copy()
    pred[truth == 21] = 102
    scores = score_levels(named_only(pred), truth, affine)
    assert scores.per_vertebra[21]["identified"] is False
    assert math.isclose(scores.identification_rate, 2 / 3)
