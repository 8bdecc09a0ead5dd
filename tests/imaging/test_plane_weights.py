"""In-plane resampling without torch agrees with torch's bilinear interpolation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spineseg.imaging.resample import _resample_planes, plane_weights


def _torch_planes(block: np.ndarray, size: tuple[int, int], antialias: bool) -> np.ndarray:
    planes = torch.from_numpy(np.ascontiguousarray(np.moveaxis(block, 2, 0), dtype=np.float32)).unsqueeze(1)
    out = F.interpolate(planes, size=size, mode="bilinear", align_corners=False, antialias=antialias)
    return out[:, 0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("shape,size", [((64, 52, 3), (30, 25)), ((37, 41, 2), (60, 70)), ((50, 50, 4), (17, 50)),
                                         ((120, 90, 1), (119, 91))])
@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("layout", ["C", "F", "F int16"])  # F: NIfTI's order, as nibabel reads it
def test_planes_match_torch_bilinear(shape, size, antialias: bool, layout: str) -> None:
    block = np.random.default_rng(1).normal(0, 300, shape).astype(np.float32)
    if layout.startswith("F"):
        block = np.asfortranarray(block.astype(np.int16) if "int16" in layout else block)
    ours, theirs = _resample_planes(block, size, antialias), _torch_planes(block, size, antialias)
    assert ours.shape == theirs.shape == (*size, shape[2]) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=2e-5 * 1000, rtol=0)


def test_weights_are_a_partition_of_unity_and_a_constant_stays_constant() -> None:
    for n_in, n_out in ((512, 240), (73, 110), (10, 3)):
        rows = np.asarray(plane_weights(n_in, n_out).sum(axis=1)).ravel()
        np.testing.assert_allclose(rows, 1.0, atol=1e-6)
    block = np.full((40, 30, 2), -1000.0, dtype=np.float32)
    np.testing.assert_allclose(_resample_planes(block, (13, 9), True), -1000.0, atol=1e-3)


def test_a_strided_reoriented_view_is_read_as_it_is_seen() -> None:
    base = np.random.default_rng(2).normal(size=(30, 20, 6)).astype(np.float32)
    view = base[::-1, :, ::-1].transpose(1, 0, 2)  # what canonical_view can hand over
    np.testing.assert_allclose(_resample_planes(view, (10, 15), True),
                               _resample_planes(np.ascontiguousarray(view), (10, 15), True), atol=1e-6)
