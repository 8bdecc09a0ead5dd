"""Training augmentations that change what bone looks like."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from spineseg.model.augment import darken_marrow
from spineseg.model.card import ModelCard
from spineseg.model.dataset import load_dataset
from spineseg.model.train import SliceSampler, TrainConfig

WINDOW = (-1000.0, 2000.0)


def _hu(normalised: np.ndarray) -> np.ndarray:
    return normalised * (WINDOW[1] - WINDOW[0]) + WINDOW[0]


def _normalised(hu: np.ndarray) -> np.ndarray:
    return ((hu - WINDOW[0]) / (WINDOW[1] - WINDOW[0])).astype(np.float32)


def test_dark_marrow_keeps_the_cortex_the_canal_and_the_soft_tissue() -> None:
    y, x = np.mgrid[:64, :64]
    body = np.hypot(y - 24, x - 32) <= 14  # a vertebral body
    canal = np.hypot(y - 48, x - 32) <= 5  # the canal behind it: not bone, not labelled
    hu = np.full((64, 64), 40.0)
    hu[body] = 250.0
    hu[body & ~ndimage.binary_erosion(body, iterations=2)] = 900.0  # the cortex, two voxels thick
    hu[canal] = 20.0
    stack = np.stack([_normalised(hu)] * 3)
    spine = np.stack([body] * 3)
    before = stack.copy()

    darken_marrow(stack, spine, 0.2, WINDOW)

    interior = ndimage.binary_erosion(body, iterations=2)
    np.testing.assert_allclose(_hu(stack[:, interior]), 50.0, atol=0.01)
    np.testing.assert_array_equal(stack[:, ~interior], before[:, ~interior])


def test_the_sampler_darkens_the_labelled_interior_when_asked(phantom_dataset: Path) -> None:
    _, cases = load_dataset(phantom_dataset)
    train = [c for c in cases if c.split == "train"]
    card = ModelCard(id="", architecture={}, window_hu=WINDOW)
    config = TrainConfig(patch_size=96, spine_slice_fraction=1.0, dark_marrow_prob=1.0,
                         dark_marrow_factor=(0.2, 0.2))
    sampler = SliceSampler(train, card, config, np.random.default_rng(0))
    densest = max(float(_hu(image).max()) for image in sampler.images)
    checked = 0
    for _ in range(10):
        image, label = sampler.sample()
        interior = ndimage.binary_erosion(label[0] > 0, iterations=2) & (_hu(image[1]) > 0)
        if interior.any():
            assert _hu(image[1][interior]).max() <= 0.2 * densest + 0.5
            checked += 1
    assert checked >= 5
    plain = SliceSampler(train, card, TrainConfig(patch_size=96, spine_slice_fraction=1.0),
                         np.random.default_rng(0))
    assert max(float(_hu(plain.sample()[0][1]).max()) for _ in range(10)) > 0.5 * densest


def test_coarse_voxels_fade_thin_bone_and_keep_broad_tissue() -> None:
    import torch

    from spineseg.model.augment import coarsen_plane

    image = torch.zeros(3, 96, 96)
    image[:, 48, 16:80] = 1.0  # a cortex one model voxel thick
    image[:, 8:40, 8:40] = 0.5  # broad soft tissue
    coarse = coarsen_plane(image, 0.25)

    assert coarse.shape == image.shape
    assert float(coarse[:, 40:56, 24:72].max()) < 0.35  # averaged over 4 x 4 voxels, then interpolated
    assert float(coarse[:, 48, 24:72].min()) > 0.1  # faded, not lost
    np.testing.assert_allclose(coarse[:, 16:32, 16:32].numpy(), 0.5, atol=1e-6)
    np.testing.assert_allclose(float(coarse.sum()), float(image.sum()), rtol=0.02)
    np.testing.assert_allclose(coarsen_plane(image, 1.0).numpy(), image.numpy(), atol=1e-6)
