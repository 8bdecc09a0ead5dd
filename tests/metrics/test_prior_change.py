"""The change since a prior, on two runs' summaries built by hand: matching by level and
position, what is compared behind the gates, and each published flag."""

from __future__ import annotations

import numpy as np
import pytest

from spineseg.metrics.prior_change import (
    HEIGHT_LEAST_SIGNIFICANT_CHANGE_MM,
    HEIGHT_LOSS_MM,
    HU_LEAST_SIGNIFICANT_CHANGE,
    POSITION_SHARE,
    compare_with_prior,
)

NAMES = ["T12", "L1", "L2", "L3", "L4", "L5"]


def vertebra(name, centre, *, heights=(27.0, 26.0, 28.0), hu=120.0, grade=0, assessable=True, verse_id=1,
             confidence=0.95, complete=True):
    ha, hm, hp = heights
    return {"name": name, "verse_id": verse_id, "confidence": confidence, "complete": complete,
            "centroid_mm": [float(c) for c in centre],
            "measures": {"hu_mean": hu, "height_anterior_mm": ha, "height_middle_mm": hm, "height_posterior_mm": hp,
                         "genant_grade": grade if assessable else None, "assessable": assessable,
                         "not_assessable": None if assessable else "body in 2 pieces"}}


def column(moved=None, **changed):
    """A straight lumbar column 32 mm apart; ``moved``: a function of the centroids (another table
    position or posture); ``changed``: per name, keyword changes of ``vertebra``."""
    centres = np.array([[0.0, 80.0 + 3 * k, 400.0 - 32.0 * k] for k in range(len(NAMES))])
    if moved is not None:
        centres = moved(centres)
    return {"intensity": "hu", "quality": {"verdict": "ok"},
            "vertebrae": [vertebra(n, c, **changed.get(n, {})) for n, c in zip(NAMES, centres, strict=True)]}


def elsewhere(centres):
    """The patient 60 mm further in, 14 mm to the side and turned 8 degrees about the head-foot
    axis: nothing anatomical changed."""
    turn = np.deg2rad(8.0)
    rotation = np.array([[np.cos(turn), -np.sin(turn), 0], [np.sin(turn), np.cos(turn), 0], [0, 0, 1]])
    return centres @ rotation.T + [14.0, -5.0, 60.0]


def by_name(comparison):
    return {v.name: v for v in comparison.vertebrae}


def test_a_follow_up_with_nothing_changed_flags_nothing_wherever_the_patient_lay():
    result = compare_with_prior(column(), column(elsewhere), interval_days=400)
    assert result.flagged == [] and result.reason is None
    assert [v.name for v in result.vertebrae if v.compared] == NAMES
    assert all(v.position.share < 0.01 for v in result.vertebrae)
    assert result.to_json()["interval_days"] == 400


def test_a_crushed_vertebra_is_the_only_one_flagged_with_its_changes():
    now = column(elsewhere, L2={"heights": (17.0, 18.0, 19.0), "grade": 2})
    result = compare_with_prior(column(), now, interval_days=365)
    assert result.flagged == ["L2"]
    l2 = by_name(result)["L2"]
    assert set(l2.flags) == {"height_loss", "incident_fracture"}
    assert l2.height_change_mm == (-10.0, -8.0, -9.0)
    assert l2.height_change_pct == pytest.approx((-37.0, -30.8, -32.1), abs=0.05)
    assert (l2.grade_prior, l2.grade_now) == (0, 2)
    row = l2.to_json()
    assert row["anterior_change_mm"] == -10.0 and row["flags"]["incident_fracture"] == "Genant grade 0 -> 2"


def test_height_loss_needs_both_the_share_and_the_millimetres():
    """20 % of a 15 mm body is 3 mm: under the 4 mm of the definition; 4 mm of a 27 mm body is
    15 %: under its 20 %."""
    small = column(L1={"heights": (15.0, 15.0, 15.0)})
    result = compare_with_prior(small, column(L1={"heights": (11.5, 15.0, 15.0)}))
    assert result.flagged == []
    result = compare_with_prior(column(), column(L1={"heights": (27.0 - HEIGHT_LOSS_MM, 26.0, 28.0)}))
    assert result.flagged == []
    result = compare_with_prior(column(), column(L1={"heights": (18.0, 26.0, 28.0)}))
    assert result.flagged == ["L1"] and "anterior" in by_name(result)["L1"].flags["height_loss"]


def test_height_and_grade_flags_need_a_loss_beyond_the_measurement_error():
    """A grade that rose with a height loss within the measured least significant change of the
    heights (ratios near a grade's edge move with the measurement): no flag, and the reason says
    so; the same grade with a loss beyond it is flagged."""
    within = 27.0 - (HEIGHT_LEAST_SIGNIFICANT_CHANGE_MM - 0.5)
    result = compare_with_prior(column(), column(L1={"heights": (within, 26.0, 28.0), "grade": 1}))
    l1 = by_name(result)["L1"]
    assert result.flagged == [] and l1.grade_now == 1
    assert "within the measurement error" in " ".join(l1.reasons)
    beyond = 27.0 - (HEIGHT_LEAST_SIGNIFICANT_CHANGE_MM + 0.5)
    result = compare_with_prior(column(), column(L1={"heights": (beyond, 26.0, 28.0), "grade": 1}))
    assert by_name(result)["L1"].flags["incident_fracture"] == "Genant grade 0 -> 1"


