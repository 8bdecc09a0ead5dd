"""imaging.grid_place: a label box drawn on a permuted, flipped, cropped copy of a grid lands on
exactly the voxels it was drawn on; a grid that does not coincide voxel for voxel is refused."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from spineseg.errors import InputError
from spineseg.imaging.grid_place import place_on_grid
from spineseg.imaging.viewer_copy import canonical

# An oblique-free but permuted and flipped grid (P-I-R storage, as tptbox-lumbar), 1.5 mm voxels.
AFFINE = np.array([[0.0, 0.0, 1.5, -40.0], [-1.5, 0.0, 0.0, 20.0], [0.0, -1.5, 0.0, 90.0], [0, 0, 0, 1]])


def _labels(shape: tuple[int, int, int] = (9, 11, 13)) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 5, size=shape).astype(np.int16)


def test_a_canonical_crop_is_put_back_on_its_own_voxels() -> None:
    labels = _labels()
    view, can_affine = canonical(labels, AFFINE)
    assert nib.aff2axcodes(can_affine) == ("R", "A", "S")
    box = (slice(1, view.shape[0] - 2), slice(2, view.shape[1] - 1), slice(0, view.shape[2] - 3))
    edited = np.array(view[box]) + 10  # every voxel of the crop changed
    crop_affine = can_affine.copy()
    crop_affine[:3, 3] = (can_affine @ np.r_[[b.start for b in box], 1.0])[:3]
    placed = place_on_grid(edited, crop_affine, labels, AFFINE)
    expected_view = np.array(view)
    expected_view[box] += 10
    assert np.array_equal(canonical(placed, AFFINE)[0], expected_view)
    assert np.count_nonzero(placed != labels) == edited.size  # outside the box: the base, untouched


def test_the_grid_itself_replaces_everything() -> None:
    labels = _labels()
    assert np.array_equal(place_on_grid(labels + 1, AFFINE, labels, AFFINE), labels + 1)


@pytest.mark.parametrize("change", ["half voxel", "spacing", "rotation"])
def test_another_grid_is_refused(change: str) -> None:
    labels = _labels()
    affine = AFFINE.copy()
    if change == "half voxel":
        affine[:3, 3] += 0.5 * affine[:3, 0]
    elif change == "spacing":
        affine[:3, :3] *= 1.1
    else:
        angle = np.deg2rad(10)
        turn = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
        affine[:3, :3] = turn @ affine[:3, :3]
    with pytest.raises(InputError, match="not the voxels of the run's mask"):
        place_on_grid(labels, affine, labels, AFFINE)


def test_a_box_reaching_outside_the_grid_is_refused_naming_it() -> None:
    labels = _labels()
    shifted = AFFINE @ np.array([[1, 0, 0, 3], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    with pytest.raises(InputError, match="reaches outside the run's grid"):
        place_on_grid(labels, shifted, labels, AFFINE)
