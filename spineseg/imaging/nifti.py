"""NIfTI reading and writing (.nii, .nii.gz), any orientation.

Headers are checked before any voxel is read, so a hostile header claiming 100000^3 voxels
is refused without allocating, and a truncated file is reported as such.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from spineseg.config import Settings
from spineseg.errors import InputError
from spineseg.imaging.volume import Provenance, Volume


def open_nifti(path: Path, *, max_voxels: int | None = None) -> nib.Nifti1Image:
    """Open a NIfTI header and validate its shape and affine (no voxel data is read)."""
    max_voxels = max_voxels or Settings.from_env().max_voxels
    try:
        image = nib.load(str(path))
    except (nib.filebasedimages.ImageFileError, gzip.BadGzipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise InputError(path, f"not a readable NIfTI file ({exc})") from exc
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise InputError(path, f"not a NIfTI image (got {type(image).__name__})")
    shape = tuple(int(s) for s in image.shape)
    spatial = shape[:3]
    extra = shape[3:]
    if len(shape) < 2:
        raise InputError(path, f"image has {len(shape)} dimension(s); a CT needs 3")
    if any(s > 1 for s in extra):
        raise InputError(path, f"image is {len(shape)}D with shape {shape}; expected a single 3D volume")
    if any(s <= 0 for s in spatial):
        raise InputError(path, f"image shape {shape} has an empty dimension")
    n_voxels = int(np.prod(np.array(spatial, dtype=np.float64)))
    if n_voxels > max_voxels:
        size = "x".join(map(str, spatial))
        raise InputError(path, f"header claims {size} = {n_voxels:,} voxels, over the limit of {max_voxels:,}")
    affine = image.affine
    if affine is None or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError(path, "image has no valid voxel-to-world affine (degenerate or non-finite)")
    return image


def read_nifti_array(path: Path, image: nib.Nifti1Image, dtype: type = np.float32) -> np.ndarray:
    """Read the voxels as a 3D array of ``dtype``; truncated data -> InputError."""
    try:
        data = np.asarray(image.dataobj, dtype=dtype)
    except (EOFError, OSError, ValueError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(path, f"voxel data cannot be read, the file is probably truncated ({exc})") from exc
    data = data.reshape(data.shape[:3] if data.ndim >= 3 else (*data.shape, 1))
    return data


def read_nifti_volume(path: Path) -> Volume:
    """Read a CT NIfTI as a float32 HU ``Volume``. NaN/inf voxels are refused."""
    path = Path(path)
    image = open_nifti(path)
    data = read_nifti_array(path, image)
    if not np.all(np.isfinite(data)):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise InputError(path, f"image contains {bad:,} NaN or infinite voxel values")
    notes = []
    axcodes = "".join(nib.aff2axcodes(image.affine))
    if axcodes != "RAS":
        notes.append(f"stored in {axcodes} axis order")
    return Volume(
        array=data,
        affine=np.asarray(image.affine, dtype=np.float64),
        provenance=Provenance(source=str(path), format="nifti", intensity="hu", notes=tuple(notes)),
    )


def write_nifti(array: np.ndarray, affine: np.ndarray, path: Path, *, dtype: type | None = None) -> Path:
    """Write ``array`` with ``affine`` (sform and qform set, code 'scanner') to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = array.astype(dtype) if dtype is not None else array
    image = nib.Nifti1Image(data, affine)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    tmp = path.with_name(".part-" + path.name)  # keeps the suffix nibabel reads the format from
    nib.save(image, str(tmp))
    tmp.replace(path)
    return path
