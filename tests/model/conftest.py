from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spineseg.model.dataset import CaseSpec, build_dataset
from tests.conftest import make_phantom


def write_phantom_case(folder: Path, seed: int, shape=(56, 48, 16)) -> tuple[Path, Path]:
    """A phantom CT (with noise, shifted column) and its TotalSegmentator-style labels."""
    folder.mkdir(parents=True, exist_ok=True)
    volume, mask = make_phantom(shape=shape, spacing=(1.5, 1.5, 2.5))
    rng = np.random.default_rng(seed)
    shift = int(rng.integers(-4, 5))
    hu = np.roll(volume.array, shift, axis=0) + rng.normal(0, 20, shape).astype(np.float32)
    labels = np.roll(mask, shift, axis=0) * 30  # id 30 = L2
    nib.save(nib.Nifti1Image(hu.astype(np.int16), volume.affine), str(folder / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(labels.astype(np.uint8), volume.affine), str(folder / "labels.nii.gz"))
    return folder / "ct.nii.gz", folder / "labels.nii.gz"


@pytest.fixture
def phantom_dataset(tmp_path: Path) -> Path:
    specs = []
    for i, split in enumerate(["train", "train", "val"]):
        ct, labels = write_phantom_case(tmp_path / f"case{i}", seed=i)
        specs.append(CaseSpec(name=f"case{i}", ct=str(ct), labels=str(labels), patient=f"P{i}", split=split))
    return build_dataset(specs, tmp_path / "dataset.h5")
