"""Single 2D slices (PNG, JPEG, TIFF) and NumPy arrays (.npy/.npz) as Volumes.

Intensities. An exported picture holds grey levels, not HU. We undo the paper's convention
(Healthc Inform Res 2020: 12-bit CT values scaled to 8 bits, then to [0, 1]):
- 8-bit grey level v:                  HU = v / 255 * 4095 - 1024
- 16-bit v with max <= 4095:           HU = v - 1024      (12-bit stored values)
- 16-bit v with larger values:         HU = v / 65535 * 4095 - 1024
Such volumes carry ``provenance.intensity == "scaled"`` and a note saying which rule was used.
NumPy arrays are classified by their value range (see ``values_to_hu``).

Orientation of a 2D slice. The picture is taken as it appears on a radiology display: image
rows run from anterior (top) to posterior (bottom), image columns from the patient's right
(left of the screen) to the patient's left. The array is stored on the grid the DICOM reader
uses (``i`` = column, ``j`` = row counted from the bottom, one slice along ``k``), centred on
the world origin, so that after ``nibabel.as_closest_canonical`` (RAS) the original picture is
``canonical[::-1, ::-1, 0].T``: a viewer in radiological convention shows it exactly as the
radiologist saw the exported image.

Spacing is unknown for pictures: 1 mm in-plane and 1 mm thick unless ``spacing_mm`` is given
or a person gave it at upload (``imaging.pixel_size``, a file beside the picture); a note
records the assumption or where the size came from.
"""

from __future__ import annotations

import logging
import struct
import warnings
import zipfile
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from spineseg.errors import InputError, InputTooLarge
from spineseg.imaging.limits import check_grid, check_intensities, resolve_max_voxels
from spineseg.imaging.pixel_size import given_pixel_size
from spineseg.imaging.volume import Provenance, Volume

logger = logging.getLogger(__name__)

HU_OFFSET = 1024.0
TWELVE_BIT_MAX = 4095.0
_GREY_MODES_8 = ("L",)
_GREY_MODES_16 = ("I;16", "I;16L", "I;16B", "I;16N")
# Checked on the header before Pillow decodes: the largest CT slices are 1024^2 (some 2048^2);
# 4096^2 leaves room for any export and stays far below Pillow's own bomb limit (89 M pixels).
MAX_PICTURE_PIXELS = 4096 * 4096
# Only the decoders of the formats we read: Pillow would otherwise try each of its ~40 formats.
PICTURE_FORMATS = ("PNG", "JPEG", "TIFF")
MAX_NPZ_MEMBERS = 16  # an .npz of a CT holds an image, perhaps a mask and spacing
# What Pillow's decoders raise for damaged files besides OSError (truncated chunks, bad tables).
_PILLOW_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error, IndexError, TypeError,
                  KeyError, ZeroDivisionError)


def slice_affine(rows: int, columns: int, spacing_mm: tuple[float, float]) -> np.ndarray:
    """Voxel -> RAS+ affine of a one-slice array of shape (columns, rows, 1) built from a
    picture on a radiology display (see module docstring). spacing_mm = (row, column) mm."""
    row_mm, column_mm = spacing_mm
    affine = np.eye(4)
    affine[0, 0] = -column_mm  # i: screen left -> right = patient right -> left (-x)
    affine[1, 1] = row_mm  # j: counted from the bottom row = posterior -> anterior (+y)
    affine[0, 3] = column_mm * (columns - 1) / 2.0
    affine[1, 3] = -row_mm * (rows - 1) / 2.0
    return affine


def _picture_to_volume(hu: np.ndarray, spacing_mm: tuple[float, float] | None, provenance: Provenance,
                       picture: Path | None = None) -> Volume:
    """hu: (rows, columns) float32, displayed orientation -> one-slice Volume. Without
    ``spacing_mm``, the size given at upload beside ``picture`` (``imaging.pixel_size``), else 1 mm."""
    notes = list(provenance.notes)
    given = given_pixel_size(picture) if spacing_mm is None and picture is not None else None
    if given is not None:
        spacing_mm = given
        notes.append(f"pixel size {given[0]:g} mm given at upload (the picture carries none); 1 mm slice thickness "
                     "assumed")
    elif spacing_mm is None:
        spacing_mm = (1.0, 1.0)
        notes.append("pixel spacing unknown: 1 mm in-plane and 1 mm slice thickness assumed")
    elif len(spacing_mm) != 2 or not all(np.isfinite(s) and s > 0 for s in spacing_mm):
        raise InputError("spacing_mm", f"must be two positive numbers (row, column) in mm, got {spacing_mm}")
    rows, columns = hu.shape
    array = np.ascontiguousarray(hu.T[:, ::-1, np.newaxis], dtype=np.float32)
    affine = slice_affine(rows, columns, (float(spacing_mm[0]), float(spacing_mm[1])))
    return Volume(array=array, affine=affine, provenance=replace(provenance, notes=tuple(notes)))


