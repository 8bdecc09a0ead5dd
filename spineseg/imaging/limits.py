"""Limits on what a user's file may make us allocate, checked on header values before any
voxel is read: grid size (voxels and the memory a segmentation of it needs), a minimum usable
size, plausible voxel spacing and plausible intensities.

Every reader (NIfTI, DICOM, pictures, NumPy) calls ``check_grid`` with the shape its header
declares, so a 1 MB file claiming 1024^3 voxels is refused before a byte of it is inflated.

Numbers, and where they come from:

- ``Settings.max_voxels`` defaults to 512 x 512 x 3072 (768 Mi voxels).
  Clinical CT has a 512 x 512 matrix (some scanners 768^2 or 1024^2). The longest common scan
  is whole-body (trauma, PET-CT): about 1.8 m; at 0.6 mm slices that is ~3000 slices, i.e.
  512 x 512 x 3000 = 0.73 Gi voxels. A 1024^2 matrix allows ~770 slices under the same cap.
  The old default (2 Gi voxels) was almost three times the largest real scan.
- ``BYTES_PER_VOXEL`` = 12 and ``BASELINE_BYTES`` = 400 MiB: bench/segment_speed.py measured
  a peak RSS of 1349 MB for 512 x 512 x 300 (78.6 M voxels). The process with torch and the
  model loaded but no scan sits near 400 MB, leaving ~950 MB / 78.6 M = 12 bytes per input
  voxel (float32 HU, its canonical copy, probabilities back on the input grid, the mask).
  The largest allowed scan then needs ~9.8 GB.
- A job may use ``JOB_MEMORY_FRACTION`` (80 %) of the machine's memory (MemTotal, or a cgroup
  ``memory.max`` when smaller): the rest is for the OS, the web process and page cache. The
  check is against the total, not MemAvailable: a scan that never fits is refused (413); one
  that fits only when the machine is quiet is queued, since the job runs later.
- Spacing within ``MIN_SPACING_MM`` .. ``MAX_SPACING_MM`` (0.05 .. 50 mm): the finest clinical
  voxels are cone-beam/dental CT at ~0.075 mm and photon-counting CT at 0.2 mm; the thickest
  slices of any volume are ~10 mm. Outside that range the header is wrong, and a
  resampling to the model's 1.5 mm grid would divide by ~0 or produce a single voxel.
- ``MIN_IN_PLANE`` = 16 pixels per side: the U-Net downsamples by 4 and an exported
  thumbnail of a CT slice is never smaller; a 1x1 "scan" cannot be segmented.
- ``MAX_ABS_HU`` = 100 000: CT numbers span -1024 .. 3071 (12 bit), extended-scale scanners
  reach ~30 000 for metal. Values beyond +-1e5 after rescale come from a broken
  RescaleSlope/scl_slope (1e308, say), not from a scanner.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from spineseg.errors import InputError, InputTooLarge

logger = logging.getLogger(__name__)

BYTES_PER_VOXEL = 12
BASELINE_BYTES = 400 * 2**20
JOB_MEMORY_FRACTION = 0.8
MIN_SPACING_MM = 0.05
MAX_SPACING_MM = 50.0
MIN_IN_PLANE = 16
MAX_ABS_HU = 100_000.0
MAX_SERIES_FILES = 10_000  # a thin-slice whole-body series has ~3000 files
# Uncompressed bytes of a DICOM series per allowed voxel (16-bit pixels) plus a header per file.
DICOM_BYTES_PER_VOXEL = 2
DICOM_HEADER_BYTES = 64 * 1024

_MEMINFO = Path("/proc/meminfo")
_CGROUP_LIMIT = Path("/sys/fs/cgroup/memory.max")


def _gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.1f} GB"


def shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def machine_memory_bytes() -> int | None:
    """Memory this process can ever get: MemTotal, or the cgroup limit when lower; ``None``
    when neither can be read (then only the voxel cap applies)."""
    total: int | None = None
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        total = None
    if total is None:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            total = None
    try:
        text = _CGROUP_LIMIT.read_text().strip()
        if text.isdigit():
            total = min(total, int(text)) if total else int(text)
    except OSError:
        pass
    return total


def resolve_max_voxels(max_voxels: int | None) -> int:
    """``max_voxels``, or ``Settings.max_voxels`` (SPINESEG_MAX_VOXELS) when ``None``."""
    if max_voxels is not None:
        return max_voxels
    from spineseg.config import Settings

    return Settings.from_env().max_voxels


def job_memory_bytes(voxels: int) -> int:
    """Estimated peak memory of segmenting a scan of ``voxels`` input voxels."""
    return BASELINE_BYTES + BYTES_PER_VOXEL * int(voxels)


def check_segmentable(source: object, shape: Sequence[int]) -> None:
    """Refuse a grid too small to segment: its two largest sides must reach ``MIN_IN_PLANE``
    (whatever the axis order; one slice is fine). A policy of the services, not of the
    readers, which read any valid image."""
    sides = sorted((int(s) for s in shape), reverse=True)
    if len(sides) < 2 or sides[1] < MIN_IN_PLANE:
        raise InputError(source, f"image of {shape_text(shape)} voxels is too small to segment: at least "
                                 f"{MIN_IN_PLANE}x{MIN_IN_PLANE} pixels per slice are needed")


def check_grid(source: object, shape: Sequence[int], *, max_voxels: int) -> int:
    """Refuse a declared grid before it is allocated; returns its voxel count.

    shape: the spatial shape from the header (2 or 3 numbers). Refuses (``InputError``) an
    empty or negative dimension; refuses (``InputTooLarge``) more than ``max_voxels`` voxels,
    or a grid whose segmentation would need more than ``JOB_MEMORY_FRACTION`` of this
    machine's memory.
    """
    dims = [int(s) for s in shape]
    text = shape_text(dims)
    if not dims or any(s <= 0 for s in dims):
        raise InputError(source, f"image shape {text} has an empty or negative dimension")
    voxels = int(np.prod(np.array(dims, dtype=np.float64)))  # float: no int64 overflow
    if voxels > max_voxels:
        raise InputTooLarge(source, f"image of {text} = {voxels:,} voxels exceeds the limit of {max_voxels:,} "
                                    "voxels (SPINESEG_MAX_VOXELS)")
    memory = machine_memory_bytes()
    needed = job_memory_bytes(voxels)
    if memory is not None and needed > JOB_MEMORY_FRACTION * memory:
        raise InputTooLarge(source, f"segmenting an image of {text} voxels needs about {_gb(needed)} of memory, "
                                    f"more than the {_gb(JOB_MEMORY_FRACTION * memory)} a job may use on this "
                                    "server")
    return voxels


def check_spacing(source: object, spacing_mm: Sequence[float], what: str = "voxel spacing") -> None:
    """Refuse non-finite spacing or spacing outside ``MIN_SPACING_MM`` .. ``MAX_SPACING_MM``."""
    values = [float(s) for s in spacing_mm]
    shown = ", ".join(f"{v:g}" for v in values)
    if not all(np.isfinite(v) for v in values):
        raise InputError(source, f"{what} ({shown} mm) is not a finite number")
    if any(v < MIN_SPACING_MM or v > MAX_SPACING_MM for v in values):
        raise InputError(source, f"{what} ({shown} mm) is outside the plausible range "
                                 f"{MIN_SPACING_MM:g}..{MAX_SPACING_MM:g} mm")


def check_intensities(source: object, values: np.ndarray, what: str = "voxel values") -> None:
    """Refuse NaN/inf, and CT numbers beyond +-``MAX_ABS_HU`` (a broken rescale).

    Two reductions and no temporary: NaN propagates into min/max and inf is an extreme, so a
    finite min and max mean every voxel is finite (the bad voxels are counted only then)."""
    if values.size:
        low, high = float(values.min()), float(values.max())
        if not (np.isfinite(low) and np.isfinite(high)):
            bad = int(values.size - np.count_nonzero(np.isfinite(values)))
            raise InputError(source, f"image contains {bad:,} NaN or infinite {what}")
        if low < -MAX_ABS_HU or high > MAX_ABS_HU:
            raise InputError(source, f"{what} {low:g}..{high:g} are not CT numbers (beyond +-{MAX_ABS_HU:g} HU)")


def dicom_series_bytes(max_voxels: int, max_files: int) -> int:
    """The most a DICOM series within ``max_voxels`` can occupy uncompressed."""
    return DICOM_BYTES_PER_VOXEL * max_voxels + DICOM_HEADER_BYTES * max_files
