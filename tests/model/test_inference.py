from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from spineseg.errors import ModelNotFoundError
from spineseg.imaging.volume import Volume
from spineseg.model.inference import LoadedModel, predict_model_grid, segment
from spineseg.model.postprocess import remove_small_components
from spineseg.model.preprocess import normalise_hu, pad_to_multiple, prepare_volume, slice_stack
from tests.conftest import make_phantom


def test_segmentation_lies_on_the_input_grid_in_any_orientation(tiny_model: Path) -> None:
    phantom, _ = make_phantom(shape=(40, 36, 12), spacing=(0.8, 0.8, 3.0))
    ornt = np.array([[2, -1], [0, 1], [1, -1]])  # stored in a scrambled axis order
    array = nib.orientations.apply_orientation(phantom.array, ornt)
    affine = phantom.affine @ nib.orientations.inv_ornt_aff(ornt, phantom.shape)
    volume = Volume(np.ascontiguousarray(array), affine)
    seg = segment(volume, tiny_model)
    assert seg.mask.shape == volume.shape and seg.mask.dtype == np.uint8
    assert seg.probabilities.shape == volume.shape
    assert seg.probabilities.min() >= 0.0 and seg.probabilities.max() <= 1.0
    assert seg.model_id == "tiny-untrained"
    assert set(seg.timings) == {"preprocess", "model", "postprocess", "total"}


def test_probabilities_return_to_the_voxels_they_came_from(tiny_model: Path) -> None:
    # A network that answers "the input's centre channel" must give back the normalised image.
    loaded = LoadedModel.from_folder(tiny_model)

    class Identity(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.logit(x[:, 1:2].clamp(1e-4, 1 - 1e-4))

    loaded.network = Identity()
    phantom, column = make_phantom(shape=(60, 50, 20), spacing=(1.5, 1.5, 2.5))
    seg = segment(phantom, loaded)
    expected = normalise_hu(phantom.array, loaded.card.window_hu)
    # The column (700 HU -> 0.57) is above threshold and kept; the body (40 HU -> 0.35) is not spine,
    # and post-processing clears probabilities outside kept components.
    np.testing.assert_array_equal(seg.mask, column)
    inside = ndimage.binary_erosion(column, iterations=2)
    assert np.abs(seg.probabilities - expected)[inside].max() < 1e-3
    assert seg.probabilities[ndimage.binary_dilation(column, iterations=3) == 0].max() == 0.0


def test_slice_stack_replicates_edges_and_orders_channels() -> None:
    image = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3)
    stack = slice_stack(image, np.array([0, 2]), context=1)
    assert stack.shape == (2, 3, 2, 2)
    np.testing.assert_array_equal(stack[0, 0], image[:, :, 0])  # below slice 0: replicated
    np.testing.assert_array_equal(stack[0, 2], image[:, :, 1])
    np.testing.assert_array_equal(stack[1, 2], image[:, :, 2])  # above the last: replicated


def test_pad_to_multiple() -> None:
    padded, size = pad_to_multiple(np.ones((1, 3, 17, 32), np.float32), 16)
    assert padded.shape == (1, 3, 32, 32) and size == (17, 32)
    padded, size = pad_to_multiple(np.ones((1, 3, 17, 32), np.float32), 16, margin=5)
    assert padded.shape == (1, 3, 32, 48) and size == (17, 32)
    assert padded[0, 0, 5:22, 5:37].min() == 1 and padded.sum() == 3 * 17 * 32
    padded, size = pad_to_multiple(np.ones((1, 3, 17, 32), np.float32), 16, margin=(16, 0, 0, 16))  # per side
    assert padded.shape == (1, 3, 48, 48) and size == (17, 32)
    assert padded[0, 0, 16:33, 0:32].min() == 1 and padded.sum() == 3 * 17 * 32


def test_prepare_volume_resamples_to_the_model_spacing() -> None:
    phantom, _ = make_phantom(shape=(60, 60, 10), spacing=(0.75, 0.75, 5.0))
    prepared = prepare_volume(phantom, (1.5, 1.5, 2.5), (-1000, 2000))
    assert prepared.image.shape == (30, 30, 20)
    assert prepared.image.min() >= 0 and prepared.image.max() <= 1


def test_batches_do_not_change_the_result(tiny_model: Path) -> None:
    loaded = LoadedModel.from_folder(tiny_model)
    image = np.random.default_rng(0).random((32, 32, 9)).astype(np.float32)
    one = predict_model_grid(loaded, image, batch_size=1)
    many = predict_model_grid(loaded, image, batch_size=4)
    np.testing.assert_allclose(one, many, atol=1e-5)


def test_small_components_are_dropped_but_the_largest_kept() -> None:
    mask = np.zeros((30, 30, 30), dtype=bool)
    mask[2:22, 2:22, 2:22] = True  # 8000 voxels
    mask[26, 26, 26] = True  # a speck
    mask[25:29, 2:6, 2:6] = True  # 64 voxels: 0.8% of the largest
    out = remove_small_components(mask, voxel_ml=0.001, min_ml=0.01)
    assert out[5, 5, 5] and not out[26, 26, 26] and not out[26, 3, 3]
    only_speck = np.zeros_like(mask)
    only_speck[3, 3, 3] = True
    assert remove_small_components(only_speck, voxel_ml=0.001, min_ml=1.0).sum() == 1


def test_no_model_installed_says_so(empty_data_dir: Path) -> None:
    phantom, _ = make_phantom()
    with pytest.raises(ModelNotFoundError, match="no trained model is installed"):
        segment(phantom)


def test_components_far_from_the_spinal_axis_are_implausible() -> None:
    from spineseg.model.postprocess import implausible_components

    shape = (100, 80, 12)  # 1.5 mm voxels: 150 x 120 mm
    body = np.zeros(shape, dtype=bool)
    body[10:90, 10:70] = True
    fg = np.zeros(shape, dtype=bool)
    fg[45:55, 20:35, :] = True  # the spine, on the midline
    fg[47:53, 40:44, 3:6] = True  # a separate posterior element, 10 mm away: kept
    fg[2:8, 30:36, :] = True  # an "arm" 70 mm to the side: dropped
    drop = implausible_components(fg, body, (1.5, 1.5, 2.5))
    assert drop[4, 32, 5] and not drop[50, 25, 5] and not drop[50, 42, 4]
    assert drop.sum() == 6 * 6 * 12


def test_flip_tta_averages_the_slices_and_their_mirror_images(tiny_model: Path) -> None:
    loaded = LoadedModel.from_folder(tiny_model, runtime="torch")
    # 48 rows: with the 16-voxel air margin no padding is added at the end, so the mirrored
    # batch is exactly the batch of the mirrored image.
    image = np.random.default_rng(1).random((48, 40, 5)).astype(np.float32)
    plain = predict_model_grid(loaded, image)
    mirrored = predict_model_grid(loaded, np.ascontiguousarray(image[::-1]))[::-1]
    assert np.abs(plain - mirrored).max() > 1e-3  # the tiny network is not symmetric by itself
    loaded.card.tta_flip = True
    tta = predict_model_grid(loaded, image)
    np.testing.assert_allclose(tta, (plain + mirrored) / 2, atol=1e-5)


def test_a_card_with_a_non_boolean_tta_setting_is_refused(tiny_model: Path) -> None:
    from spineseg.errors import InputError
    from spineseg.model.card import ModelCard

    data = ModelCard.read(tiny_model / "card.json").__dict__ | {"tta_flip": "yes"}
    with pytest.raises(InputError, match="tta_flip must be true or false"):
        ModelCard.from_dict(data)
