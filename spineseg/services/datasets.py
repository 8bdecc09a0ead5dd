"""Datasets kept by the service: validating a labelled case before it is added, what its
labels cover, the effective patient split, and the ``CaseSpec`` list training builds its
HDF5 file from (``spineseg.model.dataset.build_dataset``)."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from spineseg.errors import InputError
from spineseg.imaging.io import load_volume
from spineseg.imaging.labels import CONVENTIONS, VERSE_ID_BY_LEVEL
from spineseg.imaging.limits import check_segmentable
from spineseg.model.dataset import SPLITS, CaseSpec, split_by_patient
from spineseg.services.ingest import check_truth, validation_slot
from spineseg.store.training_models import Dataset, DatasetCase

log = logging.getLogger(__name__)

SPLIT_FRACTIONS = (0.7, 0.15, 0.15)
LEVEL_BY_VERSE_ID = {number: name for name, number in VERSE_ID_BY_LEVEL.items()}
LEVEL_ORDER = {name: i for i, name in enumerate(
    [f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 14)] + [f"L{i}" for i in range(1, 7)] + ["SACRUM"])}


def check_convention(convention: str) -> str:
    if convention not in CONVENTIONS:
        raise InputError("convention", f"unknown label convention {convention!r}; choose from {', '.join(CONVENTIONS)}")
    return convention


def validate_case(ct_path: Path, labels_path: Path, convention: str = "auto") -> dict[str, Any]:
    """Read the CT and bring its label map onto the CT's grid; return what the labels cover.

    Raises ``InputError`` naming the file when the CT or labels cannot be read, when the
    label grid does not overlap the CT, or when no spine label lands on the CT. The returned
    coverage: ``shape`` (I, J, K), ``spacing_mm``, ``slices``, ``slices_with_spine``,
    ``levels`` (vertebra names, cranial first, when the convention has levels),
    ``spine_volume_ml``, ``convention`` (as detected), ``intensity`` (``hu`` or ``scaled``).
    """
    check_convention(convention)
    with validation_slot():
        volume = load_volume(ct_path)
        check_segmentable(ct_path, volume.shape)
        labels = check_truth(volume, labels_path, convention)  # the same check as a study's upload
    with_spine = int(labels.mask.any(axis=(0, 1)).sum())
    levels: list[str] = []
    if labels.vertebrae is not None:
        ids = np.unique(labels.vertebrae[labels.vertebrae > 0])
        levels = sorted((LEVEL_BY_VERSE_ID.get(int(i), str(int(i))) for i in ids),
                        key=lambda name: LEVEL_ORDER.get(name, 99))
    return {
        "shape": list(volume.shape),
        "spacing_mm": [round(s, 4) for s in volume.spacing],
        "slices": int(volume.shape[2]),
        "slices_with_spine": with_spine,
        "levels": levels,
        "spine_volume_ml": round(float(labels.mask.sum()) * volume.voxel_volume_ml, 2),
        "convention": labels.convention,
        "intensity": volume.provenance.intensity,
    }


def effective_split(dataset: Dataset) -> dict[str, str]:
    """Patient -> split: the explicit choices in ``dataset.split``, the rest dealt by the
    seeded patient split (at least one patient trains)."""
    specs = [CaseSpec(name=c.name, ct=c.ct_path, labels=c.labels_path, patient=c.patient,
                      split=(dataset.split or {}).get(c.patient, "")) for c in dataset.cases]
    if not specs:
        return {}
    return split_by_patient(specs, dataset.seed, SPLIT_FRACTIONS)


def case_specs(dataset: Dataset) -> list[CaseSpec]:
    """The dataset's cases as ``CaseSpec`` with every split set (as the page shows it)."""
    split = effective_split(dataset)
    return [CaseSpec(name=c.name, ct=c.ct_path, labels=c.labels_path, patient=c.patient, site=c.site,
                     convention=c.convention, split=split[c.patient], partial=c.partial) for c in dataset.cases]


def case_json(case: DatasetCase, split: str) -> dict[str, Any]:
    return {"id": case.id, "name": case.name, "patient": case.patient, "site": case.site, "split": split,
            "convention": case.convention, "partial": case.partial, "coverage": case.coverage,
            "source_study_id": case.source_study_id, "added_by": case.added_by,
            "created_at": case.created_at.isoformat()}


def dataset_json(dataset: Dataset, *, with_cases: bool = True) -> dict[str, Any]:
    """Everything the dataset page shows: cases, patients with their split (and whether it was
    chosen or dealt), sites, label coverage totals and split counts."""
    split = effective_split(dataset)
    explicit = dataset.split or {}
    patients: dict[str, dict[str, Any]] = {}
    for case in dataset.cases:
        entry = patients.setdefault(case.patient, {"patient": case.patient, "split": split[case.patient],
                                                   "chosen": case.patient in explicit, "cases": 0, "sites": []})
        entry["cases"] += 1
        if case.site not in entry["sites"]:
            entry["sites"].append(case.site)
    sites = Counter(c.site or "(none)" for c in dataset.cases)
    levels = sorted({lv for c in dataset.cases for lv in c.coverage.get("levels", [])},
                    key=lambda name: LEVEL_ORDER.get(name, 99))
    data: dict[str, Any] = {
        "id": dataset.id, "name": dataset.name, "description": dataset.description,
        "created_by": dataset.created_by, "created_at": dataset.created_at.isoformat(), "seed": dataset.seed,
        "locked_by": dataset.locked_by, "split_editable": dataset.locked_by is None,
        "counts": {"cases": len(dataset.cases), "patients": len(patients),
                   **{name: sum(1 for c in dataset.cases if split[c.patient] == name) for name in SPLITS}},
        "sites": dict(sorted(sites.items())),
        "coverage": {"levels": levels,
                     "slices": sum(c.coverage.get("slices", 0) for c in dataset.cases),
                     "slices_with_spine": sum(c.coverage.get("slices_with_spine", 0) for c in dataset.cases),
                     "spine_volume_ml": round(sum(c.coverage.get("spine_volume_ml", 0.0) for c in dataset.cases), 2)},
        "patients": sorted(patients.values(), key=lambda p: p["patient"]),
    }
    if with_cases:
        data["cases"] = [case_json(c, split[c.patient]) for c in dataset.cases]
    return data
