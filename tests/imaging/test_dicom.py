"""DICOM series reader: tiny synthetic series written with pydicom in tmp_path, plus the two
real DICOM cases of ../shared/data (skipped with a reason when absent)."""

from __future__ import annotations

import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from spineseg.errors import InputError
from spineseg.imaging.dicom import read_dicom_series, read_dicom_zip
from spineseg.imaging.io import load_volume

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
ROWS, COLUMNS = 6, 5


@dataclass(frozen=True)
class WrittenSlice:
    """What the test wrote for one slice: enough to compute every pixel's world position/HU."""

    position_lps: np.ndarray
    stored: np.ndarray  # (rows, columns) uint16
    slope: float
    intercept: float

    @property
    def hu(self) -> np.ndarray:
        return self.stored.astype(np.float64) * self.slope + self.intercept


def _slice_pixels(index: int, rows: int = ROWS, columns: int = COLUMNS) -> np.ndarray:
    """Distinct values per slice and per pixel, so any misplacement shows."""
    r, c = np.mgrid[:rows, :columns]
    return (1000 + 97 * index + 11 * r + c).astype(np.uint16)


def write_ct_file(
    path: Path,
    stored: np.ndarray,
    position_lps: np.ndarray,
    *,
    series_uid: str = "1.2.826.0.1.3680043.10.1.1",
    instance: int = 1,
    orientation: tuple[float, ...] = AXIAL,
    spacing: tuple[float, float] = (0.7, 0.8),
    slope: float = 1.0,
    intercept: float = -1024.0,
    modality: str = "CT",
    thickness: float | None = 2.0,
    syntax: str = ExplicitVRLittleEndian,
) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.1"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesDescription = f"{modality} test series"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [float(v) for v in position_lps]
    ds.ImageOrientationPatient = list(orientation)
    ds.PixelSpacing = list(spacing)
    if thickness is not None:
        ds.SliceThickness = thickness
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = stored.astype("<u2").tobytes()
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax)
    ds.save_as(path, enforce_file_format=True)


def write_series(
    folder: Path,
    offsets_mm: list[float],
    *,
    orientation: tuple[float, ...] = AXIAL,
    origin_lps: tuple[float, float, float] = (-20.0, -30.0, 100.0),
    seed: int = 0,
    first_index: int = 0,
    **kwargs,
) -> list[WrittenSlice]:
    """Slices at ``origin + normal * offset``, saved under shuffled file names and shuffled
    InstanceNumbers so only ImagePositionPatient tells the order."""
    folder.mkdir(parents=True, exist_ok=True)
    normal = np.cross(orientation[:3], orientation[3:])
    rng = np.random.default_rng(seed)
    names = rng.permutation(len(offsets_mm))
    instances = rng.permutation(len(offsets_mm)) + 1
    written = []
    for n, offset in enumerate(offsets_mm):
        position = np.asarray(origin_lps) + normal * offset
        stored = _slice_pixels(first_index + n)
        path = folder / f"IMG{names[n]:04d}_{kwargs.get('modality', 'CT')}.dcm"
        write_ct_file(path, stored, position, instance=int(instances[n]), orientation=orientation, **kwargs)
        written.append(WrittenSlice(position, stored, kwargs.get("slope", 1.0), kwargs.get("intercept", -1024.0)))
    return written


def assert_voxels_match(volume, written: list[WrittenSlice], orientation=AXIAL, spacing=(0.7, 0.8)) -> None:
    """Every written pixel, placed in the world by the DICOM definition, must land on a whole
    voxel of ``volume`` holding the same HU."""
    row_cos, col_cos = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    inverse = np.linalg.inv(volume.affine)
    for item in written:
        for row in range(item.stored.shape[0]):
            for column in range(item.stored.shape[1]):
                lps = item.position_lps + row_cos * spacing[1] * column + col_cos * spacing[0] * row
                ras = np.array([-lps[0], -lps[1], lps[2], 1.0])
                ijk = (inverse @ ras)[:3]
                assert np.allclose(ijk, np.round(ijk), atol=1e-3), f"world point falls between voxels: {ijk}"
                i, j, k = (int(v) for v in np.round(ijk))
                assert volume.array[i, j, k] == pytest.approx(item.hu[row, column], abs=1e-3)


