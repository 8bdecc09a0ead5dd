"""Running the network on a box around the spine (``spineseg.model.spine_box``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from spineseg.imaging.volume import Provenance, Volume
from spineseg.model.card import size_multiple
from spineseg.model.inference import (
    BODY_HU,
    LoadedModel,
    normalised_level,
    predict_around_spine,
    predict_model_grid,
    segment,
)
from spineseg.model.preprocess import EDGE_MARGIN, prepare_volume
from spineseg.model.spine_box import (
    BOX_MARGIN,
    MAX_BOX_FRACTION,
    air_margin,
    body_box,
    box_fraction,
    local_spine_box,
    spine_box,
    survey_slices,
    within,
)
from tests.conftest import make_phantom


class LocalBlur(torch.nn.Module):
    """A network whose output at a voxel depends on its 5 x 5 neighbourhood only: the logit of
    the centre channel's local mean (bone, 700 HU, maps above 0.5; soft tissue below)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.nn.functional.avg_pool2d(x[:, 1:2], 5, stride=1, padding=2, count_include_pad=True)
        return torch.logit(mean.clamp(1e-4, 1 - 1e-4))


def _local_model(tiny_model: Path, norm: str = "batch") -> LoadedModel:
    loaded = LoadedModel.from_folder(tiny_model, runtime="torch")
    loaded.network = LocalBlur()
    loaded.card.architecture = loaded.card.architecture | {"norm": norm}
    return loaded


def test_survey_slices_cover_both_ends_at_a_fixed_step() -> None:
    assert survey_slices(10).tolist() == [0, 4, 8, 9]
    assert survey_slices(9).tolist() == [0, 4, 8]


