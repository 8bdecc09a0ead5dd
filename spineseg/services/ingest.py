"""Turn uploaded files into one CT input: a single NIfTI / image / NumPy file, or a DICOM
series (many files, or a .zip extracted safely), and check that it and the optional ground
truth can be read before a job is queued.

A ground truth is checked by ``check_truth`` wherever one arrives (a study's upload, resumable
or not, and a dataset's case), and a .zip of per-structure files is unpacked by
``unpack_truth`` first, so the upload page, the API and the dataset page accept and refuse
the same truths."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from spineseg.config import Settings
from spineseg.errors import InputError
from spineseg.imaging.archive import extract_zip_safely
from spineseg.imaging.io import IMAGE_SUFFIXES, NIFTI_SUFFIXES, NUMPY_SUFFIXES, load_labels, load_volume
from spineseg.imaging.labels import is_structure_file
from spineseg.imaging.limits import MAX_SERIES_FILES, check_segmentable, dicom_series_bytes
from spineseg.imaging.volume import LabelMap, Volume

ZIP_MAX_FILES = MAX_SERIES_FILES
TRUTH_ZIP_MAX_FILES = 200  # one file per vertebra and the sacrum, with room for TotalSegmentator's other organs
STRUCTURES_FOLDER = "structures"
NO_SPINE_ON_CT = ("label map has no spine labels on this CT (wrong convention, or the labels belong to "
                  "another scan?)")
SERIES_FOLDER = "series"
# An uploaded zip may inflate to this many times the upload limit (DICOM deflates 2-5x) ...
ZIP_EXPANSION_FACTOR = 4


def extract_limit_bytes(settings: Settings) -> int:
    """... and never past what the largest allowed DICOM series takes uncompressed."""
    return min(ZIP_EXPANSION_FACTOR * settings.max_upload_bytes,
               dicom_series_bytes(settings.max_voxels, ZIP_MAX_FILES))


def input_kind(name: str) -> str:
    """``nifti``, ``image``, ``numpy`` or ``dicom`` (anything else is read as DICOM)."""
    lower = name.lower()
    for kind, suffixes in (("nifti", NIFTI_SUFFIXES), ("image", IMAGE_SUFFIXES), ("numpy", NUMPY_SUFFIXES)):
        if lower.endswith(suffixes):
            return kind
    return "dicom"


def arrange_input(files: dict[Path, str], input_dir: Path, settings: Settings) -> tuple[Path, str]:
    """Decide what the uploaded ``files`` (disk path -> client name) are; returns the path to
    read and its kind. One .zip is extracted to ``input_dir/series`` under numbers, never its
    entries' names (``files`` then maps each extracted file to ``zip name/entry name`` instead
    of the zip, so a later error names the entry the client knows); several files must all be
    DICOM slices of one series (``InputError`` naming the first that is not)."""
    if not files:
        raise InputError("files", "no file was uploaded: choose a DICOM folder, a .zip, a NIfTI or an image")
    if len(files) == 1:
        path, name = next(iter(files.items()))
        if path.stat().st_size == 0:
            raise InputError(name, "file is empty")
        if name.lower().endswith(".zip"):
            target = input_dir / SERIES_FOLDER
            entries: dict[Path, str] = {}
            extract_zip_safely(path, target, max_total_bytes=extract_limit_bytes(settings), max_files=ZIP_MAX_FILES,
                               numbered=True, entry_names=entries)  # the entries' names are the client's
            path.unlink()
            if entries:  # an empty zip keeps its own name, for the error that follows
                del files[path]
                files.update({extracted: f"{name}/{entry}" for extracted, entry in entries.items()})
            return target, "dicom"
        return path, input_kind(name)
    for name in files.values():
        kind = "zip" if name.lower().endswith(".zip") else input_kind(name)
        if kind != "dicom":
            raise InputError(name, f"several files are read as one DICOM series, but this is a {kind} file: "
                                   "upload a NIfTI, image or zip on its own")
    return input_dir, "dicom"


# Uploads validated (read in full) at the same time. Each read may hold a whole volume in memory
# (up to ~9 GB for the largest allowed scan, see imaging.limits), so eight uploads at once must
# not mean eight volumes at once: the others wait for a slot.
VALIDATION_SLOTS = 2
_validation_slots = threading.BoundedSemaphore(VALIDATION_SLOTS)


@contextmanager
def validation_slot() -> Iterator[None]:
    """Hold one of ``VALIDATION_SLOTS`` while reading an uploaded volume in full."""
    with _validation_slots:
        yield


def unpack_truth(truth: Path, max_bytes: int) -> Path:
    """A truth uploaded as a .zip of per-structure files (TotalSegmentator's
    ``vertebrae_<LEVEL>.nii.gz``, ``sacrum.nii.gz``) -> the folder holding them, extracted
    safely beside the zip (which is removed, as is every other file of the archive); any
    other truth is returned as it is. ``InputError`` naming the zip when it holds none."""
    if not truth.name.lower().endswith(".zip"):
        return truth
    target = truth.parent / STRUCTURES_FOLDER
    extracted = extract_zip_safely(truth, target, max_total_bytes=max_bytes, max_files=TRUTH_ZIP_MAX_FILES)
    structures = [path for path in extracted if is_structure_file(path.name)]
    for path in extracted:
        if path not in structures:
            path.unlink()
    folders = sorted({path.parent for path in structures})
    if not folders:
        raise InputError(truth, "the zip holds no per-structure label files (vertebrae_<LEVEL>.nii.gz, "
                                "sacrum.nii.gz)")
    if len(folders) > 1:
        raise InputError(truth, "the zip holds per-structure files in more than one folder "
                                f"({', '.join(str(f.relative_to(target)) for f in folders)}): zip one case")
    truth.unlink()
    return folders[0]


def check_truth(volume: Volume, truth_path: Path, convention: str = "auto") -> LabelMap:
    """The truth on ``volume``'s grid; ``InputError`` naming the truth when it cannot be read,
    when its grid does not overlap the CT, or when no spine label lands on the CT."""
    labels = load_labels(truth_path, volume, convention=convention)
    if not labels.mask.any():
        raise InputError(truth_path, NO_SPINE_ON_CT)
    return labels


def check_inputs(input_path: Path, truth_path: Path | None) -> Volume:
    """Read the CT (and the truth onto its grid, ``check_truth``) once, so a bad file is
    refused at upload time with an ``InputError`` naming it, not later as a failed job. A CT
    under 16x16 pixels per slice is refused too (``limits.check_segmentable``). At most
    ``VALIDATION_SLOTS`` run at once."""
    with validation_slot():
        volume = load_volume(input_path)
        check_segmentable(volume.provenance.source, volume.shape)
        if truth_path is not None:
            check_truth(volume, truth_path)
    return volume
