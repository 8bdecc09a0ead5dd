"""Validating a labelled case before it joins a dataset, and the dataset's effective split."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spineseg.errors import InputError
from spineseg.services.datasets import case_specs, dataset_json, effective_split, validate_case
from spineseg.store.training_models import Dataset, DatasetCase
from tests.model.conftest import write_phantom_case


def test_coverage_of_a_phantom_case(tmp_path: Path) -> None:
    ct, labels = write_phantom_case(tmp_path, seed=0)
    coverage = validate_case(ct, labels, "totalsegmentator")
    truth = np.asarray(nib.load(str(labels)).dataobj) > 0
    assert coverage["shape"] == [56, 48, 16] and coverage["spacing_mm"] == [1.5, 1.5, 2.5]
    assert coverage["slices"] == 16 and coverage["slices_with_spine"] == int(truth.any(axis=(0, 1)).sum())
    assert coverage["levels"] == ["L2"] and coverage["convention"] == "totalsegmentator"
    assert coverage["spine_volume_ml"] == pytest.approx(truth.sum() * 1.5 * 1.5 * 2.5 / 1000, abs=0.01)
    assert validate_case(ct, labels)["levels"] == []  # one id only: read as binary, no level names


def test_bad_convention_and_labels_without_spine(tmp_path: Path) -> None:
    ct, labels = write_phantom_case(tmp_path, seed=0)
    with pytest.raises(InputError, match="unknown label convention 'ids'"):
        validate_case(ct, labels, "ids")
    image = nib.load(str(labels))
    nib.save(nib.Nifti1Image(np.zeros(image.shape, np.uint8), image.affine), str(tmp_path / "none.nii.gz"))
    with pytest.raises(InputError, match="no spine labels") as caught:
        validate_case(ct, tmp_path / "none.nii.gz")
    assert caught.value.source.endswith("none.nii.gz")


def make_dataset(split: dict[str, str], patients: list[str], seed: int = 0) -> Dataset:
    now = datetime.now(UTC)
    dataset = Dataset(id="d" * 32, name="d", description="", seed=seed, split=split, created_at=now)
    dataset.cases = [DatasetCase(id=f"{i:032x}", name=f"c{i}", patient=p, site="s" if i % 2 else "", ct_path="ct",
                                 labels_path="labels", convention="auto", partial=False, coverage={"slices": 10},
                                 created_at=now)
                     for i, p in enumerate(patients)]
    return dataset


def test_effective_split_keeps_choices_and_deals_the_rest_by_patient() -> None:
    patients = ["P1", "P1", "P2", "P3", "P4", "P5", "P6", "P7"]
    dealt = effective_split(make_dataset({}, patients))
    assert set(dealt) == set(patients) and "train" in dealt.values()
    assert effective_split(make_dataset({}, patients)) == dealt  # seeded: the same every time
    chosen = effective_split(make_dataset({"P1": "test", "P2": "val"}, patients))
    assert chosen["P1"] == "test" and chosen["P2"] == "val"
    specs = case_specs(make_dataset({"P1": "test"}, patients))
    assert [s.split for s in specs[:2]] == ["test", "test"]  # both cases of P1 follow their patient
    summary = dataset_json(make_dataset({"P1": "test"}, patients))
    assert summary["counts"]["cases"] == 8 and summary["counts"]["patients"] == 7
    assert summary["counts"]["test"] >= 2 and summary["sites"] == {"(none)": 4, "s": 4}
    assert {p["patient"]: p["chosen"] for p in summary["patients"]}["P1"] is True