def test_the_box_grows_by_the_margin_and_starts_on_the_stride_grid() -> None:
    found = np.zeros((300, 260, 3), dtype=bool)
    found[150:170, 100:141, 1] = True
    found[160:175, 120:130, 2] = True
    rows, cols = spine_box(found, stride=16, margin=BOX_MARGIN)
    assert rows == slice((150 - BOX_MARGIN) // 16 * 16, 175 + BOX_MARGIN)
    assert cols == slice((100 - BOX_MARGIN) // 16 * 16, 141 + BOX_MARGIN)
    assert rows.start % 16 == 0 and cols.start % 16 == 0
    found[5, 5, 0] = True  # clipped at the plane's edges
    assert spine_box(found, stride=16, margin=BOX_MARGIN)[0] == slice(0, 175 + BOX_MARGIN)


def test_no_box_without_a_spine_or_when_it_would_cover_most_of_the_plane() -> None:
    found = np.zeros((100, 100, 2), dtype=bool)
    assert spine_box(found, stride=16) is None
    found[10, 10, 0] = found[95, 95, 1] = True  # the box: rows and columns 0 (the stride grid) to 96
    assert MAX_BOX_FRACTION * 100 * 100 < 96 * 96 and spine_box(found, stride=16, margin=0) is None
    found[95, 95, 1], found[60, 60, 1] = False, True  # 64 x 64 = 41 % of the plane: a box
    assert spine_box(found, stride=16, margin=0) == (slice(0, 61), slice(0, 61))


def test_each_batch_gets_the_box_of_the_survey_slices_around_it() -> None:
    survey = survey_slices(33)  # 0, 4, ..., 32
    found = np.zeros((300, 260, survey.size), dtype=bool)
    found[100:120, 100:130, survey < 16] = True  # the spine moves across the plane half way
    found[180:200, 100:130, survey >= 16] = True
    found[290, 250, survey.tolist().index(28)] = True  # a stray bright voxel on one survey slice
    first = local_spine_box(found, survey, np.arange(1, 8), stride=16, margin=8)  # surveys 0-12
    assert first == (slice(80, 128), slice(80, 138))
    middle = local_spine_box(found, survey, np.arange(13, 16), stride=16, margin=8)  # 12-16 + 20
    assert middle == (slice(80, 208), slice(80, 138))
    last = local_spine_box(found, survey, np.arange(29, 32), stride=16, margin=8)  # 28 and 32
    assert last == (slice(160, 299), slice(80, 259))
    assert spine_box(found, stride=16, margin=8) == (slice(80, 299), slice(80, 259))
    found[:, :, survey >= 16] = False
    assert local_spine_box(found, survey, np.arange(29, 32), stride=16) is None  # nothing near


def test_the_body_box_holds_everything_denser_than_air_and_starts_on_the_stride_grid() -> None:
    body = np.zeros((120, 100, 4), dtype=bool)
    assert body_box(body, stride=16) == (slice(0, 120), slice(0, 100))  # no body: the whole plane
    body[40:90, 30:61, 1] = True
    body[35:50, 50:70, 3] = True  # another slice reaches further
    assert body_box(body, stride=16) == (slice(32, 90), slice(16, 70))


def test_air_is_added_only_where_the_box_reaches_the_body_s_edge() -> None:
    body = (slice(32, 200), slice(16, 180))
    box = within((slice(48, 260), slice(0, 120)), body)  # cut inside the body above and to the right
    assert box == (slice(48, 200), slice(16, 120))
    assert air_margin(box, body) == (0, EDGE_MARGIN, EDGE_MARGIN, 0)
    assert air_margin(body, body) == (EDGE_MARGIN,) * 4


def _inner(region: tuple[slice, slice], by: int) -> tuple[slice, slice]:
    return tuple(slice(r.start + by, r.stop - by) for r in region)


def test_a_local_network_runs_on_the_box_and_agrees_with_the_whole_plane(tiny_model: Path) -> None:
    phantom, column = make_phantom(shape=(400, 380, 40), spacing=(1.5, 1.5, 2.5))
    loaded = _local_model(tiny_model)
    image = prepare_volume(phantom, loaded.card.spacing_mm, loaded.card.window_hu).image
    whole = predict_model_grid(loaded, image)
    boxed, share = predict_around_spine(loaded, image)
    assert 0.1 < share < 0.5
    survey = survey_slices(image.shape[2])
    body = body_box(image > normalised_level(BODY_HU, loaded.card.window_hu), size_multiple(loaded.card.architecture))
    assert box_fraction(body, image.shape[:2]) < 0.95  # air around the phantom's body
    outside_body = np.ones(image.shape[:2], dtype=bool)
    outside_body[body] = False
    assert not boxed[outside_body].any()
    # The 5 x 5 network sees air padding instead of the (near-air) voxels just outside the body.
    np.testing.assert_allclose(boxed[_inner(body, 2)][:, :, survey], whole[_inner(body, 2)][:, :, survey], atol=1e-6)
    others = np.setdiff1d(np.arange(image.shape[2]), survey)
    ran = boxed[:, :, others] > 0
    assert not ran.all() and ran.any()  # zero outside the box
    # Inside the box the outputs agree but for the 2 voxels next to its edges (air padding there).
    rows, cols = np.flatnonzero(ran.any(axis=(1, 2))), np.flatnonzero(ran.any(axis=(0, 2)))
    inner = _inner((slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)), 2)
    np.testing.assert_allclose(boxed[inner][:, :, others], whole[inner][:, :, others], atol=1e-6)
    assert ((boxed >= 0.5) == (whole >= 0.5)).all()
    seg, on_plane = segment(phantom, loaded), segment(phantom, _local_model(tiny_model, norm="instance"))
    assert seg.inference["plane_share"] == round(share, 3) and on_plane.inference["plane_share"] == 1.0
    np.testing.assert_array_equal(seg.mask, on_plane.mask)
    assert abs(int(seg.mask.sum()) - int(column.sum())) < 0.1 * column.sum()


def test_a_plane_normalising_network_uses_the_whole_plane_and_a_scan_without_spine_the_body(tiny_model: Path) -> None:
    phantom, _ = make_phantom(shape=(400, 380, 40), spacing=(1.5, 1.5, 2.5))
    instance = _local_model(tiny_model, norm="instance")
    image = prepare_volume(phantom, instance.card.spacing_mm, instance.card.window_hu).image
    probabilities, share = predict_around_spine(instance, image)
    assert share == 1.0
    np.testing.assert_array_equal(probabilities, predict_model_grid(instance, image))
    no_bone = np.minimum(image, 0.4)  # soft tissue at most: nothing above the threshold
    probabilities, share = predict_around_spine(_local_model(tiny_model), no_bone)
    stride = size_multiple(instance.card.architecture)
    body = body_box(no_bone > normalised_level(BODY_HU, instance.card.window_hu), stride)
    assert share == box_fraction(body, image.shape[:2]) < 0.95 and probabilities.max() < 0.5
    np.testing.assert_allclose(probabilities[_inner(body, 2)], predict_model_grid(instance, no_bone)[_inner(body, 2)],
                               atol=1e-6)


def test_a_spine_crossing_the_plane_runs_on_boxes_that_follow_it(tiny_model: Path) -> None:
    shape = (420, 260, 64)
    hu = np.full(shape, -1000.0, dtype=np.float32)
    x, y = np.ogrid[:shape[0], :shape[1]]
    hu[((x - 210) / 200) ** 2 + ((y - 130) / 120) ** 2 <= 1] = 40.0
    for k in range(shape[2]):  # the column moves 4 voxels to the left per slice (a scoliosis)
        hu[:, :, k][((x - 60 - 4 * k) ** 2 + (y - 170) ** 2) <= 12**2] = 700.0
    hu[40:44, 120:124, 40] = 700.0  # a bright speck far from the spine on survey slice 40
    volume = Volume(hu, np.diag([1.5, 1.5, 2.5, 1.0]), Provenance("phantom", "derived"))
    loaded = _local_model(tiny_model)
    image = prepare_volume(volume, loaded.card.spacing_mm, loaded.card.window_hu).image
    whole = predict_model_grid(loaded, image)
    boxed, share = predict_around_spine(loaded, image)
    assert ((boxed >= 0.5) == (whole >= 0.5)).all()
    stride = size_multiple(loaded.card.architecture)
    body = body_box(image > normalised_level(BODY_HU, loaded.card.window_hu), stride)
    one_box = within(spine_box(whole[:, :, survey_slices(shape[2])] >= 0.5, stride), body)
    assert share < 0.8 * box_fraction(one_box, image.shape[:2])
