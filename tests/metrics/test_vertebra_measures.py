"""Trabecular HU and body heights on synthetic vertebrae of known height and density."""

from __future__ import annotations

import numpy as np
import pytest

from spineseg.metrics.vertebra_measures import (
    density_flag,
    genant_grade,
    height_ratios,
    measure_vertebra,
    vertebral_body,
)

SPACING = 1.0


def vertebra(front_mm: float, back_mm: float, *, trabecular: float = 150.0, cortex: float = 700.0):
    """A body 40 mm wide (x), 30 mm deep (y, anterior = +y), whose height (z) falls linearly from
    ``back_mm`` at the posterior wall to ``front_mm`` at the anterior wall, a 2 mm cortex, and
    a posterior arch (pedicles + lamina + spinous process) behind it."""
    shape = (60, 80, 50)
    x, y, z = np.meshgrid(*(np.arange(n) * SPACING for n in shape), indexing="ij")
    y0, y1, zc = 40.0, 70.0, 25.0
    height = back_mm + (front_mm - back_mm) * (y - y0) / (y1 - y0)
    body = (np.abs(x - 30) <= 20) & (y >= y0) & (y <= y1) & (np.abs(z - zc) <= height / 2)
    inner = (np.abs(x - 30) <= 18) & (y >= y0 + 2) & (y <= y1 - 2) & (np.abs(z - zc) <= height / 2 - 2)
    pedicles = (np.abs(np.abs(x - 30) - 10) <= 3) & (y >= 25) & (y < y0) & (np.abs(z - zc) <= 5)
    lamina = (np.abs(x - 30) <= 13) & (y >= 20) & (y < 25) & (np.abs(z - zc) <= 5)
    spinous = (np.abs(x - 30) <= 2) & (y >= 2) & (y < 20) & (np.abs(z - zc) <= 4)
    region = body | pedicles | lamina | spinous
    ct = np.full(shape, 40.0, dtype=np.float32)
    ct[region] = cortex
    ct[inner] = trabecular
    ct[spinous] = 900.0  # a dense process: it must not leak into the trabecular ROI
    return region, ct, np.diag([SPACING, SPACING, SPACING, 1.0])


def test_body_excludes_the_posterior_elements():
    region, _, _ = vertebra(24.0, 24.0)
    body = vertebral_body(region, np.array([SPACING] * 3))
    ys = np.nonzero(body)[1]
    assert ys.min() >= 38  # nothing of the arch (y < 40) is left but the opening's rounding
    assert body.sum() > 0.85 * (41 * 31 * 25)


@pytest.mark.parametrize("trabecular", [90.0, 150.0, 260.0])
def test_trabecular_hu_of_a_known_density(trabecular):
    region, ct, affine = vertebra(24.0, 24.0, trabecular=trabecular)
    m = measure_vertebra(region, ct, affine)
    assert m.hu_mean == pytest.approx(trabecular, abs=2.0)
    assert m.hu_median == pytest.approx(trabecular, abs=0.5)
    assert m.roi_ml > 5.0


def test_heights_of_a_box_body():
    region, ct, affine = vertebra(24.0, 24.0)
    ha, hm, hp = measure_vertebra(region, ct, affine).heights_mm
    for h in (ha, hm, hp):
        assert h == pytest.approx(25.0, abs=1.5)  # 24 mm between voxel centres + one voxel


def test_a_wedge_fracture_is_flagged_by_its_height_ratio():
    region, ct, affine = vertebra(13.0, 25.0)
    ha, hm, hp = measure_vertebra(region, ct, affine).heights_mm
    assert ha < hm < hp
    assert ha == pytest.approx(16.0, abs=2.0)  # measured 10-25 % in from the anterior wall
    assert hp == pytest.approx(24.0, abs=2.0)
    normal = (25.0, 25.0, 25.0)
    rows = height_ratios([normal, (ha, hm, hp), normal])
    assert rows[1]["ha_hp"] == pytest.approx(ha / hp)
    assert 0.25 < 1 - ha / hp <= 0.40
    assert rows[1]["genant_grade"] == 2 and "moderate" in rows[1]["height_flag"]
    assert rows[0]["genant_grade"] == 0 and rows[0]["height_flag"] is None


def test_genant_and_pickhardt_thresholds():
    assert genant_grade(0.85) == (0, None)
    assert genant_grade(0.79)[0] == 1
    assert genant_grade(0.70)[0] == 2
    assert genant_grade(0.55)[0] == 3
    assert genant_grade(None) == (0, None)
    assert density_flag("L1", 100.0).startswith("osteoporosis range")
    assert density_flag("L1", 150.0).startswith("low")
    assert density_flag("L1", 200.0) is None
    assert density_flag("L2", 80.0) is None  # the thresholds were defined at L1 only


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.703125, 0.703125, 2.5), (0.8, 0.6, 1.5)])
def test_opening_by_distance_transforms_equals_the_ball_opening(spacing):
    """The body's opening is taken through two distance transforms (speed); it must equal the
    opening by the ball structure, including at the grid's edges (a vertebra's tight box)."""
    from scipy import ndimage as ndi

    from spineseg.metrics.vertebra_measures import _ball, _open_by_ball

    region, _, _ = vertebra(18.0, 26.0)
    region = region[::2, ::2, ::2]  # a smaller grid: the ball opening itself is slow
    rng = np.random.default_rng(7)
    rough = region ^ (rng.random(region.shape) < 0.005)  # ragged borders, holes, specks
    sp = np.asarray(spacing)
    box = tuple(slice(int(a.min()), int(a.max()) + 1) for a in np.nonzero(region))
    for mask in (rough, rough[box]):
        for radius in (1.6, 3.2, 4.6):
            expected = ndi.binary_opening(mask, structure=_ball(radius, sp))
            assert np.array_equal(_open_by_ball(mask, radius, sp), expected), (spacing, radius, mask.shape)
