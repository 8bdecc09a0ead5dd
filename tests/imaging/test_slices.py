"""Image and NumPy slice readers on tiny files written in tmp_path."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from spineseg.errors import InputError
from spineseg.imaging.io import load_volume
from spineseg.imaging.slices import read_image_slice, read_numpy_slice, values_to_hu


def _picture(rows: int = 7, columns: int = 9) -> np.ndarray:
    """An asymmetric 8-bit picture: every pixel distinct, a bright block at the top left."""
    r, c = np.mgrid[:rows, :columns]
    picture = (3 * r + 20 * c).astype(np.uint8)
    picture[:2, :2] = 250
    return picture


def test_8bit_png_maps_grey_levels_by_the_paper_rule(tmp_path: Path) -> None:
    picture = _picture()
    picture[-1, -1], picture[-1, -2] = 0, 255
    Image.fromarray(picture, mode="L").save(tmp_path / "slice.png")
    volume = read_image_slice(tmp_path / "slice.png")
    assert volume.shape == (9, 7, 1)
    assert volume.array.min() == pytest.approx(-1024.0)
    assert volume.array.max() == pytest.approx(3071.0)
    expected = picture.astype(np.float64) / 255 * 4095 - 1024
    np.testing.assert_allclose(volume.array[:, ::-1, 0].T, expected, atol=1e-3)
    prov = volume.provenance
    assert (prov.format, prov.intensity) == ("image", "scaled")
    assert any("255" in n for n in prov.notes) and any("1 mm" in n for n in prov.notes)


def test_orientation_reads_as_on_a_radiology_display(tmp_path: Path) -> None:
    picture = _picture()
    Image.fromarray(picture, mode="L").save(tmp_path / "slice.png")
    volume = read_image_slice(tmp_path / "slice.png")
    canonical = nib.as_closest_canonical(nib.Nifti1Image(volume.array, volume.affine))
    assert nib.aff2axcodes(canonical.affine) == ("R", "A", "S")
    shown = np.asarray(canonical.dataobj)[::-1, ::-1, 0].T
    np.testing.assert_allclose(shown, picture.astype(np.float64) / 255 * 4095 - 1024, atol=1e-3)
    # The bright block (top left of the screen) lies towards the patient's right and anterior.
    bright = np.argwhere(volume.array == volume.array.max())
    world = (volume.affine[:3, :3] @ bright.T).T + volume.affine[:3, 3]
    centre = volume.affine[:3, :3] @ (np.array(volume.shape) - 1) / 2 + volume.affine[:3, 3]
    assert np.all(world[:, 0] > centre[0])  # +x = patient right in RAS
    assert np.all(world[:, 1] > centre[1])  # +y = anterior


def test_16bit_png_and_tiff(tmp_path: Path) -> None:
    twelve_bit = np.array([[0, 1024, 4095], [10, 2000, 3000]], dtype=np.uint16)
    Image.fromarray(twelve_bit).save(tmp_path / "twelve.png")
    volume = read_image_slice(tmp_path / "twelve.png")
    np.testing.assert_allclose(volume.array[:, ::-1, 0].T, twelve_bit - 1024.0)
    assert any("12-bit" in n for n in volume.provenance.notes)

    full = np.array([[0, 65535, 30000], [5000, 100, 40000]], dtype=np.uint16)
    Image.fromarray(full).save(tmp_path / "full.tif")
    volume = read_image_slice(tmp_path / "full.tif")
    np.testing.assert_allclose(volume.array[:, ::-1, 0].T, full / 65535.0 * 4095 - 1024, atol=1e-2)
    assert volume.provenance.intensity == "scaled"


def test_float_tiff_holding_hu_is_kept_as_hu(tmp_path: Path) -> None:
    hu = np.array([[-1000.0, -50.5, 40.0], [300.0, 1200.25, -900.0]], dtype=np.float32)
    Image.fromarray(hu, mode="F").save(tmp_path / "hu.tif")
    volume = read_image_slice(tmp_path / "hu.tif")
    np.testing.assert_array_equal(volume.array[:, ::-1, 0].T, hu)
    assert volume.provenance.intensity == "hu"


def test_jpeg_grey_levels_survive_within_compression_error(tmp_path: Path) -> None:
    flat = np.full((16, 16), 128, dtype=np.uint8)
    Image.fromarray(flat, mode="L").save(tmp_path / "slice.jpg", quality=95)
    volume = read_image_slice(tmp_path / "slice.jpg")
    np.testing.assert_allclose(volume.array, 128 / 255 * 4095 - 1024, atol=2 * 4095 / 255)


def test_rgb_that_is_grey_is_accepted_colour_is_refused(tmp_path: Path) -> None:
    picture = _picture()
    Image.fromarray(np.stack([picture] * 3, axis=-1), mode="RGB").save(tmp_path / "grey.png")
    grey = read_image_slice(tmp_path / "grey.png")
    np.testing.assert_allclose(grey.array[:, ::-1, 0].T, picture / 255 * 4095 - 1024, atol=1e-3)

    colour = np.stack([picture] * 3, axis=-1)
    colour[3, 4, 0] = 17
    Image.fromarray(colour, mode="RGB").save(tmp_path / "colour.png")
    with pytest.raises(InputError, match="colour"):
        read_image_slice(tmp_path / "colour.png")


def test_spacing_can_be_given(tmp_path: Path) -> None:
    Image.fromarray(_picture(), mode="L").save(tmp_path / "slice.png")
    volume = read_image_slice(tmp_path / "slice.png", spacing_mm=(0.5, 0.75))
    assert volume.spacing == pytest.approx((0.75, 0.5, 1.0))
    assert not any("spacing unknown" in n for n in volume.provenance.notes)
    with pytest.raises(InputError, match="spacing_mm"):
        read_image_slice(tmp_path / "slice.png", spacing_mm=(0.0, 1.0))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_decompression_bomb_header_is_refused(tmp_path: Path) -> None:
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)  # 4e8 pixels declared
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IEND", b"")
    (tmp_path / "bomb.png").write_bytes(data)
    assert (tmp_path / "bomb.png").stat().st_size < 100
    with pytest.raises(InputError, match="too large"):
        read_image_slice(tmp_path / "bomb.png", max_voxels=10**10)


def test_voxel_limit_applies_to_pictures(tmp_path: Path) -> None:
    Image.fromarray(_picture(), mode="L").save(tmp_path / "slice.png")
    assert read_image_slice(tmp_path / "slice.png", max_voxels=63).shape == (9, 7, 1)
    with pytest.raises(InputError, match="exceeds the limit"):
        read_image_slice(tmp_path / "slice.png", max_voxels=62)


def test_unreadable_and_multipage_images_are_input_errors(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("not a picture")
    with pytest.raises(InputError, match="not a readable"):
        read_image_slice(tmp_path / "notes.png")
    pages = [Image.fromarray(_picture(), mode="L") for _ in range(3)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    with pytest.raises(InputError, match="3 pages"):
        read_image_slice(tmp_path / "stack.tif")


# --- NumPy --------------------------------------------------------------------------------


def test_numpy_value_rules() -> None:
    hu, intensity, note = values_to_hu(np.array([[-1000.0, 400.0]]), "x")
    assert intensity == "hu" and "look like HU" in note
    np.testing.assert_allclose(hu, [[-1000.0, 400.0]])
    hu, intensity, note = values_to_hu(np.array([[0.0, 0.5, 1.0]]), "x")
    assert intensity == "scaled" and "[0, 1]" in note
    np.testing.assert_allclose(hu, [[-1024.0, 0.5 * 4095 - 1024, 3071.0]])
    hu, _, note = values_to_hu(np.array([[0, 1024, 4095]], dtype=np.int16), "x")
    assert "12-bit" in note
    np.testing.assert_allclose(hu, [[-1024.0, 0.0, 3071.0]])
    with pytest.raises(InputError, match="no known convention"):
        values_to_hu(np.array([[0, 10000]], dtype=np.int32), "x")
    with pytest.raises(InputError, match="NaN"):
        values_to_hu(np.array([[0.0, np.nan]]), "x")
    with pytest.raises(InputError, match="dtype"):
        values_to_hu(np.array([[True, False]]), "x")


def test_npy_2d_slice_is_oriented_like_a_picture(tmp_path: Path) -> None:
    hu = np.linspace(-1000, 1500, 63, dtype=np.float32).reshape(7, 9)
    np.save(tmp_path / "slice.npy", hu)
    volume = read_numpy_slice(tmp_path / "slice.npy")
    np.testing.assert_array_equal(volume.array[:, ::-1, 0].T, hu)
    png = tmp_path / "slice.png"
    Image.fromarray(_picture(), mode="L").save(png)
    np.testing.assert_allclose(volume.affine, read_image_slice(png).affine)
    assert (volume.provenance.format, volume.provenance.intensity) == ("numpy", "hu")


def test_npy_3d_is_a_volume_with_unit_spacing(tmp_path: Path) -> None:
    data = np.random.default_rng(0).uniform(0, 1, size=(4, 5, 6)).astype(np.float32)
    np.save(tmp_path / "vol.npy", data)
    volume = read_numpy_slice(tmp_path / "vol.npy")
    assert volume.shape == (4, 5, 6)
    np.testing.assert_allclose(volume.affine, np.eye(4))
    np.testing.assert_allclose(volume.array, data * 4095 - 1024, atol=1e-3)
    assert volume.provenance.intensity == "scaled"


def test_npz_key_choice(tmp_path: Path) -> None:
    ct = np.full((3, 4), 500, dtype=np.int16)
    np.savez(tmp_path / "single.npz", anything=ct)
    assert read_numpy_slice(tmp_path / "single.npz").array.max() == pytest.approx(500 - 1024)
    np.savez(tmp_path / "named.npz", mask=np.ones((3, 4), np.uint8), image=ct * 2)
    volume = read_numpy_slice(tmp_path / "named.npz")
    assert volume.array.max() == pytest.approx(1000 - 1024)
    assert any("'image'" in n for n in volume.provenance.notes)
    np.savez_compressed(tmp_path / "ambiguous.npz", first=ct, second=ct)
    with pytest.raises(InputError, match="first, second"):
        read_numpy_slice(tmp_path / "ambiguous.npz")


def test_numpy_refusals(tmp_path: Path) -> None:
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="Python objects"):
        read_numpy_slice(tmp_path / "objects.npy")
    np.save(tmp_path / "four_d.npy", np.zeros((2, 2, 2, 2)))
    with pytest.raises(InputError, match="2D slice or a 3D volume"):
        read_numpy_slice(tmp_path / "four_d.npy")
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(InputError, match="not a readable NumPy"):
        read_numpy_slice(tmp_path / "junk.npy")
    np.save(tmp_path / "big.npy", np.zeros((10, 10, 10), np.float32))
    with pytest.raises(InputError, match="exceeds the limit"):
        read_numpy_slice(tmp_path / "big.npy", max_voxels=999)


def test_load_volume_dispatches_pictures_and_arrays(tmp_path: Path) -> None:
    Image.fromarray(_picture(), mode="L").save(tmp_path / "slice.png")
    np.save(tmp_path / "slice.npy", np.zeros((3, 3), np.float32))
    assert load_volume(tmp_path / "slice.png").provenance.format == "image"
    assert load_volume(tmp_path / "slice.npy").provenance.format == "numpy"
