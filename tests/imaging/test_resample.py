from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from spineseg.imaging.resample import (
    from_canonical,
    labels_onto_grid,
    resample_array,
    resample_to_spacing,
    to_canonical,
)
from spineseg.imaging.volume import Volume


def _oriented(shape=(5, 6, 7)) -> Volume:
    # P-I-R like tptbox-lumbar: axes permuted and flipped.
    ornt = np.array([[1, -1], [2, -1], [0, 1]])
    affine = np.diag([1.5, 1.5, 1.5, 1.0]) @ nib.orientations.inv_ornt_aff(ornt, shape)
    array = np.random.default_rng(1).random(shape).astype(np.float32)
    return Volume(array, affine)


def test_canonical_is_ras_and_keeps_every_voxel_at_its_world_position() -> None:
    volume = _oriented()
    canonical, ornt = to_canonical(volume)
    assert nib.aff2axcodes(canonical.affine) == ("R", "A", "S")
    inverse = np.linalg.inv(canonical.affine)
    for index in [(0, 0, 0), (4, 5, 6), (2, 3, 1)]:
        world = volume.affine @ np.array([*index, 1.0])
        target = tuple(np.rint(inverse @ world)[:3].astype(int))
        assert canonical.array[target] == volume.array[index]
    np.testing.assert_array_equal(from_canonical(canonical.array, ornt), volume.array)


def test_resample_to_spacing_keeps_the_extent_centred() -> None:
    volume = Volume(np.ones((100, 80, 10), dtype=np.float32), np.diag([0.75, 0.75, 3.0, 1.0]))
    out = resample_to_spacing(volume, (1.5, 1.5, 1.5))
    assert out.shape == (50, 40, 20)
    assert out.spacing == pytest.approx((1.5, 1.5, 1.5))
    # The first voxel's box starts where the original's did: centre moves by half the new size minus half the old.
    first_corner_before = volume.affine @ np.array([-0.5, -0.5, -0.5, 1])
    first_corner_after = out.affine @ np.array([-0.5, -0.5, -0.5, 1])
    np.testing.assert_allclose(first_corner_before, first_corner_after)
    np.testing.assert_allclose(out.array, 1.0, atol=1e-5)


def test_resample_array_down_and_back_preserves_a_smooth_ramp() -> None:
    ramp = np.broadcast_to(np.linspace(0, 1, 64, dtype=np.float32)[:, None, None], (64, 32, 16)).copy()
    back = resample_array(resample_array(ramp, (32, 16, 8)), (64, 32, 16), antialias=False)
    assert np.abs(back - ramp)[2:-2].max() < 0.02


def test_labels_follow_the_affines_onto_a_permuted_grid() -> None:
    volume = _oriented()
    labels = np.zeros(volume.shape, dtype=np.uint8)
    labels[1, 2, 3] = 7
    canonical, _ = to_canonical(volume)
    on_grid, inside = labels_onto_grid(labels, volume.affine, canonical.shape, canonical.affine)
    assert inside == 1.0
    world = volume.affine @ np.array([1, 2, 3, 1.0])
    target = tuple(np.rint(np.linalg.inv(canonical.affine) @ world)[:3].astype(int))
    assert on_grid[target] == 7 and on_grid.sum() == 7


def test_labels_on_a_rotated_grid_use_the_general_path() -> None:
    labels = np.zeros((20, 20, 5), dtype=np.uint8)
    labels[5:15, 5:15, :] = 1
    angle = np.deg2rad(10)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    centre = np.eye(4)
    centre[:3, 3] = [-10, -10, 0]
    grid = np.linalg.inv(centre) @ rotation @ centre
    on_grid, inside = labels_onto_grid(labels, np.eye(4), (20, 20, 5), grid)
    assert 0.8 < inside < 1.0
    assert abs(int(on_grid.sum()) - int(labels.sum())) < 0.1 * labels.sum()


def test_disjoint_grids_report_no_overlap() -> None:
    shifted = np.eye(4)
    shifted[:3, 3] = 1000
    on_grid, inside = labels_onto_grid(np.ones((4, 4, 4), np.uint8), np.eye(4), (4, 4, 4), shifted)
    assert inside == 0.0 and on_grid.sum() == 0


def test_upsampling_in_slabs_matches_torch_interpolate_in_any_orientation() -> None:
    import torch
    import torch.nn.functional as F

    from spineseg.imaging.resample import canonical_view, upsample_into
    from spineseg.model.preprocess import PreparedVolume, back_to_input_grid, mask_on_input_grid

    rng = np.random.default_rng(0)
    small = np.zeros((9, 7, 11), dtype=np.float32)
    small[2:7, 1:5, 3:10] = rng.random((5, 4, 7), dtype=np.float32)
    canonical_shape = (40, 23, 37)
    planes = F.interpolate(torch.from_numpy(small).permute(2, 0, 1).unsqueeze(1), size=canonical_shape[:2],
                           mode="bilinear", align_corners=False).squeeze(1).permute(1, 2, 0)
    expected = F.interpolate(planes.reshape(1, -1, small.shape[2]), size=canonical_shape[2], mode="linear",
                             align_corners=False).reshape(canonical_shape).numpy()
    got = np.zeros(canonical_shape, dtype=np.float32)

    def write(index, block):
        got[index] = block

    upsample_into(small, canonical_shape, write, slab=4)
    np.testing.assert_allclose(got, expected, atol=1e-6)

    ornt = np.array([[2, -1], [0, 1], [1, -1]])
    prepared = PreparedVolume(small, canonical_shape, ornt)
    on_input = back_to_input_grid(small, prepared)
    np.testing.assert_allclose(canonical_view(on_input, ornt), expected, atol=1e-6)
    mask = mask_on_input_grid(small, prepared, 0.5)
    assert mask.dtype == np.uint8 and mask.shape == on_input.shape
    np.testing.assert_array_equal(mask, on_input >= 0.5)


def test_downsampling_in_slabs_equals_one_pass() -> None:
    array = np.random.default_rng(1).random((30, 20, 13)).astype(np.float32)
    view = array[::-1].transpose(1, 0, 2)  # strided, reoriented
    np.testing.assert_array_equal(resample_array(view, (9, 14, 5), slab=3), resample_array(view, (9, 14, 5), slab=64))
    same_slices = resample_array(view, (9, 14, 13), slab=4)  # in-plane only
    assert same_slices.shape == (9, 14, 13)
    np.testing.assert_array_equal(same_slices, resample_array(view, (9, 14, 13), slab=64))
    np.testing.assert_array_equal(resample_array(view, view.shape, slab=4), view)  # nothing to do
