"""The raw NIfTI-1/NIfTI-2 header, parsed and checked by us before nibabel sees the file.

nibabel trusts its header: it reads every extension the header chain declares (a 1 MB
.nii.gz can declare a 2 GB extension), raises ``HeaderDataError`` for negative pixdim when it
builds the affine, and happily maps complex, RGB or float128 data. So ``read_nifti_header``
reads the first bytes (inflating only those for .nii.gz), walks the extension chain without
reading it, and refuses anything we would not segment, each refusal an ``InputError`` naming
the file and the value:

- ``sizeof_hdr`` other than 348 (NIfTI-1) / 540 (NIfTI-2) in either byte order, a magic other
  than ``n+1``/``n+2`` (``ni1``/``ni2`` are header/image pairs, which an upload cannot be);
- ``dim[0]`` outside 1..7, an empty or negative dimension, more than one 3D volume;
- a datatype outside ``ACCEPTED_DATATYPES`` (integers and float32/64: no binary, complex,
  RGB, float128);
- negative or non-finite ``pixdim[1..3]``; without an sform (then nibabel, which silently
  turns a 0 into 1, builds the affine from pixdim) pixdim outside the plausible spacing range
  of ``limits.check_spacing``; infinite ``scl_slope``/``scl_inter``;
- ``vox_offset`` inside the header (0 means unset: right after it), negative, non-finite or
  above ``MAX_VOX_OFFSET``; an extension whose size is below 16 or runs past ``vox_offset``.
and ``check_data_size`` refuses an uncompressed .nii shorter than ``vox_offset`` + the voxel
bytes its header declares.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from spineseg.errors import InputError
from spineseg.imaging.limits import check_spacing

NIFTI1_SIZE, NIFTI2_SIZE = 348, 540
MAX_VOX_OFFSET = 16 * 2**20  # extensions of real files are a few KB (AFNI, DICOM headers: < 1 MB)
ACCEPTED_DATATYPES = {
    2: np.dtype(np.uint8), 4: np.dtype(np.int16), 8: np.dtype(np.int32), 16: np.dtype(np.float32),
    64: np.dtype(np.float64), 256: np.dtype(np.int8), 512: np.dtype(np.uint16), 768: np.dtype(np.uint32),
    1024: np.dtype(np.int64), 1280: np.dtype(np.uint64),
}
REFUSED_DATATYPES = {1: "binary (1 bit)", 32: "complex64", 128: "RGB24", 1536: "float128", 1792: "complex128",
                     2048: "complex256", 2304: "RGBA32", 0: "unknown (0)"}


@dataclass(frozen=True)
class NiftiHeader:
    """What the checks need from a NIfTI header.

    version: 1 or 2. shape: the spatial shape (I, J, K), 2D padded with K = 1. dtype: numpy
    dtype of the stored voxels (byte order as stored). pixdim: pixdim[1..3] in mm.
    vox_offset: where the voxels start. scl_slope / scl_inter: as stored (NaN or 0 slope =
    no scaling).
    """

    version: int
    shape: tuple[int, int, int]
    dtype: np.dtype
    pixdim: tuple[float, float, float]
    vox_offset: int
    scl_slope: float
    scl_inter: float

    @property
    def data_bytes(self) -> int:
        return int(np.prod(np.array(self.shape, dtype=np.float64))) * self.dtype.itemsize


def _open(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _layout(path: Path, head: bytes) -> tuple[int, str]:
    """(version, byte order) from ``sizeof_hdr``."""
    if len(head) >= 4:
        for order in "<>":
            size = struct.unpack(order + "i", head[:4])[0]
            if size == NIFTI1_SIZE and len(head) >= NIFTI1_SIZE:
                return 1, order
            if size == NIFTI2_SIZE and len(head) >= NIFTI2_SIZE:
                return 2, order
    raise InputError(path, "not a NIfTI file: no NIfTI-1 or NIfTI-2 header at its start "
                           f"({len(head)} header bytes read)")


def _fields(path: Path, head: bytes, version: int, order: str) -> dict:
    if version == 1:
        magic = head[344:348]
        dims = struct.unpack(order + "8h", head[40:56])
        datatype = struct.unpack(order + "h", head[70:72])[0]
        pixdim = struct.unpack(order + "8f", head[76:108])
        vox_offset, slope, inter = struct.unpack(order + "3f", head[108:120])
        sform_code = struct.unpack(order + "h", head[254:256])[0]
        good_magic, pair_magic = b"n+1\x00", b"ni1\x00"
    else:
        magic = head[4:8]
        datatype = struct.unpack(order + "h", head[12:14])[0]
        dims = struct.unpack(order + "8q", head[16:80])
        pixdim = struct.unpack(order + "8d", head[104:168])
        vox_offset = struct.unpack(order + "q", head[168:176])[0]
        slope, inter = struct.unpack(order + "2d", head[176:192])
        sform_code = struct.unpack(order + "i", head[348:352])[0]
        good_magic, pair_magic = b"n+2\x00", b"ni2\x00"
    if magic == pair_magic:
        raise InputError(path, f"header is for a .hdr/.img pair (magic {magic[:3].decode()!r}); "
                               "upload a single-file .nii or .nii.gz")
    if magic != good_magic:
        raise InputError(path, f"not a NIfTI-{version} file: magic is {magic!r}, expected {good_magic!r}")
    return {"dims": dims, "datatype": datatype, "pixdim": pixdim, "vox_offset": vox_offset,
            "slope": slope, "inter": inter, "sform_code": sform_code}


def _shape(path: Path, dims: tuple[int, ...]) -> tuple[int, int, int]:
    ndim = int(dims[0])
    if not 1 <= ndim <= 7:
        raise InputError(path, f"header dim[0] = {ndim}: the number of dimensions must be 1..7")
    shape = tuple(int(d) for d in dims[1:ndim + 1])
    if ndim < 2:
        raise InputError(path, f"image has {ndim} dimension(s); a CT needs 3")
    if any(d <= 0 for d in shape):
        raise InputError(path, f"image shape {shape} has an empty or negative dimension")
    if any(d > 1 for d in shape[3:]):
        raise InputError(path, f"image is {ndim}D with shape {shape}; expected a single 3D volume")
    spatial = (*shape[:3], 1, 1)[:3]
    return spatial  # type: ignore[return-value]


def _check_extensions(path: Path, stream: BinaryIO, start: int, vox_offset: int, order: str) -> None:
    """Walk the extension chain between the header and the voxels without reading it."""
    flag = stream.read(4)
    if len(flag) < 4 or flag[0] == 0:
        return
    position = start + 4
    while vox_offset - position >= 16:
        raw = stream.read(8)
        if len(raw) < 8:
            raise InputError(path, "header extension is cut off (file truncated)")
        esize, ecode = struct.unpack(order + "2i", raw)
        if esize < 16 or position + esize > vox_offset:
            raise InputError(path, f"header extension (code {ecode}) declares {esize} bytes, which does not fit "
                                   f"between the header and the voxel data at offset {vox_offset}")
        stream.seek(esize - 8, 1)
        position += esize


def read_nifti_header(path: Path) -> NiftiHeader:
    """Parse and check ``path``'s header (module docstring); reads at most ``MAX_VOX_OFFSET``
    bytes. Raises ``InputError`` naming the file."""
    path = Path(path)
    try:
        with _open(path) as stream:
            head = stream.read(NIFTI2_SIZE)
            version, order = _layout(path, head)
            values = _fields(path, head, version, order)
            shape = _shape(path, values["dims"])
            datatype = int(values["datatype"])
            if datatype not in ACCEPTED_DATATYPES:
                kind = REFUSED_DATATYPES.get(datatype, f"code {datatype}")
                raise InputError(path, f"NIfTI datatype {kind} is not a CT intensity type; accepted: "
                                       "8/16/32/64-bit integers, float32, float64")
            pixdim = tuple(float(p) for p in values["pixdim"][1:4])
            if not all(np.isfinite(p) and p >= 0 for p in pixdim):
                raise InputError(path, f"pixdim[1..3] = {pixdim}: voxel sizes must be finite and not negative")
            if int(values["sform_code"]) <= 0:  # no sform: nibabel builds the geometry from pixdim
                ndim = min(int(values["dims"][0]), 3)
                check_spacing(path, pixdim[:ndim], "pixdim (voxel size; the file has no sform)")
            slope, inter = float(values["slope"]), float(values["inter"])
            if np.isinf(slope) or np.isinf(inter):
                raise InputError(path, f"scl_slope/scl_inter ({slope:g}, {inter:g}) must be finite")
            offset = float(values["vox_offset"])
            size = NIFTI1_SIZE if version == 1 else NIFTI2_SIZE
            if offset == 0:  # unset: nibabel (and the standard's readers) start right after the header
                offset = size + 4
            if not np.isfinite(offset) or offset < size + 4 or offset > MAX_VOX_OFFSET:
                raise InputError(path, f"vox_offset {offset:g} is not a plausible start of the voxel data "
                                       f"(must be {size + 4}..{MAX_VOX_OFFSET})")
            stream.seek(size)
            _check_extensions(path, stream, size, int(offset), order)
    except (gzip.BadGzipFile, zlib.error, EOFError) as exc:
        raise InputError(path, f"could not be read as NIfTI: not a valid gzip stream ({exc})") from exc
    except OSError as exc:
        raise InputError(path, f"could not be read as NIfTI ({exc.strerror or exc})") from exc
    return NiftiHeader(version, shape, ACCEPTED_DATATYPES[datatype].newbyteorder(order),  # type: ignore[arg-type]
                       pixdim, int(offset), slope, inter)


def check_data_size(path: Path, header: NiftiHeader) -> None:
    """An uncompressed .nii must hold the voxel bytes its header declares (a .nii.gz is
    checked while it is inflated)."""
    if path.name.lower().endswith(".gz"):
        return
    available = path.stat().st_size - header.vox_offset
    if available < header.data_bytes:
        shape = "x".join(map(str, header.shape))
        raise InputError(path, f"file holds {max(available, 0):,} bytes of voxel data but its header declares "
                               f"{header.data_bytes:,} ({shape} {header.dtype.name}): truncated")
