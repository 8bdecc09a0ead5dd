from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spineseg.errors import InputError
from spineseg.imaging.io import load_volume
from spineseg.imaging.nifti import read_nifti_volume, write_nifti


def _write(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(array, np.diag([0.8, 0.9, 2.0, 1.0]) if affine is None else affine), str(path))
    return path


def test_round_trip_keeps_values_and_affine(tmp_path: Path) -> None:
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) - 1000
    affine = np.array([[-0.7, 0, 0, 10], [0, 0.7, 0, -5], [0, 0, 2.5, 30], [0, 0, 0, 1]])
    volume = read_nifti_volume(_write(tmp_path / "ct.nii.gz", array, affine))
    assert volume.array.dtype == np.float32
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.affine, affine)
    assert volume.spacing == pytest.approx((0.7, 0.7, 2.5))
    assert any("LAS" in note for note in volume.provenance.notes)
    out = write_nifti(volume.array, volume.affine, tmp_path / "copy.nii.gz")
    again = nib.load(str(out))
    np.testing.assert_allclose(again.affine, affine)
    assert int(again.header["sform_code"]) == 1


def test_nan_voxels_are_refused_with_their_count(tmp_path: Path) -> None:
    array = np.zeros((4, 4, 4), dtype=np.float32)
    array[0, 0, :3] = np.nan
    with pytest.raises(InputError, match="3 NaN"):
        read_nifti_volume(_write(tmp_path / "nan.nii.gz", array))


def test_4d_image_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="4D"):
        read_nifti_volume(_write(tmp_path / "4d.nii.gz", np.zeros((4, 4, 4, 3), dtype=np.int16)))


def test_4d_with_a_single_volume_is_accepted(tmp_path: Path) -> None:
    assert read_nifti_volume(_write(tmp_path / "one.nii.gz", np.zeros((4, 4, 5, 1), dtype=np.int16))).shape == (4, 4, 5)


def test_truncated_gzip_is_reported_as_truncated(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(-1000, 1000, (32, 32, 32)).astype(np.int16)
    full = _write(tmp_path / "full.nii.gz", noise)
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(InputError, match=r"cut\.nii\.gz"):
        read_nifti_volume(cut)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_scaled_and_big_endian_voxels_read_as_nibabel_scales_them(tmp_path: Path, suffix: str, byteorder: str) -> None:
    stored = np.random.default_rng(3).integers(0, 4095, (9, 7, 70)).astype(f"{byteorder}i2")  # three read slabs
    image = nib.Nifti1Image(stored, np.diag([0.8, 0.9, 2.0, 1.0]))
    image.header.set_slope_inter(0.5, -1024.0)
    path = tmp_path / f"scaled{suffix}"
    nib.save(image, str(path))
    volume = read_nifti_volume(path, keep_integers=True)  # scaled: float32 all the same
    assert volume.array.dtype == np.float32 and volume.array.flags["F_CONTIGUOUS"]
    np.testing.assert_array_equal(volume.array, np.asarray(nib.load(str(path)).dataobj, dtype=np.float32))
    np.testing.assert_array_equal(volume.array, stored.astype(np.float32) * 0.5 - 1024)


def test_a_whole_gzip_of_a_cut_file_names_the_slice_it_ends_at(tmp_path: Path) -> None:
    full = _write(tmp_path / "full.nii", np.zeros((16, 16, 40), dtype=np.int16))
    cut = tmp_path / "cut.nii.gz"  # a valid gzip stream whose NIfTI inside stops in slice 25
    cut.write_bytes(gzip.compress(full.read_bytes()[: 352 + 16 * 16 * 2 * 25 + 7]))
    with pytest.raises(InputError, match=r"cut\.nii\.gz.*slice 25 of 40"):
        read_nifti_volume(cut)


def test_empty_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.nii.gz"
    empty.touch()
    with pytest.raises(InputError, match="empty"):
        load_volume(empty)


def test_huge_header_is_refused_without_allocating(tmp_path: Path) -> None:
    header = nib.Nifti2Header()  # NIfTI-2: 64-bit dimensions (NIfTI-1 stops at 32767)
    header.set_data_dtype(np.int16)
    header.set_data_shape((100000, 100000, 100000))
    path = tmp_path / "huge.nii"
    # A header and a few bytes of "data": reading the voxels would need 2 PB.
    with path.open("wb") as fh:
        fh.write(header.binaryblock + b"\x00" * 4 + b"\x00" * 64)
    with pytest.raises(InputError, match="100000x100000x100000"):
        read_nifti_volume(path)


def test_gzip_of_garbage_is_not_a_nifti(tmp_path: Path) -> None:
    path = tmp_path / "junk.nii.gz"
    path.write_bytes(gzip.compress(b"hello, not an image" * 10))
    with pytest.raises(InputError, match=r"junk\.nii\.gz"):
        read_nifti_volume(path)


def test_reading_a_nifti_needs_no_pydicom_and_keeps_dicom_extensions_as_bytes(tmp_path: Path) -> None:
    import subprocess
    import sys

    image = nib.Nifti1Image(np.zeros((6, 5, 4), dtype=np.int16), np.eye(4))
    blob = b"not a DICOM header, but stored under its code " * 3
    image.header.extensions.append(nib.nifti1.Nifti1Extension(2, blob))
    nib.save(image, tmp_path / "ext.nii.gz")
    code = (
        "import sys\n"
        "from spineseg.imaging.io import load_volume\n"
        f"volume = load_volume({str(tmp_path / 'ext.nii.gz')!r})\n"
        "print(volume.shape, 'pydicom' in sys.modules)\n"
        "import nibabel, pydicom\n"
        f"ext = nibabel.load({str(tmp_path / 'ext.nii.gz')!r}).header.extensions[0]\n"
        f"print(ext.get_code(), ext.get_content() == {blob!r}, pydicom.Dataset.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.split("\n")[:2] == ["(6, 5, 4) False", "2 True Dataset"]