def test_orders_by_position_not_by_name_or_instance_number(tmp_path: Path) -> None:
    written = write_series(tmp_path / "s", [0.0, 2.0, 4.0, 6.0, 8.0], seed=3)
    volume = read_dicom_series(tmp_path / "s")
    assert volume.shape == (COLUMNS, ROWS, 5)
    assert volume.array.dtype == np.float32
    assert volume.spacing == pytest.approx((0.8, 0.7, 2.0))
    assert_voxels_match(volume, written)
    # k increases towards superior: the slice written at the highest z is last
    assert volume.array[0, ROWS - 1, 4] == pytest.approx(written[4].hu[0, 0])
    prov = volume.provenance
    assert (prov.format, prov.modality, prov.intensity) == ("dicom", "CT", "hu")
    assert prov.series_uid == "1.2.826.0.1.3680043.10.1.1"
    assert prov.study_uid == "1.2.826.0.1.3680043.10.1"


def test_oblique_series_with_non_unit_slope(tmp_path: Path) -> None:
    a, b = np.radians(20.0), np.radians(35.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rotation = rz @ rx
    orientation = (*rotation[:, 0], *rotation[:, 1])
    written = write_series(
        tmp_path / "s", [0.0, 2.5, 5.0, 7.5], orientation=orientation, slope=0.5, intercept=-1000.0, seed=7
    )
    volume = read_dicom_series(tmp_path / "s")
    assert volume.spacing == pytest.approx((0.8, 0.7, 2.5))
    assert_voxels_match(volume, written, orientation=orientation)
    assert volume.array.min() == pytest.approx(1000 * 0.5 - 1000.0)


def test_gantry_tilt_gives_a_sheared_affine_that_still_places_every_pixel(tmp_path: Path) -> None:
    folder = tmp_path / "tilted"
    folder.mkdir()
    tilt = np.radians(15.0)
    written = []
    for n, offset in enumerate([0.0, 2.0, 4.0, 6.0]):
        # each slice is shifted along the column direction (y) as the gantry tilt does
        position = np.array([-20.0, -30.0 + offset * np.tan(tilt), 100.0 + offset])
        stored = _slice_pixels(n)
        write_ct_file(folder / f"{3 - n}.dcm", stored, position, instance=n + 1)
        written.append(WrittenSlice(position, stored, 1.0, -1024.0))
    volume = read_dicom_series(folder)
    assert_voxels_match(volume, written)
    assert any("gantry tilt" in n for n in volume.provenance.notes)


def test_single_file_path_reads_one_slice(tmp_path: Path) -> None:
    written = write_series(tmp_path / "s", [0.0], thickness=3.0)
    only_file = next((tmp_path / "s").iterdir())
    volume = read_dicom_series(only_file)
    assert volume.shape == (COLUMNS, ROWS, 1)
    assert volume.spacing[2] == pytest.approx(3.0)
    assert_voxels_match(volume, written)


def test_single_slice_without_thickness_gets_1mm_and_a_note(tmp_path: Path) -> None:
    write_series(tmp_path / "s", [0.0], thickness=None)
    volume = read_dicom_series(tmp_path / "s")
    assert volume.spacing[2] == pytest.approx(1.0)
    assert any("1 mm" in note for note in volume.provenance.notes)


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless], ids=["rle", "jpeg-ls"])
def test_lossless_compressed_series_reads_like_uncompressed(tmp_path: Path, syntax: str) -> None:
    plain = read_dicom_series_from(tmp_path / "plain", syntax=ExplicitVRLittleEndian)
    compressed = read_dicom_series_from(tmp_path / "compressed", syntax=syntax)
    first = next((tmp_path / "compressed").iterdir())
    assert pydicom.dcmread(first).file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(plain.array, compressed.array)
    np.testing.assert_allclose(plain.affine, compressed.affine)


def read_dicom_series_from(folder: Path, **kwargs):
    write_series(folder, [0.0, 2.0, 4.0], **kwargs)
    return read_dicom_series(folder)


def test_undecodable_compressed_pixels_name_the_transfer_syntax(tmp_path: Path) -> None:
    write_series(tmp_path / "s", [0.0, 2.0])
    victim = sorted((tmp_path / "s").iterdir())[0]
    ds = pydicom.dcmread(victim)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = encapsulate([b"\xff\xd8 not really a jpeg" * 4])
    ds.save_as(victim, enforce_file_format=True)
    with pytest.raises(InputError, match="JPEG Baseline"):
        read_dicom_series(tmp_path / "s")


