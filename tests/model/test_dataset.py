from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spineseg.errors import InputError
from spineseg.model.dataset import (
    CaseSpec,
    build_dataset,
    load_dataset,
    read_manifest,
    split_by_patient,
    valid_slices,
)
from tests.model.conftest import write_phantom_case


def test_dataset_file_holds_cases_split_and_hash(phantom_dataset: Path) -> None:
    attrs, cases = load_dataset(phantom_dataset)
    assert attrs["spacing_mm"] == (1.5, 1.5, 2.5)
    assert attrs["split"] == {"P0": "train", "P1": "train", "P2": "val"}
    assert len(attrs["content_sha256"]) == 64
    assert {c.name: c.split for c in cases} == {"case0": "train", "case1": "train", "case2": "val"}
    for case in cases:
        assert case.image.dtype == np.int16 and case.mask.dtype == np.uint8
        assert case.image.shape == case.mask.shape == (56, 48, 16)
        # Labels on bone: the phantom's column is 700 HU.
        assert np.median(case.image[case.mask > 0]) > 500


def test_split_is_by_patient_and_seeded() -> None:
    specs = [CaseSpec(name=f"c{i}", ct="x", labels="y", patient=f"P{i // 2}") for i in range(20)]
    first = split_by_patient(specs, seed=3, fractions=(0.6, 0.2, 0.2))
    assert first == split_by_patient(specs, seed=3, fractions=(0.6, 0.2, 0.2))
    assert sorted(first.values()).count("train") == 6 and len(first) == 10
    assert first != split_by_patient(specs, seed=4, fractions=(0.6, 0.2, 0.2))


def test_a_patient_cannot_sit_in_two_splits() -> None:
    specs = [CaseSpec(name="a", ct="x", labels="y", patient="P1", split="train"),
             CaseSpec(name="b", ct="x", labels="y", patient="P1", split="test")]
    with pytest.raises(InputError, match="two splits"):
        split_by_patient(specs, 0, (0.7, 0.15, 0.15))


def test_one_patient_always_trains() -> None:
    specs = [CaseSpec(name="a", ct="x", labels="y", patient="P1")]
    assert split_by_patient(specs, 0, (0.2, 0.4, 0.4)) == {"P1": "train"}


def test_valid_slices_rules() -> None:
    mask = np.zeros((4, 4, 10), dtype=np.uint8)
    mask[:, :, 3:7] = 1
    levels = mask.astype(np.int16) * 20
    np.testing.assert_array_equal(valid_slices(levels, mask, partial=False), [0, 0, 0, 1, 1, 1, 1, 0, 0, 0])
    levels[:, :, 3] = 26  # sacrum at the bottom: everything below is trusted too
    np.testing.assert_array_equal(valid_slices(levels, mask, partial=False), [1, 1, 1, 1, 1, 1, 1, 0, 0, 0])
    mask[:, :, :] = 0
    mask[:, :, 0:10] = 1
    np.testing.assert_array_equal(valid_slices(None, mask, partial=True), [0, 0, 1, 1, 1, 1, 1, 1, 0, 0])


def test_manifest_resolves_relative_paths(tmp_path: Path) -> None:
    write_phantom_case(tmp_path / "c0", seed=0)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("name,ct,labels,patient,split\nc0,c0/ct.nii.gz,c0/labels.nii.gz,P0,train\n")
    specs = read_manifest(manifest)
    assert Path(specs[0].ct) == tmp_path / "c0" / "ct.nii.gz" and specs[0].split == "train"
    bad = tmp_path / "bad.csv"
    bad.write_text("name,ct\nc0,x\n")
    with pytest.raises(InputError, match="columns"):
        read_manifest(bad)


def test_labels_without_spine_are_refused_and_nothing_is_left(tmp_path: Path) -> None:
    ct, labels = write_phantom_case(tmp_path / "c0", seed=0)
    import nibabel as nib

    image = nib.load(str(labels))
    organs_only = (np.asarray(image.dataobj) > 0).astype(np.uint8) * 5  # id 5: an organ, not spine
    nib.save(nib.Nifti1Image(organs_only, image.affine), str(labels))
    spec = CaseSpec(name="c0", ct=str(ct), labels=str(labels), patient="P0", convention="totalsegmentator")
    with pytest.raises(InputError, match="no spine labels"):
        build_dataset([spec], tmp_path / "ds.h5")
    assert not list(tmp_path.glob("ds.h5*"))


@pytest.mark.parametrize(("patients", "expected"), [
    (1, {"train": 1}),
    (2, {"train": 1, "val": 1}),
    (3, {"train": 2, "val": 1}),
    (7, {"train": 5, "val": 1, "test": 1}),
])
def test_auto_split_validates_on_one_patient_as_soon_as_two_exist(patients: int, expected: dict[str, int]) -> None:
    specs = [CaseSpec(name=f"c{i}", ct="x", labels="y", patient=f"P{i}") for i in range(patients)]
    for seed in range(5):
        dealt = list(split_by_patient(specs, seed, (0.7, 0.15, 0.15)).values())
        assert {name: dealt.count(name) for name in set(dealt)} == expected


def test_auto_split_respects_chosen_splits() -> None:
    chosen_train = [CaseSpec(name="a", ct="x", labels="y", patient="P1", split="train"),
                    CaseSpec(name="b", ct="x", labels="y", patient="P2")]
    assert split_by_patient(chosen_train, 0, (0.7, 0.15, 0.15)) == {"P1": "train", "P2": "val"}
    chosen_val = [CaseSpec(name="a", ct="x", labels="y", patient="P1", split="val"),
                  CaseSpec(name="b", ct="x", labels="y", patient="P2")]
    assert split_by_patient(chosen_val, 0, (0.7, 0.15, 0.15)) == {"P1": "val", "P2": "train"}
    assert split_by_patient(chosen_train, 0, (1.0, 0.0, 0.0)) == {"P1": "train", "P2": "train"}
