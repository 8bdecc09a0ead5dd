"""The numpy / cc3d kernels of the segmentation path's post-processing give what SciPy's ndimage
gives (the reference here: the segmentation path no longer imports it)."""

import numpy as np
import pytest
from scipy import ndimage

from spineseg.model.postprocess import _dilate6, _label, _running_median


@pytest.fixture
def blobs():
    rng = np.random.default_rng(7)
    return ndimage.gaussian_filter(rng.random((23, 31, 17)), 1.2) > 0.52  # lumps of every size


def test_label_partitions_like_ndimage(blobs):
    ours, count = _label(blobs)
    ref, ref_count = ndimage.label(blobs, structure=np.ones((3, 3, 3), bool))
    assert count == ref_count > 5
    pairs = {(int(a), int(b)) for a, b in zip(ours[blobs], ref[blobs], strict=True)}
    assert len(pairs) == count  # one-to-one: the same components, maybe numbered otherwise
    assert (ours[~blobs] == 0).all()


def test_label_of_nothing():
    labelled, count = _label(np.zeros((4, 5, 6), bool))
    assert count == 0 and not labelled.any()


def test_dilate6_matches_binary_dilation(blobs):
    sparse = blobs & (np.random.default_rng(3).random(blobs.shape) > 0.9)
    sparse[0, 0, 0] = sparse[-1, -1, -1] = True  # corners: nothing wraps round
    assert np.array_equal(_dilate6(sparse), ndimage.binary_dilation(sparse, iterations=1))


@pytest.mark.parametrize("size", [1, 3, 5, 13])
def test_running_median_matches_median_filter(size):
    values = np.random.default_rng(size).normal(size=40) * 30
    values[10:14] = 500.0  # an outlier run the median must ignore
    assert np.allclose(_running_median(values, size), ndimage.median_filter(values, size=size, mode="nearest"))