def test_two_series_picks_the_larger_ct_and_notes_the_other(tmp_path: Path) -> None:
    big = write_series(tmp_path / "study" / "a", [0.0, 2.0, 4.0, 6.0], series_uid="1.2.3.100")
    small = write_series(tmp_path / "study" / "b", [0.0, 3.0], series_uid="1.2.3.200", first_index=10)
    volume = read_dicom_series(tmp_path / "study")
    assert volume.provenance.series_uid == "1.2.3.100"
    assert_voxels_match(volume, big)
    assert any("skipped" in n and "1.2.3.200" in n for n in volume.provenance.notes)

    chosen = read_dicom_series(tmp_path / "study", series_uid="1.2.3.200")
    assert chosen.shape[2] == 2
    assert_voxels_match(chosen, small)

    with pytest.raises(InputError, match=r"1\.2\.3\.999 not found.*1\.2\.3\.100.*1\.2\.3\.200"):
        read_dicom_series(tmp_path / "study", series_uid="1.2.3.999")


def test_mr_series_is_refused_and_ct_preferred_beside_it(tmp_path: Path) -> None:
    write_series(tmp_path / "mr", [0.0, 2.0, 4.0, 6.0, 8.0], series_uid="1.2.3.5", modality="MR")
    with pytest.raises(InputError, match="modality MR is not CT"):
        read_dicom_series(tmp_path / "mr")
    write_series(tmp_path / "mr" / "ct", [0.0, 2.0], series_uid="1.2.3.6")
    assert read_dicom_series(tmp_path / "mr").provenance.series_uid == "1.2.3.6"
    with pytest.raises(InputError, match="modality MR is not CT"):
        read_dicom_series(tmp_path / "mr", series_uid="1.2.3.5")


def test_missing_slice_is_filled_by_linear_interpolation(tmp_path: Path) -> None:
    written = write_series(tmp_path / "s", [0.0, 2.0, 4.0, 8.0, 10.0, 12.0])
    volume = read_dicom_series(tmp_path / "s")
    assert volume.shape[2] == 7
    assert volume.spacing[2] == pytest.approx(2.0)
    assert_voxels_match(volume, written)
    filled = volume.array[:, :, 3]
    expected = (volume.array[:, :, 2] + volume.array[:, :, 4]) / 2
    np.testing.assert_allclose(filled, expected, atol=1e-3)
    assert any("missing slice" in n and "resampled" in n for n in volume.provenance.notes)


def test_uneven_gaps_are_resampled_at_the_median_spacing(tmp_path: Path) -> None:
    write_series(tmp_path / "s", [0.0, 2.0, 4.6, 6.6, 8.6, 10.6])
    volume = read_dicom_series(tmp_path / "s")
    span = 10.6
    count = round(span / 2.0) + 1
    assert volume.shape[2] == count
    assert volume.spacing[2] == pytest.approx(span / (count - 1))
    assert any("irregular slice spacing" in n for n in volume.provenance.notes)


def test_regular_series_is_not_resampled(tmp_path: Path) -> None:
    write_series(tmp_path / "s", [0.0, 2.0, 4.05, 6.0])  # within 10 % of the median gap
    volume = read_dicom_series(tmp_path / "s")
    assert volume.shape[2] == 4
    assert not any("resampled" in n for n in volume.provenance.notes)


def test_absurd_gap_is_refused(tmp_path: Path) -> None:
    write_series(tmp_path / "s", [0.0, 2.0, 4.0, 30.0])
    with pytest.raises(InputError, match="median"):
        read_dicom_series(tmp_path / "s")


def test_duplicate_positions_keep_one_slice_with_a_note(tmp_path: Path) -> None:
    write_series(tmp_path / "s", [0.0, 2.0, 4.0])
    write_ct_file(tmp_path / "s" / "copy.dcm", _slice_pixels(1), np.array([-20.0, -30.0, 102.0]), instance=99)
    volume = read_dicom_series(tmp_path / "s")
    assert volume.shape[2] == 3
    assert any("duplicate" in n for n in volume.provenance.notes)


