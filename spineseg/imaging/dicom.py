"""Read a CT series from DICOM files: a folder (searched recursively), one file, or a zip.

Steps: read every file's header only (no pixels) -> ignore files that are not DICOM -> group
by SeriesInstanceUID -> pick the series (the one asked for, else the CT series with the most
slices) -> check the slices agree on orientation, size and pixel spacing -> order them by
position along the slice normal (``imaging.dicom_geometry``) -> refuse grids above the voxel
limit -> decode pixels (compressed syntaxes through pydicom's decoders and the pylibjpeg
plugins) -> RescaleSlope/Intercept -> float32 HU -> resample irregular gaps. The result is a
``Volume`` of shape (columns, rows, slices) on the grid dcm2niix would write, affine in RAS+.
"""

from __future__ import annotations

import logging
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from spineseg.errors import InputError
from spineseg.imaging.archive import extract_zip_safely
from spineseg.imaging.dicom_geometry import interpolate_slices, plan_slices
from spineseg.imaging.limits import (
    MAX_ABS_HU,
    MAX_SERIES_FILES,
    check_grid,
    check_intensities,
    check_spacing,
    dicom_series_bytes,
    resolve_max_voxels,
)
from spineseg.imaging.volume import Provenance, Volume

logger = logging.getLogger(__name__)

ORIENTATION_TOLERANCE = 1e-4
SPACING_TOLERANCE_MM = 1e-3
ZIP_MAX_FILES = MAX_SERIES_FILES
MAX_RESCALE_SLOPE = 1000.0  # CT slopes are 1 (sometimes 0.5 or 2); beyond this HU are meaningless
# Decoder failures surface as any of these, depending on the plugin.
_DECODE_ERRORS = (RuntimeError, NotImplementedError, ValueError, TypeError, KeyError, AttributeError, OSError,
                  IndexError, EOFError, struct.error, ArithmeticError)
_HEADER_ERRORS = (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError, AttributeError, IndexError,
                  OverflowError, struct.error)


@dataclass(frozen=True)
class SliceHeader:
    """What we need from one DICOM file's header, read without its pixel data."""

    path: Path
    series_uid: str
    study_uid: str | None
    modality: str
    description: str
    is_image: bool
    rows: int = 0
    columns: int = 0
    frames: int = 1
    samples_per_pixel: int = 1
    is_localizer: bool = False


