"""Where a study's files live: ``DATA_DIR/studies/<study id>/``.

```
input/     the uploaded CT files, names made safe (a DICOM series is many files here)
truth/     the uploaded ground truth, when given
outputs/   ct.nii.gz (the CT as NIfTI, for the viewer), mask.nii.gz, summary.json,
           truth.nii.gz (truth on the CT grid), overlays/*.png, seg.dcm and mesh.stl (made
           on first download)
```
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_name(name: str, taken: set[str]) -> str:
    """The last path part of ``name`` with unsafe characters replaced, made unique in ``taken``
    (which is updated). A browser sends a folder's files with relative paths as names."""
    base = SAFE_NAME.sub("_", name.replace("\\", "/").rsplit("/", 1)[-1]).lstrip(".") or "file"
    base = base[:120]
    candidate, counter = base, 1
    while candidate in taken:
        counter += 1
        stem, dot, suffix = base.partition(".")
        candidate = f"{stem}_{counter}{dot}{suffix}"
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
    def outputs(self) -> Path:
        return self.root / "outputs"

    @property
    def ct(self) -> Path:
        return self.outputs / "ct.nii.gz"

    @property
    def mask(self) -> Path:
        return self.outputs / "mask.nii.gz"

    @property
    def truth_on_grid(self) -> Path:
        return self.outputs / "truth.nii.gz"

    @property
    def summary(self) -> Path:
        return self.outputs / "summary.json"

    @property
    def overlays(self) -> Path:
        return self.outputs / "overlays"

    @property
    def seg_dcm(self) -> Path:
        return self.outputs / "seg.dcm"

    @property
    def mesh(self) -> Path:
        return self.outputs / "mesh.stl"

    def create(self) -> None:
        self.input_dir.mkdir(parents=True, exist_ok=True)

    def delete(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def clear_outputs(self) -> None:
        shutil.rmtree(self.outputs, ignore_errors=True)


def orphan_study_dirs(studies_dir: Path, known_ids: set[str], *, older_than_s: float = 600.0) -> list[Path]:
    """Study folders with no database row (an upload cut off by a crash), untouched for
    ``older_than_s`` seconds so an upload still in progress elsewhere is left alone."""
    if not studies_dir.is_dir():
        return []
    cutoff = time.time() - older_than_s
    return [folder for folder in studies_dir.iterdir()
            if folder.is_dir() and re.fullmatch(r"[0-9a-f]{32}", folder.name)
            and folder.name not in known_ids and folder.stat().st_mtime < cutoff]