def test_inconsistent_slices_are_refused(tmp_path: Path) -> None:
    write_series(tmp_path / "size", [0.0, 2.0])
    write_ct_file(tmp_path / "size" / "odd.dcm", np.zeros((4, 4), np.uint16), np.array([-20.0, -30.0, 104.0]))
    with pytest.raises(InputError, match="image size"):
        read_dicom_series(tmp_path / "size")

    write_series(tmp_path / "orient", [0.0, 2.0])
    write_ct_file(
        tmp_path / "orient" / "odd.dcm",
        _slice_pixels(5),
        np.array([-20.0, -30.0, 104.0]),
        orientation=(1, 0, 0, 0, 0, -1),
    )
    with pytest.raises(InputError, match="orientation"):
        read_dicom_series(tmp_path / "orient")

    write_series(tmp_path / "spacing", [0.0, 2.0])
    write_ct_file(
        tmp_path / "spacing" / "odd.dcm", _slice_pixels(5), np.array([-20.0, -30.0, 104.0]), spacing=(0.5, 0.5)
    )
    with pytest.raises(InputError, match="pixel spacing"):
        read_dicom_series(tmp_path / "spacing")


def test_non_dicom_files_are_ignored_beside_valid_ones(tmp_path: Path) -> None:
    written = write_series(tmp_path / "s", [0.0, 2.0])
    (tmp_path / "s" / "README.txt").write_text("scanned on a Tuesday")
    (tmp_path / "s" / "fake.dcm").write_text("not dicom at all")
    volume = read_dicom_series(tmp_path / "s")
    assert_voxels_match(volume, written)
    assert any("not DICOM" in n for n in volume.provenance.notes)


def test_text_file_renamed_dcm_is_not_dicom(tmp_path: Path) -> None:
    fake = tmp_path / "scan.dcm"
    fake.write_text("patient notes, not an image")
    with pytest.raises(InputError, match="not a DICOM file") as caught:
        read_dicom_series(fake)
    assert caught.value.source == str(fake)
    with pytest.raises(InputError, match="not a DICOM file"):
        load_volume(fake)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "scan.dcm").write_text("still not an image")
    with pytest.raises(InputError, match="no DICOM files found") as caught:
        read_dicom_series(folder)
    assert caught.value.source == str(folder)


def test_voxel_limit_refuses_before_decoding_pixels(tmp_path: Path) -> None:
    write_series(tmp_path / "s", [0.0, 2.0, 4.0])
    assert read_dicom_series(tmp_path / "s", max_voxels=ROWS * COLUMNS * 3).shape[2] == 3
    victim = sorted((tmp_path / "s").iterdir())[0]
    ds = pydicom.dcmread(victim)
    ds.PixelData = b"\x00\x01"  # truncated pixels: decoding this file would fail
    ds.save_as(victim, enforce_file_format=True)
    with pytest.raises(InputError, match="exceeds the limit"):
        read_dicom_series(tmp_path / "s", max_voxels=ROWS * COLUMNS * 3 - 1)
    with pytest.raises(InputError):
        read_dicom_series(tmp_path / "s")  # and decoding it is an InputError, not a traceback


def test_localizer_in_the_series_is_dropped(tmp_path: Path) -> None:
    written = write_series(tmp_path / "s", [0.0, 2.0, 4.0])
    scout = tmp_path / "s" / "scout.dcm"
    write_ct_file(scout, _slice_pixels(9), np.array([-20.0, 0.0, 140.0]), orientation=(1, 0, 0, 0, 0, -1))
    ds = pydicom.dcmread(scout)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.save_as(scout, enforce_file_format=True)
    volume = read_dicom_series(tmp_path / "s")
    assert volume.shape[2] == 3
    assert_voxels_match(volume, written)
    assert any("localizer" in n for n in volume.provenance.notes)


def test_slices_off_one_line_are_refused(tmp_path: Path) -> None:
    write_series(tmp_path / "s", [0.0, 2.0, 4.0])
    write_ct_file(tmp_path / "s" / "shifted.dcm", _slice_pixels(3), np.array([30.0, -30.0, 106.0]))
    with pytest.raises(InputError, match="one line"):
        read_dicom_series(tmp_path / "s")


def test_zip_of_a_series_reads_like_the_folder_and_cleans_up(tmp_path: Path, monkeypatch) -> None:
    written = write_series(tmp_path / "s", [0.0, 2.0, 4.0])
    zip_path = tmp_path / "study.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in (tmp_path / "s").iterdir():
            archive.write(file, f"patient/series/{file.name}")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    volume = read_dicom_zip(zip_path)
    assert_voxels_match(volume, written)
    assert volume.provenance.source == str(zip_path)
    assert list(scratch.iterdir()) == []
    np.testing.assert_array_equal(load_volume(zip_path).array, volume.array)


