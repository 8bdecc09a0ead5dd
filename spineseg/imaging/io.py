"""One entry point per kind of thing a user hands us: ``load_volume`` for CT, ``load_labels``
for a ground-truth label map. Both dispatch on what the path is and raise ``InputError``
naming the file when it cannot be used."""

from __future__ import annotations

from pathlib import Path

from spineseg.errors import InputError
from spineseg.imaging.volume import LabelMap, Volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
NUMPY_SUFFIXES = (".npy", ".npz")


def _has_suffix(path: Path, suffixes: tuple[str, ...]) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in suffixes)


def load_volume(path: str | Path, *, series_uid: str | None = None) -> Volume:
    """Read a CT from a DICOM folder, a .zip of DICOM, a NIfTI file, an image slice or a
    NumPy array, returning a ``Volume`` in HU (or paper-scaled grey levels, see provenance)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if path.is_dir():
        from spineseg.imaging.dicom import read_dicom_series

        return read_dicom_series(path, series_uid=series_uid)
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty")
    if _has_suffix(path, NIFTI_SUFFIXES):
        from spineseg.imaging.nifti import read_nifti_volume

        return read_nifti_volume(path)
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

    return read_label_map(Path(path), reference, convention=convention)
