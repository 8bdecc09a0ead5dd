"""Anchors that know what they cannot see, and abstention below the naming confidence (issue 27
items 2 and 3), on synthetic spines (tests/model/synthetic_spine.py)."""

from __future__ import annotations

import numpy as np
from synthetic_spine import RIB_LR_MM, build_spine

from spineseg.model import level_anchors, levels
from spineseg.model.level_ids import UNNAMED_BASE, VERSE_BY_NAME
from spineseg.model.levels import _abstain, vertebra_levels

NAMES = ["T11", "T12", "L1", "L2"]


def test_ribs_are_not_used_where_the_view_is_too_narrow_to_show_them(monkeypatch):
    # 96 mm wide, centred: about 47 mm beside the column, less than RIB_VIEW_MM (50 mm).
    spine = build_spine(NAMES, ribs={"T11", "T12"}, width_mm=96.0, lr_mm=RIB_LR_MM)
    result = vertebra_levels(spine.mask, spine.ct, spine.affine)
    assert not result.named and result.anchors == []
    assert [v.name for v in result.vertebrae] == ["unnamed 1", "unnamed 2", "unnamed 3", "unnamed 4"]
    assert "ribs not assessable" in result.reason and "47 mm beside the column" in result.reason
    assert all(not v.features.ribs_assessable for v in result.vertebrae)
    # The ribs' stumps are still read as rib-bearing in that view: the rule alone withholds them.
    monkeypatch.setattr(level_anchors, "RIB_VIEW_MM", 40.0)
    loose = vertebra_levels(spine.mask, spine.ct, spine.affine)
    assert [v.name for v in loose.vertebrae] == NAMES


def test_a_wide_view_shows_the_ribs():
    spine = build_spine(NAMES, ribs={"T11", "T12"}, lr_mm=RIB_LR_MM)
    result = vertebra_levels(spine.mask, spine.ct, spine.affine)
    assert [v.name for v in result.vertebrae] == NAMES
    assert "not assessable" not in result.reason
    assert min(result.vertebrae[0].features.view_mm) > 100.0


def test_at_coarse_left_right_voxels_a_faint_rib_below_the_last_rib_withholds_the_anchor():
    # 2 mm left-right (coarser than RIB_MAX_LR_MM): a clear rib-free L1 (nothing lateral) still
    # marks T12.
    spine = build_spine(NAMES, ribs={"T11", "T12"}, lr_mm=2.0)
    clear = vertebra_levels(spine.mask, spine.ct, spine.affine)
    assert [v.name for v in clear.vertebrae] == NAMES
    # A thin bone (one voxel across, as a lowest rib fades to at coarse voxels) touching L1: too faint to
    # be rib-bearing, too much to call L1 rib-free, so T12 is not told.
    l1 = np.argwhere(spine.truth == VERSE_BY_NAME["L1"])
    k = int(np.round(l1[:, 2].mean()))
    j = int(l1[:, 1].min()) + 8  # behind the body's centre
    ct = spine.ct.copy()
    ct[:, j, k] = np.where(spine.truth[:, j, k] == 0, 450.0, ct[:, j, k])
    faint = vertebra_levels(spine.mask, ct, spine.affine)
    assert not faint.named
    assert "at voxels coarser than 1.5 mm left-right the vertebra below the last rib-bearing one" in faint.reason
    contact = max(faint.vertebrae[2].features.contact_ml)
    assert level_anchors.RIB_CLEAR_ML <= contact < level_anchors.RIB_CONTACT_ML


def test_the_sacrum_is_not_used_without_the_ilia_in_view():
    spine = build_spine(["L4", "L5"], sacrum=True, width_mm=110.0, lr_mm=RIB_LR_MM)
    result = vertebra_levels(spine.mask, spine.ct, spine.affine)
    assert "sacrum" not in result.anchors
    assert "sacrum not assessable" in result.reason and "60 mm needed" in result.reason
    wide = build_spine(["L4", "L5"], sacrum=True, lr_mm=RIB_LR_MM)
    assert "sacrum" in vertebra_levels(wide.mask, wide.ct, wide.affine).anchors


def test_a_name_below_the_naming_confidence_is_withdrawn():
    threshold = levels.MIN_NAME_CONFIDENCE
    names, withdrawn = _abstain(["T12", "L1", None], [threshold, threshold - 0.01, 0.0])
    assert names == ["T12", None, None] and withdrawn == 1


def test_vertebrae_below_the_threshold_are_numbered_unnamed_with_the_reason(monkeypatch):
    # Named from T12 alone: T12 0.75, T11 and L1 0.7275, L2 0.706.
    monkeypatch.setattr(levels, "MIN_NAME_CONFIDENCE", 0.72)
    spine = build_spine(NAMES, ribs={"T11", "T12"}, lr_mm=RIB_LR_MM)
    result = vertebra_levels(spine.mask, spine.ct, spine.affine)
    assert [v.name for v in result.vertebrae] == ["T11", "T12", "L1", "unnamed 1"]
    last = result.vertebrae[-1]
    assert last.label == UNNAMED_BASE + 1 and last.verse_id is None and last.confidence == 0.0
    assert "1 vertebra(e) left unnamed: naming confidence below 0.72" in result.reason
    assert "beyond C1" not in result.reason
    monkeypatch.setattr(levels, "MIN_NAME_CONFIDENCE", 0.8)
    none = vertebra_levels(spine.mask, spine.ct, spine.affine)
    assert not none.named and all(v.verse_id is None for v in none.vertebrae)
