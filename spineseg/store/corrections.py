"""Corrections of a study's truth (issue 32): rows of ``Correction`` and their label files.

```
<study>/corrections/v<version>-<id>_seg-vert.nii.gz   one saved version (VerSe ids, int16, on
                                                       the grid of the run's mask it was made on)
```
The name carries ``seg-vert`` so the label readers' ``auto`` convention reads it as VerSe ids
(``imaging.labels``), the same path every uploaded truth takes. A version is never rewritten:
saving writes a new file under a new id, then its row; the version number is the next free one
of the study, and two saves racing for it both end up stored (the loser takes the next number).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from spineseg.store.models import Correction, Study
from spineseg.store.studies import new_id

CORRECTIONS_DIR = "corrections"
_FILE = re.compile(r"corrections/v\d+-[0-9a-f]{32}_seg-vert\.nii\.gz")
VERSION_ATTEMPTS = 5


def relative_path(version: int, correction_id: str) -> str:
    return f"{CORRECTIONS_DIR}/v{version}-{correction_id}_seg-vert.nii.gz"


def file_of(study_root: Path, correction: Correction) -> Path:
    """The label file of ``correction`` (refuses a stored path that is not one of ours)."""
    if not _FILE.fullmatch(correction.path):
        raise ValueError(f"not a correction file: {correction.path!r}")
    return study_root / correction.path


def next_version(session: Session, *, study_id: str) -> int:
    latest = session.scalar(select(func.max(Correction.version)).where(Correction.study_id == study_id))
    return int(latest or 0) + 1


def add_correction(session: Session, *, study_id: str, study_root: Path, write_file: Callable[[Path], None],
                   fields: dict[str, Any]) -> Correction:
    """Store a new version: ``write_file(path)`` writes its labels, then the row is flushed with
    the next free version number. A version taken meanwhile by another save (the unique
    constraint) costs a retry with the next number (its file removed), never the other save's file."""
    for _attempt in range(VERSION_ATTEMPTS):
        version = next_version(session, study_id=study_id)
        correction_id = new_id()
        path = relative_path(version, correction_id)
        write_file(study_root / path)
        row = Correction(id=correction_id, study_id=study_id, version=version, path=path, **fields)
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()
        except IntegrityError:
            (study_root / path).unlink(missing_ok=True)
            continue
        return row
    raise RuntimeError(f"study {study_id}: no free correction version after {VERSION_ATTEMPTS} attempts")


def corrections_of(session: Session, *, study_id: str) -> list[Correction]:
    """Every version of the study's correction, oldest first."""
    return list(session.scalars(select(Correction).where(Correction.study_id == study_id)
                                .order_by(Correction.version)))


def get_correction(session: Session, *, study_id: str, version: int) -> Correction | None:
    return session.scalar(select(Correction).where(Correction.study_id == study_id, Correction.version == version))


def latest_correction(study: Study) -> Correction | None:
    return study.corrections[-1] if study.corrections else None


def corrected_study_ids(session: Session) -> set[str]:
    """Studies with at least one correction."""
    return set(session.scalars(select(Correction.study_id).distinct()))
