"""Where a study's files live: ``DATA_DIR/studies/<study id>/``.

```
input/           the uploaded CT files, numbered, never under the client's names (a DICOM series is
                 many files here)
truth/           the uploaded ground truth, when given
runs/<job id>/   one run's outputs (``RunFiles``): ct.nii.gz (the CT as NIfTI, for the viewer),
                 mask.nii.gz, summary.json, truth.nii.gz (truth on the CT grid), overlays/*.png,
                 seg.dcm and mesh.stl (made on first download)
outputs/         the same, for the one run of a study made before runs were kept (migration 0006)
```
A run's folder is named by its job row (``Job.output_dir``); ``spineseg.services.runs`` gives it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# the suffixes a reader decides by (imaging.io) and .zip / .dcm; longest first
KNOWN_SUFFIXES = (".nii.gz", ".nii", ".zip", ".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy", ".npz")
PRIVATE_UMASK = 0o077  # files 0600, folders 0700: only the service's user reads patient data
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def restrict_data_dir(data_dir: Path) -> None:
    """Everything the process creates from now on is private to its user (umask 077), and
    ``data_dir`` itself is 0700, so files made before (or by a looser tool) cannot be reached
    by other users either. Called once by ``spineseg serve`` before anything is opened."""
    previous = os.umask(PRIVATE_UMASK)
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(PRIVATE_DIR_MODE)
    for entry in data_dir.iterdir():  # the database, the queue, the key: tightened where they were looser
        if not entry.is_symlink() and stat.S_IMODE(entry.stat().st_mode) & PRIVATE_UMASK:
            entry.chmod(PRIVATE_DIR_MODE if entry.is_dir() else PRIVATE_FILE_MODE)
    if previous & PRIVATE_UMASK != PRIVATE_UMASK:
        log.debug("umask %03o -> %03o for %s", previous, PRIVATE_UMASK, data_dir)


def safe_file_name(name: str, taken: set[str]) -> str:
    """The name a received file gets on disk: its number in arrival order with only the format
    suffix of the client's ``name`` (``00001.dcm``, ``00002.nii.gz``, ``00003``), unique in
    ``taken`` (which is updated). The client's own file and folder names often carry the
    patient's name or record number, so they never name a file on the server (the caller keeps
    them in memory, for error messages, while the upload is read)."""
    lower = name.lower()
    suffix = next((s for s in KNOWN_SUFFIXES if lower.endswith(s)), "")
    number = len(taken) + 1
    while f"{number:05d}{suffix}" in taken:
        number += 1
    candidate = f"{number:05d}{suffix}"
    taken.add(candidate)
    return candidate


@dataclass(frozen=True)
class StudyFiles:
    """The folders and output paths of one study."""

    root: Path

    @classmethod
    def of(cls, studies_dir: Path, study_id: str) -> StudyFiles:
        if not re.fullmatch(r"[0-9a-f]{32}", study_id):
            raise ValueError(f"not a study id: {study_id!r}")
        return cls(studies_dir / study_id)

    @property
    def input_dir(self) -> Path:
        return self.root / "input"

    @property
    def truth_dir(self) -> Path:
        return self.root / "truth"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def run(self, output_dir: str) -> RunFiles:
        """The files of the run whose folder is ``output_dir`` (relative: ``runs/<job id>``)."""
        if not re.fullmatch(r"outputs|runs/[0-9a-f]{32}", output_dir):
            raise ValueError(f"not a run folder: {output_dir!r}")
        return RunFiles(self.root / output_dir)

    def create(self) -> None:
        self.root.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        self.root.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
        self.input_dir.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)

    def delete(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass(frozen=True)
class RunFiles:
    """The output paths of one run (one segmentation of a study)."""

    folder: Path

    @property
    def ct(self) -> Path:
        return self.folder / "ct.nii.gz"

    @property
    def mask(self) -> Path:
        return self.folder / "mask.nii.gz"

    @property
    def truth_on_grid(self) -> Path:
        return self.folder / "truth.nii.gz"

    @property
    def summary(self) -> Path:
        return self.folder / "summary.json"

    @property
    def overlays(self) -> Path:
        return self.folder / "overlays"

    @property
    def seg_dcm(self) -> Path:
        return self.folder / "seg.dcm"

    @property
    def mesh(self) -> Path:
        return self.folder / "mesh.stl"

    @property
    def levels(self) -> Path:
        """One label per vertebra (VerSe ids; unnamed ones 101, 102...)."""
        return self.folder / "levels.nii.gz"

    @property
    def levels_colours(self) -> Path:
        return self.folder / "levels_colours.json"

    @property
    def vertebrae_csv(self) -> Path:
        return self.folder / "vertebrae.csv"

    @property
    def vertebrae_stl(self) -> Path:
        return self.folder / "vertebrae_stl.zip"

    @property
    def levels_seg_dcm(self) -> Path:
        return self.folder / "levels_seg.dcm"

    @property
    def rtstruct(self) -> Path:
        return self.folder / "rtstruct.dcm"

    def clear(self) -> None:
        """Remove what an interrupted attempt of this same run left (never another run's files)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def orphan_study_dirs(studies_dir: Path, known_ids: set[str], *, older_than_s: float = 600.0) -> list[Path]:
    """Study folders with no database row (an upload cut off by a crash), untouched for
    ``older_than_s`` seconds so an upload still in progress elsewhere is left alone."""
    if not studies_dir.is_dir():
        return []
    cutoff = time.time() - older_than_s
    return [folder for folder in studies_dir.iterdir()
            if folder.is_dir() and re.fullmatch(r"[0-9a-f]{32}", folder.name)
            and folder.name not in known_ids and folder.stat().st_mtime < cutoff]
