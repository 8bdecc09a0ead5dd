"""The probability-margin uncertainty map and its per-vertebra figures."""

from __future__ import annotations

import numpy as np

from spineseg.imaging.volume import Volume
from spineseg.model.preprocess import back_to_input_grid, prepare_volume
from spineseg.model.uncertainty import margin_percent, uncertainty_on_input_grid, vertebra_uncertainty


def test_margin_is_100_on_the_fence_and_0_when_certain():
    p = np.array([0.0, 0.25, 0.5, 0.75, 1.0], dtype=np.float32)
    assert margin_percent(p).tolist() == [0, 50, 100, 50, 0]
    assert margin_percent(p).dtype == np.uint8


def test_map_on_the_input_grid_matches_the_resampled_probabilities():
    """An oblique storage order and a grid finer than the model's: the map equals the margin of
    the probabilities brought back the way the mask is, voxel for voxel."""
    rng = np.random.default_rng(0)
    affine = np.array([[0.0, 0.0, -2.0, 0.0], [-0.8, 0.0, 0.0, 0.0], [0.0, 0.7, 0.0, 0.0], [0, 0, 0, 1]])
    volume = Volume(rng.normal(0, 100, (30, 40, 12)).astype(np.float32), affine)
    prepared = prepare_volume(volume, (1.5, 1.5, 2.5), (-1000.0, 2000.0))
    model_grid = rng.random(prepared.image.shape).astype(np.float32)
    u = uncertainty_on_input_grid(model_grid, prepared)
    assert u.shape == volume.shape and u.dtype == np.uint8
    expected = margin_percent(back_to_input_grid(model_grid, prepared))
    assert np.abs(u.astype(int) - expected.astype(int)).max() <= 1  # float rounding only


def test_vertebra_figures():
    u = np.zeros((4, 4, 4), dtype=np.uint8, order="F")
    labels = np.zeros((4, 4, 4), dtype=np.int16)  # C order: the two layouts must still line up
    labels[0] = 20
    labels[1] = 21
    u[0, :2] = 80  # half of L1 at 80 %, half at 0
    u[1] = 10
    figures = vertebra_uncertainty(u, labels, [20, 21, 22])
    assert figures[0] == {"uncertainty_mean": 40.0, "uncertain_share": 0.5}
    assert figures[1] == {"uncertainty_mean": 10.0, "uncertain_share": 0.0}
    assert figures[2] == {"uncertainty_mean": None, "uncertain_share": None}
