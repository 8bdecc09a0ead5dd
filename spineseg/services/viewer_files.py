"""The viewer's copies of a study's images, made on first request and kept.

The CT copy belongs to the study (``<study>/viewer/ct.nii.gz`` with its crop box in
``box.json``): every run of the study shows the same CT. A label copy (prediction, truth,
vertebra levels) belongs to the run whose file it copies: it is written in a ``viewer`` folder
beside that file, so each run's outputs folder carries its own. Copies are gzip level 1 NIfTI
that the server sends with ``Content-Encoding: gzip``: the browser inflates them natively while
they arrive, and the viewer parses a plain .nii (see ``imaging.viewer_copy`` for the grid).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import nibabel as nib
import numpy as np

from spineseg.imaging.nifti import open_nifti, write_nifti
from spineseg.imaging.viewer_copy import CropBox, outline, preview, viewer_ct, viewer_labels
from spineseg.imaging.volume import Provenance, Volume

VIEWER_DIR = "viewer"
BOX_FILE = "box.json"
NIFTI_HEADER_BYTES = 352  # NIfTI-1 header and the empty extension flag

PREVIEW_STEPS = (1, 2, 3, 4)  # 1: the full copy; n: every n-th voxel, the quick first view
_lock = threading.Lock()  # two first requests for one copy make it once


def _suffix(step: int) -> str:
    return "" if step == 1 else f"-step{step}"


def _stepped(full: Path, step: int, dtype: type, made: tuple[np.ndarray, np.ndarray] | None = None) -> Path:
    """The every-``step``-th-voxel copy of the viewer file ``full``, kept beside it (from
    ``made``, the full copy's array and affine, when it was just written)."""
    if step == 1:
        return full
    target = full.with_name(full.name.removesuffix(".nii.gz") + _suffix(step) + ".nii.gz")
    if not target.is_file() or target.stat().st_mtime < full.stat().st_mtime:
        array, affine = made if made is not None else _read(full, dtype)
        write_nifti(*preview(array, affine, step), target, dtype=dtype)
    return target


def decoded_size(path: Path) -> int:
    """Bytes of the inflated copy (header + voxels): the progress bar's total."""
    image = nib.load(str(path))
    return NIFTI_HEADER_BYTES + int(np.prod(image.shape)) * image.get_data_dtype().itemsize


Held = dict[Path, np.ndarray]
"""The voxels a caller already holds for some of the files (as written), so they are not read back."""


def _read(path: Path, dtype: type, held: Held | None = None) -> tuple[np.ndarray, np.ndarray]:
    image = open_nifti(path)  # the header only: the affine exactly as the file stores it
    if held and path in held:
        return np.asarray(held[path], dtype=dtype), image.affine
    return np.asarray(image.dataobj, dtype=dtype), image.affine


def ct_copy(study_root: Path, ct_path: Path, labels: list[Path] | None = None, *, step: int = 1,
            held: Held | None = None) -> tuple[Path, CropBox]:
    """The study's viewer CT (made from ``ct_path`` on first call; the crop keeps every voxel
    of ``labels`` too), every ``step``-th voxel of it, and its crop box."""
    folder = study_root / VIEWER_DIR
    target, box_file = folder / "ct.nii.gz", folder / BOX_FILE
    made = None
    with _lock:
        if not (target.is_file() and box_file.is_file()):
            hu, affine = _read(ct_path, np.int16, held)
            label_arrays = [_read(p, np.uint8, held)[0] for p in labels or [] if p.is_file()]
            array, crop_affine, box = viewer_ct(Volume(hu, affine, Provenance(str(ct_path), "nifti")), label_arrays)
            write_nifti(array, crop_affine, target, dtype=np.int16)
            made = (array, crop_affine)
            tmp = box_file.with_name(".part-" + BOX_FILE)
            tmp.write_text(json.dumps(box.to_json()))
            tmp.replace(box_file)
        return _stepped(target, step, np.int16, made), CropBox.from_json(json.loads(box_file.read_text()))


def label_copy(study_root: Path, ct_path: Path, label_path: Path, *, as_outline: bool = False,
               step: int = 1, held: Held | None = None) -> Path:
    """The viewer copy of the label map ``label_path`` (a run's mask, truth or levels) on the
    viewer CT's grid (only each label's shell when ``as_outline``; every ``step``-th voxel),
    kept in ``viewer/`` beside it; remade when the label file is newer."""
    _ct, box = ct_copy(study_root, ct_path, [label_path], held=held)
    stem = label_path.name.removesuffix(".gz").removesuffix(".nii")
    target = label_path.parent / VIEWER_DIR / f"{stem}{'-outline' if as_outline else ''}.nii.gz"
    made = None
    with _lock:
        if not target.is_file() or target.stat().st_mtime < label_path.stat().st_mtime:
            labels, affine = _read(label_path, np.uint8, held)
            array, crop_affine = viewer_labels(labels, affine, box)
            made = (outline(array) if as_outline else array, crop_affine)
            write_nifti(*made, target, dtype=np.uint8)
        return _stepped(target, step, np.uint8, made)


def first_view_step(shape: tuple[int, ...]) -> int:
    """The step of the quick first view for a CT of ``shape`` (viewer.js chooses the same:
    every 3rd pixel across above 48 M voxels, every 2nd above 12 M, else all; every slice is
    kept, ``imaging.viewer_copy.preview``)."""
    voxels = int(np.prod(shape[:3]))
    return 3 if voxels > 48_000_000 else 2 if voxels > 12_000_000 else 1


def prepare_run(study_root: Path, ct_path: Path, labels: list[Path], step: int, held: Held | None = None) -> None:
    """Make the copies the viewer's first view asks for (the CT and ``labels`` at ``step`` and in
    full), so that first view does not wait for them; for the end of a segment job, which
    passes the arrays it holds for those files in ``held`` (they are not read back)."""
    ct_copy(study_root, ct_path, labels, step=step, held=held)
    for label in labels:
        if label.is_file():
            label_copy(study_root, ct_path, label, step=step, held=held)
