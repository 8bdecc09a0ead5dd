"""Queries on datasets and their cases (keyword-only, no SQL in routes).

Where a dataset's files live: ``DATA_DIR/datasets/<dataset id>/<case id>/ct/`` and
``.../labels/``; a case's folder is removed with the case.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from spineseg.errors import InputError
from spineseg.model.dataset import SPLITS
from spineseg.names import check_typed_text
from spineseg.store.studies import new_id
from spineseg.store.training_models import Dataset, DatasetCase

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}")


def dataset_folder(datasets_dir: Path, dataset_id: str) -> Path:
    if not re.fullmatch(r"[0-9a-f]{32}", dataset_id):
        raise ValueError(f"not a dataset id: {dataset_id!r}")
    return datasets_dir / dataset_id


def case_folder(datasets_dir: Path, dataset_id: str, case_id: str) -> Path:
    if not re.fullmatch(r"[0-9a-f]{32}", case_id):
        raise ValueError(f"not a case id: {case_id!r}")
    return dataset_folder(datasets_dir, dataset_id) / case_id


def check_name(value: str, field: str) -> str:
    """A dataset/case/patient/site name: 1-100 letters, digits, space, ``.``, ``_``, ``-``."""
    value = value.strip()
    if not NAME_PATTERN.fullmatch(value):
        raise InputError(field, f"{value!r} is not a usable name: 1-100 letters, digits, spaces, '.', '_' or '-', "
                                "starting with a letter or digit")
    return value


def create_dataset(session: Session, *, name: str, description: str, created_by: str | None,
                   seed: int = 0) -> Dataset:
    name = check_name(name, "name")
    check_typed_text(description, "description")
    if session.scalar(select(Dataset).where(Dataset.name == name)) is not None:
        raise InputError("name", f"a dataset named {name!r} exists already")
    dataset = Dataset(id=new_id(), name=name, description=description[:2000], created_by=created_by, seed=seed,
                      split={}, locked_by=None)
    session.add(dataset)
    session.flush()
    return dataset


def list_datasets(session: Session) -> list[Dataset]:
    return list(session.scalars(select(Dataset).order_by(Dataset.created_at.desc())))


def get_dataset(session: Session, *, dataset_id: str) -> Dataset | None:
    return session.get(Dataset, dataset_id)


def get_case(session: Session, *, dataset_id: str, case_id: str) -> DatasetCase | None:
    case = session.get(DatasetCase, case_id)
    return case if case is not None and case.dataset_id == dataset_id else None


def add_case(session: Session, *, dataset: Dataset, case_id: str, name: str, patient: str, site: str,
             convention: str, partial: bool, ct_path: str, labels_path: str, coverage: dict[str, Any],
             added_by: str | None, source_study_id: str | None = None) -> DatasetCase:
    """Add a validated case; ``InputError`` when the dataset already has a case of that name."""
    if any(c.name == name for c in dataset.cases):
        raise InputError("name", f"dataset {dataset.name!r} already has a case named {name!r}")
    case = DatasetCase(id=case_id, dataset_id=dataset.id, name=name, patient=patient, site=site,
                       convention=convention, partial=partial, ct_path=ct_path, labels_path=labels_path,
                       coverage=coverage, added_by=added_by, source_study_id=source_study_id)
    session.add(case)
    session.flush()
    session.refresh(dataset)
    return case


def delete_case(session: Session, *, case: DatasetCase, datasets_dir: Path) -> None:
    folder = case_folder(datasets_dir, case.dataset_id, case.id)
    session.delete(case)
    session.flush()
    shutil.rmtree(folder, ignore_errors=True)


def set_split(session: Session, *, dataset: Dataset, assignments: dict[str, str]) -> None:
    """Set the split of the named patients (``"auto"`` removes an explicit choice). Refused
    (``InputError``) for a locked dataset, an unknown patient or an unknown split name."""
    if dataset.locked_by:
        raise InputError("split", f"the split of dataset {dataset.name!r} is locked: version {dataset.locked_by} "
                                  "was trained on it (create a new dataset to change it)")
    patients = {c.patient for c in dataset.cases}
    split = dict(dataset.split or {})
    for patient, value in assignments.items():
        if patient not in patients:
            raise InputError(patient, f"no case of dataset {dataset.name!r} belongs to this patient")
        if value == "auto":
            split.pop(patient, None)
        elif value in SPLITS:
            split[patient] = value
        else:
            raise InputError(patient, f"split {value!r} is not one of {', '.join((*SPLITS, 'auto'))}")
    dataset.split = split
    session.flush()


def lock_dataset(session: Session, *, dataset_id: str, version_id: str, frozen_split: dict[str, str]) -> None:
    """Record that ``version_id`` was trained on the dataset and freeze the split it used."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        return
    dataset.split = dict(frozen_split)
    if not dataset.locked_by:
        dataset.locked_by = version_id
    session.flush()


def remove_orphan_case_dirs(session: Session, *, datasets_dir: Path, older_than_s: float = 600.0) -> list[Path]:
    """Remove case folders with no database row (an upload cut off by a crash), untouched for
    ``older_than_s`` seconds so an upload still in progress is left alone; returns them."""
    if not datasets_dir.is_dir():
        return []
    known = {(c.dataset_id, c.id) for c in session.scalars(select(DatasetCase))}
    cutoff = time.time() - older_than_s
    removed = []
    for dataset_dir in datasets_dir.iterdir():
        if not (dataset_dir.is_dir() and re.fullmatch(r"[0-9a-f]{32}", dataset_dir.name)):
            continue
        for folder in dataset_dir.iterdir():
            if (folder.is_dir() and re.fullmatch(r"[0-9a-f]{32}", folder.name)
                    and (dataset_dir.name, folder.name) not in known and folder.stat().st_mtime < cutoff):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
    return removed
