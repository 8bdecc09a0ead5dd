"""``spineseg segment`` writes the quality verdict into its summary, as a web run does."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from spineseg.cli.main import main
from spineseg.metrics.quality import VERDICTS
from tests.conftest import make_phantom


def _phantom_nifti(path: Path) -> Path:
    volume, _ = make_phantom(shape=(40, 36, 8))
    nib.save(nib.Nifti1Image(volume.array.astype(np.int16), volume.affine), str(path))
    return path


def test_summary_and_output_dir_carry_the_verdict(tmp_path: Path, tiny_model: Path) -> None:
    ct = _phantom_nifti(tmp_path / "ct.nii.gz")
    assert main(["segment", str(ct), "-o", str(tmp_path / "mask.nii.gz"), "--model", str(tiny_model),
                 "--summary", str(tmp_path / "summary.json")]) == 0
    quality = json.loads((tmp_path / "summary.json").read_text())["quality"]
    assert quality["verdict"] in VERDICTS and isinstance(quality["reasons"], list)
    assert main(["segment", str(ct), "--output-dir", str(tmp_path / "out"), "--model", str(tiny_model)]) == 0
    folder = next((tmp_path / "out").iterdir())
    assert json.loads((folder / "summary.json").read_text())["quality"]["verdict"] in VERDICTS
