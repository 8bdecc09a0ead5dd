"""``spineseg segment --levels`` and ``spineseg evaluate --pred-levels`` end to end with the
default model on the small shared case (P1's 30-slice cut: L2..T11 labelled)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spineseg.cli.main import main
from tests.conftest import CASES

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]


@pytest.fixture(scope="module")
def small_case_levels(tmp_path_factory):
    case = CASES / "ts-abdomen-small"
    if not case.is_dir():
        pytest.skip(f"shared data not found at {case} (set SPINESEG_SHARED_DATA)")
    out = tmp_path_factory.mktemp("levels")
    code = main(["segment", str(case / "ct.nii.gz"), "-o", str(out / "mask.nii.gz"),
                 "--levels", str(out / "levels.nii.gz"), "--summary", str(out / "summary.json")])
    assert code == 0
    return case, out


def test_segment_writes_named_levels_and_the_summary_lists_them(small_case_levels) -> None:
    case, out = small_case_levels
    levels = nib.load(str(out / "levels.nii.gz"))
    np.testing.assert_allclose(levels.affine, nib.load(str(case / "ct.nii.gz")).affine)
    ids = set(np.unique(np.asarray(levels.dataobj)).tolist()) - {0}
    summary = json.loads((out / "summary.json").read_text())
    vertebrae = summary["vertebrae"]
    assert {v["verse_id"] for v in vertebrae} == ids
    names = [v["name"] for v in vertebrae]
    assert "T12" in names and "L1" in names  # the ribs of T12 and the rib-free L1 below it name this cut
    assert summary["levels"]["named"] and summary["levels"]["reason"]  # "named from the last rib-bearing ..."
    for v in vertebrae:
        assert set(v) >= {"name", "verse_id", "confidence", "volume_ml", "centroid_mm", "complete", "measures"}
        assert 0 < v["confidence"] <= 1 and v["volume_ml"] > 0 and len(v["centroid_mm"]) == 3
    assert not any(v["complete"] for v in vertebrae if v is vertebrae[0] or v is vertebrae[-1])  # a 30-slice cut
    assert summary["cli_timings_s"]["levels"] > 0


def test_totalsegmentator_convention(small_case_levels, tmp_path: Path) -> None:
    case, out = small_case_levels
    ts_path = tmp_path / "levels_ts.nii.gz"
    assert main(["segment", str(case / "ct.nii.gz"), "-o", str(tmp_path / "m.nii.gz"),
                 "--levels", str(ts_path), "--levels-convention", "totalsegmentator"]) == 0
    verse = np.asarray(nib.load(str(out / "levels.nii.gz")).dataobj)
    ts = np.asarray(nib.load(str(ts_path)).dataobj)
    assert np.array_equal(ts == 31, verse == 20)  # L1
    assert np.array_equal(ts == 32, verse == 19)  # T12


def test_evaluate_pred_levels_scores_against_the_true_levels(small_case_levels, capsys) -> None:
    case, out = small_case_levels
    assert main(["evaluate", "--pred-levels", str(out / "levels.nii.gz"), "--truth", str(case / "labels.nii.gz"),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["true_vertebrae"] == 4  # T11, T12, L1, L2
    assert result["identification_rate"] >= 0.5
    assert result["per_vertebra"]["T12"]["identified"] and result["per_vertebra"]["L1"]["identified"]
    assert result["localisation_mm"] < 10.0


def test_evaluate_pred_levels_refuses_a_truth_without_levels(small_case_levels, tmp_path: Path, capsys) -> None:
    _, out = small_case_levels
    code = main(["evaluate", "--pred-levels", str(out / "levels.nii.gz"), "--truth", str(out / "mask.nii.gz")])
    err = capsys.readouterr().err
    assert code == 2 and "no vertebra levels" in err and "Traceback" not in err
    code = main(["evaluate", "--pred-levels", str(out / "levels.nii.gz"), "--pred", str(out / "mask.nii.gz"),
                 "--truth", str(out / "mask.nii.gz")])
    assert code == 2 and "not both" in capsys.readouterr().err


def test_levels_need_a_nifti_name(tmp_path: Path, shared_cases: Path, capsys) -> None:
    ct = shared_cases / "ts-abdomen-small" / "ct.nii.gz"
    code = main(["segment", str(ct), "-o", str(tmp_path / "m.nii.gz"), "--levels", str(tmp_path / "levels.txt")])
    assert code == 2 and "levels.txt" in capsys.readouterr().err
    assert not (tmp_path / "m.nii.gz").exists()