def _read_header(path: Path) -> pydicom.Dataset | None:
    """The dataset without pixel data, or ``None`` when the file is not DICOM."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except _HEADER_ERRORS:
        return None


def _summarise(path: Path, ds: pydicom.Dataset) -> SliceHeader:
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    return SliceHeader(
        path=path,
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        study_uid=str(ds.get("StudyInstanceUID", "")) or None,
        modality=str(ds.get("Modality", "unknown")) or "unknown",
        description=str(ds.get("SeriesDescription", "")),
        is_image="Rows" in ds and "Columns" in ds,
        rows=int(ds.get("Rows", 0) or 0),
        columns=int(ds.get("Columns", 0) or 0),
        frames=int(ds.get("NumberOfFrames", 1) or 1),
        samples_per_pixel=int(ds.get("SamplesPerPixel", 1) or 1),
        is_localizer="LOCALIZER" in image_type,
    )


def _scan(files: list[Path]) -> tuple[list[tuple[SliceHeader, pydicom.Dataset]], list[Path]]:
    found: list[tuple[SliceHeader, pydicom.Dataset]] = []
    rejected: list[Path] = []
    for file in files:
        ds = _read_header(file)
        try:
            header = None if ds is None else _summarise(file, ds)
        except _HEADER_ERRORS:  # pydicom parses elements lazily: a malformed Rows shows up here
            header = None
        if header is None:
            rejected.append(file)
        else:
            found.append((header, ds))
    return found, rejected


def _describe(uid: str, members: list[SliceHeader]) -> str:
    images = sum(m.is_image for m in members)
    text = f"{uid or '<no uid>'} ({members[0].modality}, {images} image(s)"
    return text + (f", {members[0].description!r})" if members[0].description else ")")


def _choose_series(source: str, groups: dict[str, list[SliceHeader]], series_uid: str | None) -> tuple[str, list[str]]:
    """The uid of the series to read, plus notes on what was skipped."""
    if series_uid is not None:
        if series_uid not in groups:
            available = "; ".join(_describe(uid, m) for uid, m in groups.items())
            raise InputError(source, f"series {series_uid} not found; available: {available}")
        chosen = series_uid
    else:
        ct = {uid: m for uid, m in groups.items() if m[0].modality == "CT" and any(h.is_image for h in m)}
        if not ct:
            modalities = sorted({m[0].modality for m in groups.values()})
            if len(modalities) == 1:
                raise InputError(source, f"modality {modalities[0]} is not CT")
            raise InputError(source, f"no CT series found (modalities present: {', '.join(modalities)})")
        sizes = {uid: sum(h.is_image for h in members) for uid, members in ct.items()}
        ranked = sorted(sizes, key=lambda uid: (-sizes[uid], uid))
        if len(ranked) > 1 and sizes[ranked[0]] == sizes[ranked[1]]:
            tied = "; ".join(_describe(uid, ct[uid]) for uid in ranked if sizes[uid] == sizes[ranked[0]])
            raise InputError(source, f"several CT series of the same size, choose one with --series-uid: {tied}")
        chosen = ranked[0]
    members = groups[chosen]
    if members[0].modality != "CT":
        raise InputError(source, f"modality {members[0].modality} is not CT (series {chosen})")
    if not any(h.is_image for h in members):
        raise InputError(source, f"series {chosen} holds no images")
    notes: list[str] = []
    skipped = [_describe(uid, m) for uid, m in groups.items() if uid != chosen]
    if skipped:
        notes.append(f"read series {_describe(chosen, members)}; skipped: {'; '.join(skipped)}")
        logger.info("%s: read one series, skipped %d other(s) (named in the notes)", source, len(skipped))
    return chosen, notes


def _float_list(ds: pydicom.Dataset, keyword: str, count: int, name_of: Callable[[Path], str], path: Path):
    value = ds.get(keyword)
    try:
        numbers = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(name_of(path), f"missing or unreadable {keyword}") from exc
    if numbers.shape != (count,) or not np.all(np.isfinite(numbers)):
        raise InputError(name_of(path), f"{keyword} should hold {count} numbers, got {list(value)}")
    return numbers


def _pixel_spacing(ds: pydicom.Dataset, name_of: Callable[[Path], str], path: Path) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        if keyword in ds:
            spacing = _float_list(ds, keyword, 2, name_of, path)
            check_spacing(name_of(path), spacing, keyword)
            return float(spacing[0]), float(spacing[1])
    return None


def _check_consistent(
    source: str, slices: list[tuple[SliceHeader, pydicom.Dataset]], name_of: Callable[[Path], str]
) -> tuple[np.ndarray, tuple[float, float] | None, list[np.ndarray]]:
    """Orientation, pixel spacing and one position per slice; refuses slices that disagree."""
    first_header, first_ds = slices[0]
    orientation = _float_list(first_ds, "ImageOrientationPatient", 6, name_of, first_header.path)
    spacing = _pixel_spacing(first_ds, name_of, first_header.path)
    positions = []
    for header, ds in slices:
        if header.frames > 1:
            raise InputError(name_of(header.path), "multi-frame (enhanced) DICOM images are not supported")
        if header.samples_per_pixel != 1:
            raise InputError(name_of(header.path), "colour DICOM images are not CT")
        if (header.rows, header.columns) != (first_header.rows, first_header.columns):
            raise InputError(
                name_of(header.path),
                f"image size {header.rows}x{header.columns} differs from the rest of the series "
                f"({first_header.rows}x{first_header.columns})",
            )
        other = _float_list(ds, "ImageOrientationPatient", 6, name_of, header.path)
        if np.max(np.abs(other - orientation)) > ORIENTATION_TOLERANCE:
            raise InputError(name_of(header.path), "slice orientation differs from the rest of the series")
        other_spacing = _pixel_spacing(ds, name_of, header.path)
        if (other_spacing is None) != (spacing is None) or (
            spacing is not None
            and max(abs(a - b) for a, b in zip(other_spacing, spacing, strict=True)) > SPACING_TOLERANCE_MM
        ):
            raise InputError(name_of(header.path), "pixel spacing differs from the rest of the series")
        positions.append(_float_list(ds, "ImagePositionPatient", 3, name_of, header.path))
        _rescale(ds, name_of(header.path))
    return orientation, spacing, positions


def _rescale(ds: pydicom.Dataset, source: str) -> tuple[float, float]:
    """RescaleSlope and RescaleIntercept (slope 0 or absent = 1), refused when not finite or
    when no CT could have them: ``|slope| > MAX_RESCALE_SLOPE``, ``|intercept| > MAX_ABS_HU``."""
    try:
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(source, f"unreadable RescaleSlope/RescaleIntercept ({exc})") from exc
    if not (np.isfinite(slope) and abs(slope) <= MAX_RESCALE_SLOPE):
        raise InputError(source, f"RescaleSlope {slope:g} is not a plausible CT rescale "
                                 f"(finite, at most {MAX_RESCALE_SLOPE:g} in size)")
    if not (np.isfinite(intercept) and abs(intercept) <= MAX_ABS_HU):
        raise InputError(source, f"RescaleIntercept {intercept:g} is not a plausible CT rescale "
                                 f"(finite, at most {MAX_ABS_HU:g} in size)")
    return slope, intercept


def _decode_hu(header: SliceHeader, name_of: Callable[[Path], str]) -> np.ndarray:
    """One slice as float32 HU, shape (rows, columns)."""
    try:
        ds = pydicom.dcmread(header.path)
    except _HEADER_ERRORS as exc:
        raise InputError(name_of(header.path), f"cannot read DICOM file ({type(exc).__name__}: {exc})") from exc
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    syntax_text = f"{syntax.name} ({syntax})" if syntax is not None else "unknown transfer syntax"
    if "PixelData" not in ds:
        raise InputError(name_of(header.path), "image without pixel data")
    try:
        pixels = ds.pixel_array
    except _DECODE_ERRORS as exc:
        raise InputError(name_of(header.path), f"cannot decode pixel data in {syntax_text}: {exc}") from exc
    if pixels.shape != (header.rows, header.columns):
        raise InputError(
            name_of(header.path),
            f"pixel data has shape {pixels.shape}, header says {header.rows}x{header.columns}",
        )
    slope, intercept = _rescale(ds, name_of(header.path))
    hu = pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    check_intensities(name_of(header.path), hu, "CT numbers after RescaleSlope/Intercept")
    return hu


def _read_files(
    files: list[Path],
    source: str,
    name_of: Callable[[Path], str],
    *,
    series_uid: str | None,
    max_voxels: int,
    single_file: bool = False,
) -> Volume:
    found, rejected = _scan(files)
    if not found:
        if single_file:
            raise InputError(source, "not a DICOM file")
        detail = f" ({len(rejected)} file(s) were not DICOM)" if rejected else ""
        raise InputError(source, f"no DICOM files found{detail}")
    notes: list[str] = []
    if rejected:
        notes.append(f"ignored {len(rejected)} file(s) that are not DICOM")
        logger.info("%s: ignored %d non-DICOM file(s)", source, len(rejected))

    groups: dict[str, list[SliceHeader]] = {}
    by_path = {}
    for header, ds in found:
        groups.setdefault(header.series_uid, []).append(header)
        by_path[header.path] = ds
    chosen, series_notes = _choose_series(source, groups, series_uid)
    notes.extend(series_notes)

    members = [h for h in groups[chosen] if h.is_image]
    localizers = [h for h in members if h.is_localizer]
    if localizers and len(localizers) < len(members):
        members = [h for h in members if not h.is_localizer]
        notes.append(f"dropped {len(localizers)} localizer image(s) from the series")
    slices = [(h, by_path[h.path]) for h in members]
    orientation, spacing, positions = _check_consistent(source, slices, name_of)
    if spacing is None:
        spacing = (1.0, 1.0)
        notes.append("no PixelSpacing in the header: in-plane spacing taken as 1 mm")
    rows, columns = members[0].rows, members[0].columns
    thickness_value = slices[0][1].get("SliceThickness")
    try:
        thickness = float(thickness_value) if thickness_value not in (None, "") else None
    except (TypeError, ValueError):
        thickness = None
    try:
        plan = plan_slices(source, orientation, positions, spacing, rows, thickness)
    except ValueError as exc:
        raise InputError(source, f"bad ImageOrientationPatient ({exc})") from exc
    notes.extend(plan.notes)
    check_spacing(source, np.linalg.norm(plan.affine[:3, :3], axis=0), "voxel size (pixel spacing, slice step)")

    slice_count = max(len(plan.kept), len(plan.target_positions_mm))
    check_grid(source, (columns, rows, slice_count), max_voxels=max_voxels)

    try:
        stack = np.empty((columns, rows, len(plan.kept)), dtype=np.float32)
        for k, index in enumerate(plan.kept):
            stack[:, :, k] = _decode_hu(members[index], name_of).T[:, ::-1]
        if plan.needs_resampling:
            stack = interpolate_slices(stack, plan.positions_mm, plan.target_positions_mm)
    except MemoryError as exc:
        raise InputError(source, f"not enough memory for a {columns}x{rows}x{slice_count} volume") from exc

    study = members[0].study_uid
    # neither UIDs nor file names: read before de-identification, they would be the original's
    logger.info("%s: read a DICOM series of %d image(s), grid %s", source, len(members), stack.shape)
    provenance = Provenance(
        source=source,
        format="dicom",
        intensity="hu",
        series_uid=chosen or None,
        study_uid=study,
        modality=members[0].modality,
        notes=tuple(notes),
    )
    return Volume(array=stack, affine=plan.affine, provenance=provenance)


def read_dicom_series(path: Path, *, series_uid: str | None = None, max_voxels: int | None = None) -> Volume:
    """Read one CT series from a folder of DICOM files (searched recursively) or one file.

    series_uid: which series to read when the folder holds several; default: the CT series with
        the most slices (the choice and the skipped series go into ``provenance.notes``).
    max_voxels: refuse larger grids; default ``Settings.max_voxels``.
    Returns a float32 HU ``Volume`` of shape (columns, rows, slices), affine voxel -> RAS+ mm.
    Raises ``InputError`` naming the path for anything unusable.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise InputError(path, "no DICOM files found (the folder is empty)")
    return _read_files(
        files,
        str(path),
        str,
        series_uid=series_uid,
        max_voxels=resolve_max_voxels(max_voxels),
        single_file=not path.is_dir(),
    )