def values_to_hu(values: np.ndarray, source: str) -> tuple[np.ndarray, str, str]:
    """Map array values to HU by their range; returns (float32 HU, intensity, note).

    Rules, first match wins: min < -500 and max > 200 -> already HU; other negative values ->
    assumed HU; all in [0, 1] -> the paper's [0, 1] scaling, HU = v * 4095 - 1024; all in
    [0, 4095] -> 12-bit stored values, HU = v - 1024; uint16 -> HU = v / 65535 * 4095 - 1024.
    Anything else raises ``InputError``.
    """
    if values.dtype.kind not in "iuf":
        raise InputError(source, f"array of dtype {values.dtype} is not an image")
    if values.size == 0:
        raise InputError(source, "array is empty")
    data = values.astype(np.float32)
    check_intensities(source, data, "array values")
    low, high = float(data.min()), float(data.max())
    if low < -500 and high > 200:
        return data, "hu", f"values {low:g}..{high:g} look like HU: kept"
    if low < 0:
        return data, "hu", f"values {low:g}..{high:g} include negatives: assumed to be HU"
    if high <= 1.0:
        hu = data * np.float32(TWELVE_BIT_MAX) - np.float32(HU_OFFSET)
        return hu, "scaled", "values in [0, 1]: paper scaling, HU = v * 4095 - 1024"
    if high <= TWELVE_BIT_MAX:
        return data - np.float32(HU_OFFSET), "scaled", "values in [0, 4095]: 12-bit, HU = v - 1024"
    if values.dtype == np.uint16:
        hu = data / np.float32(65535.0) * np.float32(TWELVE_BIT_MAX) - np.float32(HU_OFFSET)
        return hu, "scaled", "16-bit values above 4095: HU = v / 65535 * 4095 - 1024"
    raise InputError(
        source,
        f"values {low:g}..{high:g} match no known convention (HU, [0, 1], 12-bit 0..4095, uint16)",
    )


def _grey_pixels(image: Image.Image, source: str) -> tuple[np.ndarray, int]:
    """Pixel values (rows, columns) and their bit depth (8, 16, or 0 for float)."""
    mode = image.mode
    if mode in _GREY_MODES_8:
        return np.asarray(image, dtype=np.uint8), 8
    if mode in _GREY_MODES_16:
        return np.asarray(image).astype(np.uint16), 16
    if mode == "I":
        pixels = np.asarray(image)
        if pixels.min() < 0 or pixels.max() > 65535:
            raise InputError(source, "32-bit integer image with values outside 0..65535")
        return pixels.astype(np.uint16), 16
    if mode == "F":
        return np.asarray(image, dtype=np.float32), 0
    if mode in ("P", "PA", "RGB", "RGBA", "LA", "CMYK", "YCbCr", "LAB", "HSV"):
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise InputError(source, f"colour image (mode {mode}); CT slices must be greyscale")
        return rgb[..., 0].copy(), 8
    raise InputError(source, f"unsupported image mode {mode}")


