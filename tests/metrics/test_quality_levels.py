"""The level checks: what ``metrics.level_anatomy`` measures on a synthetic column of vertebrae
(open or bridged discs, a rib marked on one side) and how ``metrics.quality_levels`` judges it."""

from __future__ import annotations

import numpy as np

from spineseg.metrics.level_anatomy import vertebra_anatomy
from spineseg.metrics.quality_levels import level_checks, vertebra_checks

AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])  # RAS, 1 mm


def column(n: int = 4, disc_mm: int = 6, body_mm: int = 20) -> tuple[np.ndarray, list[int]]:
    """Labels 1..n top to bottom (RAS: axis 2 up): a body 30 x 24 mm in front (axis 1 high) and
    an arch behind it reaching 20 mm to either side (transverse processes), discs between."""
    labels = np.zeros((100, 80, n * (body_mm + disc_mm) + disc_mm), dtype=np.int16)
    for i in range(n):
        top = labels.shape[2] - disc_mm - i * (body_mm + disc_mm)
        z = slice(top - body_mm, top)
        labels[35:65, 40:64, z] = i + 1  # body
        labels[30:70, 25:40, z.start + 5:z.stop - 5] = i + 1  # arch and transverse processes
    return labels, list(range(1, n + 1))


def test_open_discs_and_balanced_vertebrae_measure_as_such():
    labels, order = column()
    anatomy = vertebra_anatomy(labels, AFFINE, order)
    assert [a["disc_fill_below"] for a in anatomy[:-1]] == [0.0, 0.0, 0.0]
    assert anatomy[-1]["disc_fill_below"] is None
    assert all(a["lr_extent_ratio"] < 1.2 and abs(a["lr_imbalance"]) < 0.05 for a in anatomy)


def test_a_bridged_disc_and_a_rib_on_one_side_are_measured():
    labels, order = column()
    z_between = slice(labels.shape[2] - 6 - 20 - 6, labels.shape[2] - 6 - 20)  # the disc below vertebra 1
    labels[35:65, 40:64, z_between] = 2  # marked as bone, given to the vertebra below
    labels[65:95, 28:36, 60:66] = 3  # a 30 mm rib from vertebra 3's side
    anatomy = vertebra_anatomy(labels, AFFINE, order)
    assert anatomy[0]["disc_fill_below"] > 0.9 and anatomy[1]["disc_fill_below"] == 0.0
    assert anatomy[2]["lr_extent_ratio"] > 2.0 and anatomy[1]["lr_extent_ratio"] < 1.2


def entries(anatomy=None, centres=(0, 30, 60, 90, 120), complete=True):
    names = ["T10", "T11", "T12", "L1", "L2"][:len(centres)]
    return [{"name": n, "verse_id": 17 + i, "confidence": 0.9, "volume_ml": 40.0, "complete": complete,
             "centroid_mm": [0.0, 0.0, -float(c)], "anatomy": (anatomy or {}).get(n, {})}
            for i, (n, c) in enumerate(zip(names, centres, strict=True))]


def by_check(findings):
    return {f.check: f for f in findings}


def test_a_clean_column_passes():
    verdicts = vertebra_checks(entries())
    assert [v["verdict"] for v in verdicts] == ["ok"] * 5 and not any(v["withhold"] for v in verdicts)
    assert {f.status for f in level_checks(entries())} == {"ok"}


def test_bridged_disc_withholds_both_neighbours_and_is_reported():
    verdicts = vertebra_checks(entries({"T11": {"disc_fill_below": 0.95}}))
    assert [v["verdict"] for v in verdicts] == ["ok", "review", "review", "ok", "ok"]
    assert verdicts[1]["withhold"] and "disc below" in verdicts[1]["reasons"][0]
    assert "disc above" in verdicts[2]["reasons"][0]
    finding = by_check(level_checks(entries({"T11": {"disc_fill_below": 0.95}})))["bridged_discs"]
    assert finding.status == "info" and finding.value == 1.0  # THRESHOLDS.bridged_status, see docs/quality.md


def test_missing_vertebra_between_two_is_flagged():
    column_with_gap = entries(centres=(0, 30, 60, 120, 150))
    verdicts = vertebra_checks(column_with_gap)
    assert [v["verdict"] for v in verdicts] == ["ok", "ok", "review", "review", "ok"]
    finding = by_check(level_checks(column_with_gap))["missing_levels"]
    assert finding.status == "review" and "below T12" in finding.reason


def test_one_sided_vertebra_flagged_unless_the_column_is_cut_in_plane():
    lopsided = {"L1": {"lr_extent_ratio": 3.1}}
    verdicts = vertebra_checks(entries(lopsided))
    assert verdicts[3]["verdict"] == "review" and "one side" in verdicts[3]["reasons"][0]
    assert by_check(level_checks(entries(lopsided)))["lr_asymmetry"].status == "review"
    cut = vertebra_checks(entries(lopsided, complete=False), sides_cut=True)  # the sides are the crop's
    assert all(len(v["reasons"]) == 1 for v in cut)


def test_without_levels_the_level_checks_say_they_did_not_run():
    (finding,) = level_checks(None)
    assert finding.status == "info" and "not computed" in finding.reason
