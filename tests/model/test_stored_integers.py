"""An int16 CT can stay int16 from the file to the network: same values, same segmentation."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from spineseg.imaging.io import load_volume
from spineseg.model.inference import LoadedModel, segment
from tests.conftest import make_phantom


def _int16_ct(path: Path, spacing=(0.8, 0.8, 2.0), slope: float | None = None) -> np.ndarray:
    phantom, _ = make_phantom(shape=(60, 50, 20), spacing=spacing)
    data = np.rint(phantom.array).astype(np.int16)
    image = nib.Nifti1Image(data, phantom.affine)
    image.set_data_dtype(np.int16)
    if slope is not None:
        image.header.set_slope_inter(slope, 0.0)
    nib.save(image, str(path))
    return data


def test_an_unscaled_int16_file_keeps_its_type_and_values(tmp_path: Path) -> None:
    data = _int16_ct(tmp_path / "ct.nii.gz")
    kept = load_volume(tmp_path / "ct.nii.gz", keep_integers=True)
    default = load_volume(tmp_path / "ct.nii.gz")
    assert kept.array.dtype == np.int16 and default.array.dtype == np.float32
    np.testing.assert_array_equal(kept.array, data)
    np.testing.assert_array_equal(kept.array.astype(np.float32), default.array)


def test_a_scaled_file_is_still_read_as_float32(tmp_path: Path) -> None:
    _int16_ct(tmp_path / "ct.nii.gz", slope=0.5)
    kept = load_volume(tmp_path / "ct.nii.gz", keep_integers=True)
    assert kept.array.dtype == np.float32
    np.testing.assert_array_equal(kept.array, load_volume(tmp_path / "ct.nii.gz").array)


def test_segmenting_the_int16_volume_gives_the_float32_result(tmp_path: Path, tiny_model: Path) -> None:
    loaded = LoadedModel.from_folder(tiny_model, runtime="torch")
    for name, spacing in (("resampled", (0.8, 0.8, 2.0)), ("on the model grid", (1.5, 1.5, 2.5))):
        path = tmp_path / f"{name}.nii.gz"
        _int16_ct(path, spacing)
        a = segment(load_volume(path, keep_integers=True), loaded)
        b = segment(load_volume(path), loaded)
        np.testing.assert_array_equal(a.model_grid, b.model_grid, err_msg=name)
        np.testing.assert_array_equal(a.mask, b.mask, err_msg=name)