def test_progression_is_a_higher_grade_of_a_fractured_vertebra():
    prior = column(L3={"grade": 1, "heights": (24.0, 26.0, 28.0)})
    result = compare_with_prior(prior, column(L3={"grade": 2, "heights": (16.0, 24.0, 28.0)}))
    assert by_name(result)["L3"].flags == {"progression": "Genant grade 1 -> 2",
                                           "height_loss": "anterior height lost (down to -33 %)"}
    assert compare_with_prior(column(L3={"grade": 2}), column(L3={"grade": 1})).flagged == []


def test_density_loss_beyond_the_least_significant_change():
    limit = HU_LEAST_SIGNIFICANT_CHANGE
    assert compare_with_prior(column(), column(L4={"hu": 120.0 - limit + 0.5})).flagged == []
    result = compare_with_prior(column(), column(L4={"hu": 120.0 - limit - 0.5}))
    assert list(by_name(result)["L4"].flags) == ["density_loss"]
    scaled = column(L4={"hu": 60.0}) | {"intensity": "scaled"}
    result = compare_with_prior(column(), scaled)
    assert result.flagged == [] and "Hounsfield" in " ".join(by_name(result)["L4"].reasons)


def test_heights_behind_the_gate_of_both_runs():
    """Not assessable in the prior: heights and grades are not compared (no flag from a grade
    that was never given), and the page says why."""
    prior = column(L1={"assessable": False})
    now = column(L1={"heights": (15.0, 15.0, 15.0), "grade": 3})
    l1 = by_name(compare_with_prior(prior, now))["L1"]
    assert l1.compared and not l1.flags and l1.height_change_mm == (None, None, None)
    assert any("not assessable prior (body in 2 pieces)" in r for r in l1.reasons)
    assert l1.hu_change == 0.0  # the HU has no gate of its own


def test_a_vertebra_cut_by_either_scan_is_neither_compared_nor_a_reference():
    """Its centroid is the visible part's: 20 mm off, it must not make its neighbours fail."""
    now = column(elsewhere, T12={"complete": False, "assessable": False, "hu": 60.0})
    now["vertebrae"][0]["centroid_mm"][2] -= 20.0
    result = compare_with_prior(column(), now)
    rows = by_name(result)
    assert not rows["T12"].compared and "cut by the edge" in rows["T12"].reasons[0]
    assert result.flagged == [] and all(rows[n].compared for n in NAMES[1:])


def test_withheld_names_are_not_compared():
    now = column(L2={"verse_id": None, "confidence": 0.0, "heights": (10.0, 10.0, 10.0), "grade": 3})
    now["vertebrae"][2]["name"] = "unnamed 3"
    result = compare_with_prior(column(), now)
    assert result.flagged == []
    rows = by_name(result)
    assert not rows["unnamed 3"].compared and "withheld" in rows["unnamed 3"].reasons[0]
    assert not rows["L2"].compared and "prior only" in rows["L2"].reasons[0]
    old_run = column(L2={"confidence": 0.3})  # a name from before names were withdrawn below 0.5
    assert "L2" not in compare_with_prior(column(), old_run).to_json()["compared"]


def test_a_name_that_slipped_one_level_fails_the_position_check():
    """The follow-up calls its L4 'L3' (and its L3 has no name): carried over from its
    neighbours, the prior's L3 lands a whole vertebra away."""
    now = column(elsewhere, L3={"heights": (14.0, 14.0, 14.0), "grade": 3})
    vertebrae = now["vertebrae"]
    vertebrae[3] |= {"name": "unnamed 1", "verse_id": None, "confidence": 0.0}
    vertebrae[4] = vertebrae[4] | {"name": "L3"}
    result = compare_with_prior(column(), now)
    l3 = by_name(result)["L3"]
    assert not l3.compared and l3.position.share > POSITION_SHARE and "position check failed" in l3.reasons[0]
    assert result.flagged == []
    assert all(by_name(result)[n].compared for n in ("T12", "L1", "L2", "L5"))


def test_a_run_that_is_not_assessable_is_compared_nowhere():
    now = column() | {"quality": {"verdict": "not assessable"}}
    result = compare_with_prior(column(), now)
    assert result.vertebrae == [] and "not assessable" in result.reason
    assert "no vertebrae" in compare_with_prior(column(), {"vertebrae": []}).reason


def test_a_vertebra_that_grew_is_not_flagged():
    """Heights up by more than the measurement error: two different vertebrae under one name (a
    slip in both scans alike passes the position check) or a failed measurement; its HU loss
    is no flag either."""
    now = column(L2={"heights": (27.0 + HEIGHT_LEAST_SIGNIFICANT_CHANGE_MM + 1, 26.0, 18.0), "grade": 2,
                     "hu": 120.0 - HU_LEAST_SIGNIFICANT_CHANGE - 10})
    result = compare_with_prior(column(), now)
    l2 = by_name(result)["L2"]
    assert result.flagged == [] and l2.suspect and l2.to_json()["suspect"]
    assert "does not grow" in " ".join(l2.reasons) and l2.hu_change is not None


def test_withheld_measurements_are_not_compared():
    """A vertebra whose measurements its quality checks withheld (no HU, not assessable, with
    the reason) is compared nowhere, and says why."""
    prior = column()
    prior["vertebrae"][2]["measures"] |= {"hu_mean": None, "assessable": False, "genant_grade": None,
                                          "not_assessable": "withheld: reaches too far", "withheld": "reaches too far"}
    result = compare_with_prior(prior, column(L2={"heights": (12.0, 12.0, 12.0), "grade": 3, "hu": 40.0}))
    l2 = by_name(result)["L2"]
    assert result.flagged == [] and l2.hu_change is None
    assert any("withheld in the prior (reaches too far)" in r for r in l2.reasons)