def test_hostile_zip_is_refused_and_nothing_escapes(tmp_path: Path, monkeypatch) -> None:
    zip_path = tmp_path / "evil.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("../../escaped.dcm", b"payload")
    scratch = tmp_path / "a" / "b" / "scratch"
    scratch.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with pytest.raises(InputError, match="outside"):
        read_dicom_zip(zip_path)
    assert not (tmp_path / "a" / "escaped.dcm").exists()
    assert list(scratch.iterdir()) == []


def test_load_volume_dispatches_folders_to_the_dicom_reader(tmp_path: Path) -> None:
    written = write_series(tmp_path / "s", [0.0, 2.0])
    assert_voxels_match(load_volume(tmp_path / "s"), written)


# --- real cases --------------------------------------------------------------------------

SPINE_IDS = range(25, 51)  # TotalSegmentator "total" v2: sacrum .. C1


@pytest.mark.shared_data
def test_ts_dicom_thorax_lines_up_with_its_label_map(shared_cases: Path) -> None:
    case = shared_cases / "ts-dicom-thorax"
    volume = read_dicom_series(case / "dicom")
    labels = nib.load(case / "labels.nii.gz")
    # The labels' voxel grid must map onto ours by a signed permutation and whole-voxel shifts.
    to_ours = np.linalg.inv(volume.affine) @ labels.affine
    assert np.allclose(to_ours, np.round(to_ours), atol=1e-3)
    assert np.allclose(np.abs(np.round(to_ours[:3, :3])).sum(axis=0), 1)
    # Resample the labels onto our grid by the affines; vertebrae must land on bone.
    label_array = np.asarray(labels.dataobj)
    spine_ours = np.zeros(volume.shape, dtype=bool)
    ijk = np.argwhere(np.isin(label_array, SPINE_IDS))
    assert len(ijk) > 1000
    mapped = np.round((to_ours[:3, :3] @ ijk.T).T + to_ours[:3, 3]).astype(int)
    inside = np.all((mapped >= 0) & (mapped < np.array(volume.shape)), axis=1)
    assert inside.all()
    spine_ours[tuple(mapped.T)] = True
    spine_hu = float(np.median(volume.array[spine_ours]))
    background_hu = float(np.median(volume.array[~spine_ours]))
    assert spine_hu > 150, f"median HU under the vertebra labels is {spine_hu}: labels miss the bone"
    assert background_hu < spine_hu - 200
    # A mirrored reading would put the labels off the bone.
    assert float(np.median(volume.array[:, ::-1][spine_ours])) < spine_hu - 150


@pytest.mark.shared_data
def test_gstt_covid_chest_matches_its_stacked_nifti_on_true_positions(shared_cases: Path) -> None:
    case = shared_cases / "gstt-covid-chest"
    volume = read_dicom_series(case / "dicom")
    stacked = nib.load(case / "ct.nii.gz")
    stacked_array = np.asarray(stacked.dataobj).astype(np.float32)
    # In-plane geometry and origin agree with the NIfTI; its z spacing header is known wrong.
    np.testing.assert_allclose(volume.affine[:3, :2], stacked.affine[:3, :2], atol=1e-4)
    np.testing.assert_allclose(volume.affine[:3, 3], stacked.affine[:3, 3], atol=1e-3)
    inverse = np.linalg.inv(volume.affine)
    matched = set()
    for file in sorted((case / "dicom").iterdir()):
        ds = pydicom.dcmread(file)
        hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        on_nifti_grid = hu.T[:, ::-1]
        ks = [k for k in range(stacked_array.shape[2]) if np.array_equal(stacked_array[:, :, k], on_nifti_grid)]
        assert len(ks) == 1
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        first_row_ras = np.array([-ipp[0], -ipp[1], ipp[2], 1.0])
        i, j, k = (inverse @ first_row_ras)[:3]
        assert i == pytest.approx(0, abs=1e-3) and j == pytest.approx(volume.shape[1] - 1, abs=1e-3)
        assert k == pytest.approx(round(k), abs=1e-3)
        np.testing.assert_array_equal(volume.array[:, :, round(k)], stacked_array[:, :, ks[0]])
        matched.add(round(k))
    assert len(matched) == stacked_array.shape[2]
    unmatched = set(range(volume.shape[2])) - matched
    if unmatched:  # slices filled in for missing positions must say so
        assert any("resampled" in n for n in volume.provenance.notes)
    assert volume.spacing[2] == pytest.approx(0.8, abs=0.01)
