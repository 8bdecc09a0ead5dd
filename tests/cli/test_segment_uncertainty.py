"""``spineseg segment --uncertainty``: the map beside the mask, its figures in the summary."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spineseg.cli.main import main
from tests.conftest import make_phantom


def test_map_written_on_the_mask_grid_with_its_figures(tmp_path: Path, tiny_model: Path) -> None:
    volume, _ = make_phantom(shape=(40, 36, 8))
    ct = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(volume.array.astype(np.int16), volume.affine), str(ct))
    out = {name: tmp_path / f"{name}.nii.gz" for name in ("mask", "levels", "uncertainty")}
    assert main(["segment", str(ct), "-o", str(out["mask"]), "--model", str(tiny_model), "--levels",
                 str(out["levels"]), "--uncertainty", str(out["uncertainty"]),
                 "--summary", str(tmp_path / "summary.json")]) == 0
    mask, u = nib.load(out["mask"]), nib.load(out["uncertainty"])
    assert u.shape == mask.shape and np.allclose(u.affine, mask.affine)
    values = np.asarray(u.dataobj)
    assert values.dtype == np.uint8 and values.max() <= 100
    summary = json.loads((tmp_path / "summary.json").read_text())
    part = summary["uncertainty"]
    assert part["map"] == "uncertainty.nii.gz" and "uncertainty" in summary["cli_timings_s"]
    inside = values[np.asarray(mask.dataobj) > 0]
    if inside.size:  # the figure is the written map's, over the written mask
        assert part["mask_mean"] == pytest.approx(float(inside.mean()), abs=0.01)
    levels = np.asarray(nib.load(out["levels"]).dataobj)
    for entry in summary["vertebrae"]:
        own = values[levels == entry["label"]]
        assert entry["uncertainty"]["uncertainty_mean"] == pytest.approx(float(own.mean()), abs=0.01)


def test_bad_uncertainty_name_is_refused(tmp_path: Path, tiny_model: Path, capsys) -> None:
    assert main(["segment", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "m.nii.gz"), "--uncertainty",
                 str(tmp_path / "u.png"), "--model", str(tiny_model)]) == 2
    assert "u.png: the uncertainty map is written as NIfTI" in capsys.readouterr().err