def read_dicom_zip(
    path: Path,
    *,
    series_uid: str | None = None,
    max_voxels: int | None = None,
    max_total_bytes: int | None = None,
) -> Volume:
    """Read one CT series from a zip archive of DICOM files.

    The archive is extracted with ``archive.extract_zip_safely`` into a temporary folder that
    is removed afterwards. max_total_bytes caps the uncompressed size (default: what a series
    of ``max_voxels`` 16-bit pixels in ``ZIP_MAX_FILES`` files can take, see
    ``limits.dicom_series_bytes``). Errors name the zip and the member.
    """
    path = Path(path)
    limit = resolve_max_voxels(max_voxels)
    byte_limit = max_total_bytes if max_total_bytes is not None else dicom_series_bytes(limit, ZIP_MAX_FILES)
    with tempfile.TemporaryDirectory(prefix="spineseg-zip-") as folder:
        root = Path(folder)
        files = extract_zip_safely(path, root, max_total_bytes=byte_limit, max_files=ZIP_MAX_FILES)
        if not files:
            raise InputError(path, "no DICOM files found (the archive is empty)")

        def name_of(member: Path) -> str:
            return f"{path}:{member.relative_to(root).as_posix()}"

        return _read_files(sorted(files), str(path), name_of, series_uid=series_uid, max_voxels=limit)
