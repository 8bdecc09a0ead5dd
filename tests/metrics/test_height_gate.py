"""The quality gate in front of the Genant grades: each reason, and grades only behind it."""

from __future__ import annotations

import pytest

from spineseg.metrics.height_gate import MAX_STEP_SHARE, gate_reasons, grade_vertebrae
from spineseg.metrics.vertebra_measures import VertebraMeasures


def m(heights=(25.0, 25.0, 25.0), *, body_ml=30.0, pieces=1, cut=False, step=1.0) -> VertebraMeasures:
    return VertebraMeasures(150.0, 150.0, 5.0, heights, body_ml, pieces, cut, step)


def test_a_normal_column_is_graded_and_a_wedge_flagged():
    names = ["L1", "L2", "L3"]
    rows = grade_vertebrae(names, [m(), m((16.0, 24.0, 25.0)), m()])
    assert [r["assessable"] for r in rows] == [True, True, True]
    assert rows[0]["genant_grade"] == 0 and rows[0]["not_assessable"] is None
    assert rows[1]["genant_grade"] == 2 and rows[1]["ha_hp"] == pytest.approx(0.64)


@pytest.mark.parametrize(("measures", "reason"), [
    (m(cut=True), "cut by the edge of the scan"),
    (m(pieces=2), "body in 2 pieces"),
    (m((25.0, None, 25.0)), "middle height not measurable"),
    (m(body_ml=0.0, heights=(None, None, None)), "no vertebral body"),
    (m(step=25.0 * MAX_STEP_SHARE + 0.5), "voxels too coarse"),
    (m((11.0, 11.0, 11.0), body_ml=14.0), "split or merged vertebra, or a vertebra plana"),
    (m((50.0, 50.0, 50.0), body_ml=60.0), "split or merged vertebra"),
    (m(body_ml=8.0), "body 8 mL against 30 mL"),
])
def test_each_reason_blanks_the_grade(measures, reason):
    rows = grade_vertebrae(["T11", "T12", "L1"], [m(), measures, m()])
    assert not rows[1]["assessable"] and reason in rows[1]["not_assessable"]
    assert rows[1]["genant_grade"] is None and rows[1]["height_flag"] is None and rows[1]["ha_hp"] is None
    if "against" not in reason and "split or merged" not in reason:
        # A vertebra failing on its own is no one's reference. (One failing against its
        # neighbours also fails them when they have no other neighbour: two cannot outvote.)
        assert rows[0]["assessable"] and rows[2]["assessable"]


def test_the_sacrum_and_a_lone_vertebra():
    reasons = gate_reasons(["L5", "sacrum"], [m(), m()])
    assert reasons[0] is None and "sacrum" in reasons[1]
    assert "no gradable neighbour" in gate_reasons(["L3"], [m((60.0, 60.0, 60.0))])[0]


def test_a_crush_is_read_against_gradable_neighbours_only():
    """A cut neighbour is no reference: Hp / neighbours uses the graded one alone."""
    rows = grade_vertebrae(["T11", "T12", "L1"], [m((12.0, 12.0, 12.0), cut=True), m((19.0, 19.0, 19.0)), m()])
    assert rows[1]["hp_neighbours"] == pytest.approx(19.0 / 25.0) and rows[1]["genant_grade"] == 1


def test_a_fracture_does_not_make_its_voxels_too_coarse():
    """The expected height is the larger of its own and its neighbours': a crushed body (or its
    neighbour) stays gradable on a grid that grades its neighbours."""
    step = 25.0 * MAX_STEP_SHARE - 0.1
    rows = grade_vertebrae(["T12", "L1", "L2"], [m(step=step), m((25.0, 25.0, 12.0), step=step), m(step=step)])
    assert all(r["assessable"] for r in rows) and rows[1]["genant_grade"] == 3