def read_image_slice(
    path: Path, *, spacing_mm: tuple[float, float] | None = None, max_voxels: int | None = None
) -> Volume:
    """Read one PNG/JPEG/TIFF CT slice as a one-slice Volume (shape (columns, rows, 1)).

    Grey levels become HU by the paper's rules (module docstring), ``intensity="scaled"``.
    spacing_mm: (row, column) pixel spacing in mm; default 1 mm with a note.
    Raises ``InputError`` for unreadable files, colour images, multi-page files and pictures
    above ``max_voxels`` (default ``Settings.max_voxels``) or Pillow's decompression-bomb limit.
    """
    path = Path(path)
    source = str(path)
    limit = resolve_max_voxels(max_voxels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=PICTURE_FORMATS) as image:  # reads the header only
                width, height = image.size
                if width * height > MAX_PICTURE_PIXELS:
                    raise InputTooLarge(source, f"picture of {width}x{height} pixels is larger than any CT slice "
                                                f"(at most {MAX_PICTURE_PIXELS:,} pixels, e.g. 4096x4096)")
                check_grid(source, (width, height), max_voxels=limit)
                frames = getattr(image, "n_frames", 1)
                if frames > 1:
                    raise InputError(source, f"image holds {frames} pages; give one slice per file")
                image.load()
                pixels, bits = _grey_pixels(image, source)
                mode = image.mode
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(source, f"image too large to decode safely ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise InputError(source, "not a readable PNG, JPEG or TIFF image") from exc
    except _PILLOW_ERRORS as exc:
        raise InputError(source, f"cannot decode image ({type(exc).__name__}: {exc})") from exc

    if bits == 8:
        hu = pixels.astype(np.float32) / np.float32(255.0) * np.float32(TWELVE_BIT_MAX) - np.float32(HU_OFFSET)
        note = "8-bit grey levels mapped to HU = v / 255 * 4095 - 1024 (paper's 12-bit scaling)"
        intensity = "scaled"
    elif bits == 16 and pixels.max() <= TWELVE_BIT_MAX:
        hu = pixels.astype(np.float32) - np.float32(HU_OFFSET)
        note = "16-bit image with values <= 4095 read as 12-bit stored values: HU = v - 1024"
        intensity = "scaled"
    elif bits == 16:
        hu = pixels.astype(np.float32) / np.float32(65535.0) * np.float32(TWELVE_BIT_MAX) - np.float32(HU_OFFSET)
        note = "16-bit grey levels mapped to HU = v / 65535 * 4095 - 1024"
        intensity = "scaled"
    else:
        hu, intensity, note = values_to_hu(pixels, source)
    logger.info("%s: %s image %s, %s", source, mode, pixels.shape, note)
    provenance = Provenance(source=source, format="image", intensity=intensity, notes=(note,))
    return _picture_to_volume(hu, spacing_mm, provenance, path)


def _header_shape_dtype(stream) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
    return tuple(int(s) for s in shape), dtype


def _choose_npz_key(path: Path, keys: list[str]) -> str:
    if len(keys) == 1:
        return keys[0]
    for preferred in ("image", "ct"):
        if preferred in keys:
            return preferred
    listed = ", ".join(sorted(keys)) if keys else "none"
    raise InputError(path, f"several arrays and none named 'image' or 'ct'; keys: {listed}")


def _load_numpy(path: Path, limit: int) -> tuple[np.ndarray, str | None]:
    """The array (its header checked for dtype, dimensions and the voxel limit before
    loading) and the npz key used."""
    is_npz = path.name.lower().endswith(".npz")
    try:
        if is_npz:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                if len(names) > MAX_NPZ_MEMBERS:
                    raise InputError(path, f".npz holds {len(names)} members, more than the {MAX_NPZ_MEMBERS} "
                                           "a CT archive needs")
                keys = [n[: -len(".npy")] for n in names if n.endswith(".npy")]
                key = _choose_npz_key(path, keys)
                with archive.open(f"{key}.npy") as stream:
                    shape, dtype = _header_shape_dtype(stream)
        else:
            key = None
            with open(path, "rb") as stream:
                shape, dtype = _header_shape_dtype(stream)
        if dtype.hasobject:
            raise InputError(path, "array holds Python objects; only numeric arrays are read")
        if len(shape) not in (2, 3):
            raise InputError(path, f"array has shape {shape}; expected a 2D slice or a 3D volume")
        check_grid(path, shape, max_voxels=limit)
        if is_npz:
            with np.load(path, allow_pickle=False) as bundle:
                return bundle[key], key
        return np.load(path, allow_pickle=False), None
    except InputError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError, zlib.error, SyntaxError, TypeError,
            NotImplementedError) as exc:
        raise InputError(path, f"not a readable NumPy file ({type(exc).__name__}: {exc})") from exc


def read_numpy_slice(path: Path, *, max_voxels: int | None = None) -> Volume:
    """Read a .npy/.npz array as a Volume.

    2D (rows, columns): one slice, oriented and spaced like a picture (module docstring).
    3D: a volume in (I, J, K) order with an identity affine (1 mm voxels), noted.
    .npz: the only array, else the one named ``image`` or ``ct``. Never unpickles.
    Values are mapped to HU by ``values_to_hu``; the rule used goes into the notes.
    """
    path = Path(path)
    source = str(path)
    array, key = _load_numpy(path, resolve_max_voxels(max_voxels))
    if array.ndim not in (2, 3):
        raise InputError(source, f"array has shape {array.shape}; expected a 2D slice or a 3D volume")
    hu, intensity, rule = values_to_hu(array, source)
    notes = [rule] if key is None else [f"array {key!r}", rule]
    logger.info("%s: array %s %s, %s", source, array.shape, array.dtype, rule)
    if array.ndim == 2:
        provenance = Provenance(source=source, format="numpy", intensity=intensity, notes=tuple(notes))
        return _picture_to_volume(hu, None, provenance, Path(path))
    notes.append("3D array taken as (I, J, K) with 1 mm voxels and an identity affine")
    provenance = Provenance(source=source, format="numpy", intensity=intensity, notes=tuple(notes))
    return Volume(array=np.ascontiguousarray(hu, dtype=np.float32), affine=np.eye(4), provenance=provenance)
