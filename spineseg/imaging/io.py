"""One entry point per kind of thing a user hands us: ``load_volume`` for CT, ``load_labels``
for a ground-truth label map. Both dispatch on what the path is and raise ``InputError``
naming the file when it cannot be used."""

from __future__ import annotations

import functools
import logging
import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from spineseg.errors import InputError, strip_server_paths
from spineseg.imaging.volume import LabelMap, Volume

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
NUMPY_SUFFIXES = (".npy", ".npz")


@functools.cache
def parser_errors() -> tuple[type[BaseException], ...]:
    """What nibabel, pydicom, numpy, Pillow, zipfile, h5py and zlib raise for a malformed file.

    The readers catch the cases they expect with a precise message; these are the rest, so a
    hostile file is always a refusal naming it, never a server error. Programming errors of
    ours raise the same types; they are logged with their traceback."""
    import nibabel as nib
    from PIL import Image
    from pydicom.errors import InvalidDicomError

    return (ArithmeticError, AssertionError, AttributeError, BufferError, EOFError, LookupError, MemoryError,
            OSError, RuntimeError, TypeError, ValueError, struct.error, zlib.error, zipfile.BadZipFile,
            nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError, InvalidDicomError,
            Image.DecompressionBombError)


def _format_of(path: Path) -> str:
    if path.is_dir():
        return "a DICOM series"
    for suffixes, name in ((NIFTI_SUFFIXES, "NIfTI"), (IMAGE_SUFFIXES, "an image"), (NUMPY_SUFFIXES, "NumPy"),
                           ((".zip",), "a zip of DICOM files")):
        if _has_suffix(path, suffixes):
            return name
    return "DICOM"


@contextmanager
def refusing_unreadable(path: Path, what: str | None = None) -> Iterator[None]:
    """Turn any ``parser_errors()`` escaping a reader into an ``InputError`` naming ``path``
    (its name only: library messages quote full server paths)."""
    try:
        yield
    except InputError:
        raise
    except parser_errors() as exc:
        logger.warning("%s: unexpected %s from a parser", path, type(exc).__name__, exc_info=True)
        what = what or _format_of(path)
        if isinstance(exc, MemoryError):
            raise InputError(path, f"not enough memory to read it as {what}") from exc
        detail = strip_server_paths(str(exc).replace(str(path), path.name))[:300]
        raise InputError(path, f"could not be read as {what}: {type(exc).__name__}: {detail}") from exc


def _has_suffix(path: Path, suffixes: tuple[str, ...]) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in suffixes)


def load_volume(path: str | Path, *, series_uid: str | None = None, keep_integers: bool = False) -> Volume:
    """Read a CT from a DICOM folder, a .zip of DICOM, a NIfTI file, an image slice or a
    NumPy array, returning a ``Volume`` in HU (or paper-scaled grey levels, see provenance).
    ``keep_integers``: an unscaled integer NIfTI keeps its stored type instead of float32
    (``read_nifti_volume``). Any failure of a parser is an ``InputError`` naming the file
    (``refusing_unreadable``)."""
    path = Path(path)
    with refusing_unreadable(path):
        return _load_volume(path, series_uid, keep_integers)


def _load_volume(path: Path, series_uid: str | None, keep_integers: bool = False) -> Volume:
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if path.is_dir():
        from spineseg.imaging.dicom import read_dicom_series

        return read_dicom_series(path, series_uid=series_uid)
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty")
    if _has_suffix(path, NIFTI_SUFFIXES):
        from spineseg.imaging.nifti import read_nifti_volume

        return read_nifti_volume(path, keep_integers=keep_integers)
    if path.name.lower().endswith(".zip"):
        from spineseg.imaging.dicom import read_dicom_zip

        return read_dicom_zip(path, series_uid=series_uid)
    if _has_suffix(path, IMAGE_SUFFIXES):
        from spineseg.imaging.slices import read_image_slice

        return read_image_slice(path)
    if _has_suffix(path, NUMPY_SUFFIXES):
        from spineseg.imaging.slices import read_numpy_slice

        return read_numpy_slice(path)
    # A single DICOM file, with or without the .dcm suffix.
    from spineseg.imaging.dicom import read_dicom_series

    return read_dicom_series(path, series_uid=series_uid)


def load_labels(path: str | Path, reference: Volume, *, convention: str = "auto") -> LabelMap:
    """Read a label map (file, or folder of per-structure files) and bring it onto
    ``reference``'s grid through the affines (nearest neighbour)."""
    from spineseg.imaging.labels import read_label_map

    path = Path(path)
    with refusing_unreadable(path, "a label map"):
        return read_label_map(path, reference, convention=convention)
