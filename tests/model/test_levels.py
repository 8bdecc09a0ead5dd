"""Splitting and naming vertebrae on synthetic spines (tests/model/synthetic_spine.py)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from synthetic_spine import RIB_LR_MM
from synthetic_spine import build_spine as _build_spine

from spineseg.metrics.levels import named_only, score_levels
from spineseg.model.level_ids import UNNAMED_BASE, VERSE_BY_NAME, colour, snomed_code, totalsegmentator_id
from spineseg.model.levels import vertebra_levels


def build_spine(names, **kwargs):
    """The synthetic spine at left-right voxels fine enough for the ribs to be read."""
    return _build_spine(names, **{"lr_mm": RIB_LR_MM, **kwargs})


FULL = ["T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5"]


@pytest.fixture(scope="module")
def full_spine():
    return build_spine(FULL, ribs={"T10", "T11", "T12"}, sacrum=True)


def test_ribs_and_sacrum_name_every_vertebra_with_high_confidence(full_spine):
    levels = vertebra_levels(full_spine.mask, full_spine.ct, full_spine.affine)
    assert [v.name for v in levels.vertebrae] == [*FULL, "sacrum"]
    assert levels.named and set(levels.anchors) == {"sacrum", "last rib-bearing vertebra (T12)"}
    assert levels.reason is None
    assert all(v.confidence >= 0.85 for v in levels.vertebrae)
    scores = score_levels(named_only(levels.labels), full_spine.truth, full_spine.affine)
    assert scores.identification_rate == 1.0
    assert scores.localisation_mm < 2.0
    assert min(e["dice"] for e in scores.per_vertebra.values()) > 0.95
    assert all(v.complete for v in levels.vertebrae)


def test_without_anchors_vertebrae_are_separated_numbered_and_unnamed():
    spine = build_spine(["L2", "L3", "L4"])
    levels = vertebra_levels(spine.mask, spine.ct, spine.affine)
    assert not levels.named
    assert [v.label for v in levels.vertebrae] == [UNNAMED_BASE + 1, UNNAMED_BASE + 2, UNNAMED_BASE + 3]
    assert [v.name for v in levels.vertebrae] == ["unnamed 1", "unnamed 2", "unnamed 3"]
    assert all(v.verse_id is None and v.confidence == 0.0 for v in levels.vertebrae)
    assert "no anchor" in levels.reason
    # Separated all the same: each unnamed label covers exactly one true vertebra.
    for v, true_id in zip(levels.vertebrae, (21, 22, 23), strict=True):
        region = levels.labels == v.label
        assert np.mean(spine.truth[region] == true_id) > 0.95


def test_ribs_alone_name_from_t12_and_say_so():
    spine = build_spine(["T11", "T12", "L1", "L2"], ribs={"T11", "T12"})
    levels = vertebra_levels(spine.mask, spine.ct, spine.affine)
    assert [v.name for v in levels.vertebrae] == ["T11", "T12", "L1", "L2"]
    assert "last rib-bearing" in levels.reason
    conf = {v.name: v.confidence for v in levels.vertebrae}
    assert conf["T12"] > conf["L2"]  # confidence falls with the distance from the anchor


def test_ribs_everywhere_without_a_rib_free_vertebra_is_no_anchor():
    spine = build_spine(["T8", "T9", "T10"], ribs={"T8", "T9", "T10"})
    levels = vertebra_levels(spine.mask, spine.ct, spine.affine)
    assert not levels.named and len(levels.vertebrae) == 3


def test_a_vertebra_cut_by_the_field_of_view_is_named_and_marked_incomplete():
    spine = build_spine(["T11", "T12", "L1", "L2"], ribs={"T11", "T12"}, cut_top_mm=14.0)
    levels = vertebra_levels(spine.mask, spine.ct, spine.affine)
    assert [v.name for v in levels.vertebrae] == ["T11", "T12", "L1", "L2"]
    assert [v.complete for v in levels.vertebrae] == [False, True, True, True]


def test_any_axis_order_gives_the_same_levels(full_spine):
    """The same scan stored in another axis order (P-I-R, like tptbox-lumbar)."""
    ornt = nib.orientations.axcodes2ornt(("P", "I", "R"))
    ras = nib.orientations.axcodes2ornt(("R", "A", "S"))
    transform = nib.orientations.ornt_transform(ras, ornt)
    ct = nib.orientations.apply_orientation(full_spine.ct, transform)
    mask = nib.orientations.apply_orientation(full_spine.mask, transform)
    affine = full_spine.affine @ nib.orientations.inv_ornt_aff(transform, full_spine.ct.shape)
    levels = vertebra_levels(mask, ct, affine)
    assert levels.labels.shape == ct.shape
    reference = vertebra_levels(full_spine.mask, full_spine.ct, full_spine.affine)
    assert [v.name for v in levels.vertebrae] == [v.name for v in reference.vertebrae]
    for a, b in zip(levels.vertebrae, reference.vertebrae, strict=True):
        assert np.allclose(a.centroid_mm, b.centroid_mm, atol=1e-6)
    truth = nib.orientations.apply_orientation(full_spine.truth, transform)
    assert score_levels(named_only(levels.labels), truth, affine).identification_rate == 1.0


def test_totalsegmentator_convention_and_identities(full_spine):
    levels = vertebra_levels(full_spine.mask, full_spine.ct, full_spine.affine)
    ts = levels.in_convention("totalsegmentator")
    assert set(np.unique(ts)) == {0, 25, 27, 28, 29, 30, 31, 32, 33, 34}  # sacrum, L5..L1, T12..T10
    assert np.array_equal(ts == 31, levels.labels == VERSE_BY_NAME["L1"])
    with pytest.raises(ValueError, match="unknown levels convention"):
        levels.in_convention("itk")
    assert totalsegmentator_id(1) == 50 and totalsegmentator_id(25) == 0 and totalsegmentator_id(101) == 101
    assert snomed_code(20) == ("66794005", "L1 vertebra") and snomed_code(26)[0] == "54735007"
    assert snomed_code(28)[0] == "51282000"
    assert colour(19) != colour(20) != colour(21)


def test_empty_mask_has_no_vertebrae_and_says_why():
    levels = vertebra_levels(np.zeros((20, 20, 20), np.uint8), np.zeros((20, 20, 20), np.float32), np.eye(4))
    assert levels.vertebrae == [] and not levels.named and "no spine" in levels.reason
    with pytest.raises(ValueError, match="differs"):
        vertebra_levels(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), np.eye(4))


def test_a_mask_larger_than_any_spine_is_not_split_and_says_so():
    """An untrained model's mask over much of the body: refused at once, with its volume."""
    mask = np.zeros((80, 80, 40), np.uint8)
    mask[5:75, 5:75, :] = 1  # 70 x 70 x 40 voxels of 2 x 2 x 3 mm: 2.35 L
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    levels = vertebra_levels(mask, np.full(mask.shape, 300.0, np.float32), affine)
    assert "larger than any spine" not in (levels.reason or "")  # under the limit: it is tried
    mask[:, :, :] = 1  # 80 x 80 x 40: 3.07 L
    levels = vertebra_levels(mask, np.full(mask.shape, 300.0, np.float32), affine)
    assert levels.vertebrae == [] and "3072 mL" in levels.reason and "larger than any spine" in levels.reason
