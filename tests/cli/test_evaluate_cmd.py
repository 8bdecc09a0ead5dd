"""``spineseg evaluate`` / ``spineseg bland-altman`` on NIfTI files written to tmp_path.

Every expected number is worked out by hand in the comments (the same geometry as in
tests/metrics, so the CLI must agree with the pure functions).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from spineseg.cli.main import main

# 2.0 x 1.0 x 0.5 mm voxels (1 mm³), axis 2 is head-foot.
AFFINE = np.diag([2.0, 1.0, 0.5, 1.0])


def _save(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def _cubes(tmp_path: Path) -> tuple[Path, Path]:
    """Truth: 2x2x2 cube at i = 2..3 of a 6x4x4 grid; prediction: the same cube at i = 3..4."""
    truth = np.zeros((6, 4, 4), dtype=np.uint8)
    truth[2:4, 1:3, 1:3] = 1
    pred = np.zeros_like(truth)
    pred[3:5, 1:3, 1:3] = 1
    return _save(tmp_path / "pred.nii.gz", pred), _save(tmp_path / "truth.nii.gz", truth)


def _run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _fails_with(capsys: pytest.CaptureFixture[str], argv: list[str], *fragments: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    # One message naming the file, no traceback. (nibabel's own reason for a truncated file
    # carries a line break, so only the first line's shape is checked.)
    assert err.startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err.splitlines()[0]
    return err


def test_single_pair_json_by_hand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred, truth = _cubes(tmp_path)
    result = _run_json(capsys, ["evaluate", "--pred", str(pred), "--truth", str(truth), "--json"])
    assert list(result) == [
        "dice", "iou", "precision", "recall", "specificity", "f1", "hd95_mm", "assd_mm",
        "surface_dice_1mm", "surface_dice_2mm", "signed_surface_distance_mm", "interior_recall",
        "tp", "fp", "tn", "fn", "volume_pred_ml", "volume_truth_ml", "abs_volume_diff_ml",
        "rel_volume_diff",
    ]  # fmt: skip
    # Overlap is the layer i = 3: TP 4, FP 4, FN 4, TN 96 - 12 = 84.
    assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (4, 4, 4, 84)
    assert result["dice"] == pytest.approx(0.5)  # 8 / 16
    assert result["iou"] == pytest.approx(1 / 3)
    assert result["specificity"] == pytest.approx(84 / 88)
    # One voxel (2.0 mm) apart along axis 0: distances [0]*4 + [2.0]*4 each way.
    assert result["hd95_mm"] == pytest.approx(2.0)
    assert result["assd_mm"] == pytest.approx(1.0)
    assert result["volume_truth_ml"] == pytest.approx(0.008)  # 8 voxels of 1 mm³


def test_roi_scores_only_inside_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The truth has a second cube the prediction misses, at i = 2..3 of k = 3 only; an ROI of
    # k = 0..2 leaves it out, so the pair scores as the plain shifted cubes (Dice 0.5), and TN
    # counts the ROI's 72 voxels only: 72 - 12 = 60.
    truth = np.zeros((6, 4, 4), dtype=np.uint8)
    truth[2:4, 1:3, 1:3] = 1
    pred = np.zeros_like(truth)
    pred[3:5, 1:3, 1:3] = 1
    truth[0:2, 0:2, 3] = 1
    roi = np.zeros_like(truth)
    roi[:, :, 0:3] = 1
    paths = [_save(tmp_path / f"{n}.nii.gz", a) for n, a in (("p", pred), ("t", truth), ("r", roi))]
    argv = ["evaluate", "--pred", str(paths[0]), "--truth", str(paths[1]), "--json"]
    assert _run_json(capsys, argv)["fn"] == 8  # without the ROI the second cube is missed
    result = _run_json(capsys, [*argv, "--roi", str(paths[2])])
    assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (4, 4, 4, 60)
    assert result["dice"] == pytest.approx(0.5)
    _fails_with(capsys, [*argv, "--roi", str(paths[2]), "--roi", str(paths[2])], "--roi", "one --roi per --pred")
    empty = _save(tmp_path / "empty.nii.gz", np.zeros_like(roi))
    _fails_with(capsys, [*argv, "--roi", str(empty)], "empty.nii.gz", "no voxel")


def test_table_is_the_default_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred, truth = _cubes(tmp_path)
    assert main(["evaluate", "--pred", str(pred), "--truth", str(truth)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert lines["dice"] == ["0.5000"]
    assert lines["tp"] == ["4"]
    assert lines["hd95_mm"] == ["2.0000"]


def test_truth_in_totalsegmentator_ids_and_on_a_flipped_grid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Truth holds the same cube as ids 30 (L2) / 31 (L1) plus an organ (id 5) next to it,
    # and is stored with axis 0 reversed (negative x step, shifted origin): the same world
    # positions. The organ is background, so prediction == truth spine -> Dice 1.
    spine = np.zeros((6, 4, 4), dtype=np.uint8)
    spine[2:4, 1:3, 1:3] = 1
    pred = _save(tmp_path / "pred.nii.gz", spine)
    labels = np.zeros((6, 4, 4), dtype=np.uint8)
    labels[2, 1:3, 1:3] = 30
    labels[3, 1:3, 1:3] = 31
    labels[4:6, 0:4, 0:4] = 5
    flipped = labels[::-1].copy()
    flip_affine = AFFINE.copy()
    flip_affine[0, 0] = -2.0
    flip_affine[0, 3] = 2.0 * 5  # voxel 0 of the flipped file is voxel 5 of the original
    truth = _save(tmp_path / "labels.nii.gz", flipped, flip_affine)
    argv = ["evaluate", "--pred", str(pred), "--truth", str(truth), "--truth-labels", "totalsegmentator", "--json"]
    result = _run_json(capsys, argv)
    assert result["dice"] == 1.0
    assert (result["tp"], result["fp"], result["fn"]) == (8, 0, 0)
    assert result["hd95_mm"] == 0.0
    # Read as binary instead, the organ's 32 voxels count as truth: FN 32.
    binary = _run_json(capsys, [*argv[:-2], "binary", "--json"])
    assert (binary["tp"], binary["fn"]) == (8, 32)


def test_empty_prediction_writes_null_not_nan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, truth = _cubes(tmp_path)
    empty = _save(tmp_path / "empty.nii.gz", np.zeros((6, 4, 4), dtype=np.uint8))
    assert main(["evaluate", "--pred", str(empty), "--truth", str(truth), "--json"]) == 0
    text = capsys.readouterr().out
    assert "NaN" not in text and "Infinity" not in text
    result = json.loads(text)
    assert result["dice"] == 0.0
    assert result["precision"] is None  # undefined: nothing was predicted
    assert result["hd95_mm"] is None and result["assd_mm"] is None  # inf: spine missed
    assert result["rel_volume_diff"] == -1.0


def test_several_pairs_give_cases_and_mean_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred, truth = _cubes(tmp_path)
    empty = _save(tmp_path / "empty.nii.gz", np.zeros((6, 4, 4), dtype=np.uint8))
    table = tmp_path / "cases.csv"
    argv = ["evaluate", "--pred", str(pred), "--truth", str(truth), "--pred", str(truth), "--truth", str(truth)]
    argv += ["--pred", str(empty), "--truth", str(truth), "--json", "--csv", str(table)]
    result = _run_json(capsys, argv)
    assert [case["pred"] for case in result["cases"]] == [str(pred), str(truth), str(empty)]
    # Dice 0.5, 1.0, 0.0 -> mean 0.5; precision 0.5, 1.0, undefined -> mean of the two = 0.75;
    # HD95 2.0, 0.0, inf -> inf -> null.
    assert result["mean"]["dice"] == pytest.approx(0.5)
    assert result["mean"]["precision"] == pytest.approx(0.75)
    assert result["mean"]["hd95_mm"] is None
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["pred"] for row in rows] == [str(pred), str(truth), str(empty)]
    assert float(rows[0]["dice"]) == pytest.approx(0.5)
    assert rows[2]["precision"] == "" and rows[2]["hd95_mm"] == ""
    assert int(rows[1]["tp"]) == 8


def test_several_pairs_table_has_a_mean_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred, truth = _cubes(tmp_path)
    argv = ["evaluate", "--pred", str(pred), "--truth", str(truth), "--pred", str(truth), "--truth", str(truth)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("metric"))
    assert header.split() == ["metric", "case", "1", "case", "2", "mean"]
    dice_row = next(line for line in out.splitlines() if line.startswith("dice"))
    assert dice_row.split() == ["dice", "0.5000", "1.0000", "0.7500"]


def test_unpaired_arguments_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred, truth = _cubes(tmp_path)
    _fails_with(capsys, ["evaluate", "--pred", str(pred), "--pred", str(pred), "--truth", str(truth)],
                "2 prediction(s) and 1 truth(s)")  # fmt: skip


def test_bad_prediction_files_name_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, truth = _cubes(tmp_path)
    empty_file = tmp_path / "zero.nii.gz"
    empty_file.write_bytes(b"")
    good = _save(tmp_path / "good.nii", np.ones((6, 4, 4), dtype=np.float32))
    truncated = tmp_path / "truncated.nii"
    truncated.write_bytes(good.read_bytes()[:-200])
    with_nan = np.ones((6, 4, 4), dtype=np.float32)
    with_nan[0, 0, 0] = np.nan
    nan_file = _save(tmp_path / "nan.nii.gz", with_nan)
    four_d = _save(tmp_path / "4d.nii.gz", np.ones((6, 4, 4, 2), dtype=np.uint8))
    for bad in (empty_file, truncated, nan_file, four_d, tmp_path / "missing.nii.gz"):
        _fails_with(capsys, ["evaluate", "--pred", str(bad), "--truth", str(truth)], str(bad))


def test_bad_truth_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred, truth = _cubes(tmp_path)
    missing = tmp_path / "no-truth.nii.gz"
    _fails_with(capsys, ["evaluate", "--pred", str(pred), "--truth", str(missing)], str(missing))
    for option in ("--truth-labels", "--pred-labels"):
        _fails_with(capsys, ["evaluate", "--pred", str(pred), "--truth", str(truth), option, "dicom"], option, "dicom")
    # a truth whose grid lies 1 m away from the prediction's cannot be aligned
    far = AFFINE.copy()
    far[:3, 3] = 1000.0
    elsewhere = _save(tmp_path / "elsewhere.nii.gz", np.ones((6, 4, 4), dtype=np.uint8), far)
    _fails_with(capsys, ["evaluate", "--pred", str(pred), "--truth", str(elsewhere)], str(elsewhere))


def test_probability_map_as_prediction_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, truth = _cubes(tmp_path)
    probabilities = _save(tmp_path / "prob.nii.gz", np.full((6, 4, 4), 0.3, dtype=np.float32))
    _fails_with(capsys, ["evaluate", "--pred", str(probabilities), "--truth", str(truth)], str(probabilities))


def test_csv_into_a_missing_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred, truth = _cubes(tmp_path)
    target = tmp_path / "nowhere" / "out.csv"
    _fails_with(capsys, ["evaluate", "--pred", str(pred), "--truth", str(truth), "--csv", str(target)], str(target))


def _slab_pair(tmp_path: Path, affine: np.ndarray, slice_axis: int) -> tuple[Path, Path]:
    """Spine areas per slice: truth 4, 4, 0 voxels, prediction 6, 2, 3 voxels, on a 4x4x3 grid
    whose slices run along ``slice_axis``."""
    truth = np.zeros((4, 4, 3), dtype=np.uint8)
    pred = np.zeros_like(truth)
    truth[0, 0:4, 0] = 1
    truth[1, 0:4, 1] = 1
    pred[0:2, 0:3, 0] = 1
    pred[0, 0:2, 1] = 1
    pred[3, 0:3, 2] = 1
    if slice_axis != 2:
        truth, pred = np.moveaxis(truth, 2, slice_axis), np.moveaxis(pred, 2, slice_axis)
    return _save(tmp_path / "pred.nii.gz", pred, affine), _save(tmp_path / "truth.nii.gz", truth, affine)


def test_bland_altman_per_slice_by_hand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # In-plane voxel 2.0 x 1.0 = 2 mm². Slices with spine: (pred, truth) areas (12, 8), (4, 8),
    # (6, 0) mm² -> differences 4, -4, 6: bias 2; deviations 2, -6, 4; squares 4 + 36 + 16 = 56,
    # / 2 = 28; SD sqrt(28); limits 2 -/+ 1.96 sqrt(28).
    pred, truth = _slab_pair(tmp_path, np.diag([2.0, 1.0, 3.0, 1.0]), slice_axis=2)
    plot = tmp_path / "ba.png"
    argv = ["bland-altman", "--pred", str(pred), "--truth", str(truth), "--truth-labels", "binary"]
    result = _run_json(capsys, [*argv, "-o", str(plot), "--json"])
    assert result["n"] == 3
    assert result["units"] == "mm²"
    assert result["bias"] == pytest.approx(2.0)
    assert result["sd"] == pytest.approx(math.sqrt(28))
    assert result["upper_limit"] == pytest.approx(2.0 + 1.96 * math.sqrt(28))
    assert result["skipped_empty_slices"] == 0
    with Image.open(plot) as image:
        image.verify()
    # the table version prints the same bias
    assert main([*argv, "-o", str(plot)]) == 0
    out = capsys.readouterr().out
    assert any(line.split()[:2] == ["bias", "(mm²)"] and line.split()[-1] == "2" for line in out.splitlines())


def test_bland_altman_finds_the_axial_axis_from_the_affine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Same masks stored with the head-foot direction on array axis 0 (affine column 0 points
    # along world z), the in-plane voxels 1.0 x 2.0 = 2 mm² again: the same statistics.
    affine = np.array([[0, 1.0, 0, 0], [0, 0, 2.0, 0], [3.0, 0, 0, 0], [0, 0, 0, 1]])
    pred, truth = _slab_pair(tmp_path, affine, slice_axis=0)
    result = _run_json(capsys, ["bland-altman", "--pred", str(pred), "--truth", str(truth),
                                "-o", str(tmp_path / "ba.png"), "--json"])  # fmt: skip
    assert result["n"] == 3
    assert result["bias"] == pytest.approx(2.0)
    assert result["sd"] == pytest.approx(math.sqrt(28))


def test_bland_altman_per_case_by_hand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Case 1: the truth cube against itself, 8 vs 8 voxels; case 2: the cube plus 5 stray
    # voxels, 13 vs 8. At 1 mm³ per voxel the volume differences are 0 and 0.005 mL:
    # bias 0.0025 mL, deviations -/+0.0025, SD sqrt(2 * 0.0025² / 1) = 0.0025 * sqrt(2).
    _, truth = _cubes(tmp_path)
    bigger = np.asarray(nib.load(str(truth)).dataobj).copy()
    bigger[5, 0:4, 3] = 1
    bigger[0, 0, 0] = 1
    assert int(bigger.sum()) == 13
    pred_case2 = _save(tmp_path / "pred13.nii.gz", bigger)
    argv = ["bland-altman", "--per", "cases", "--pred", str(truth), "--truth", str(truth)]
    argv += ["--pred", str(pred_case2), "--truth", str(truth), "-o", str(tmp_path / "cases.png"), "--json"]
    result = _run_json(capsys, argv)
    assert result["n"] == 2
    assert result["units"] == "mL"
    assert result["bias"] == pytest.approx(0.0025)
    assert result["sd"] == pytest.approx(0.0025 * math.sqrt(2))
    assert "skipped_empty_slices" not in result
    assert (tmp_path / "cases.png").read_bytes()[:4] == b"\x89PNG"


def test_bland_altman_per_case_needs_two_cases(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred, truth = _cubes(tmp_path)
    _fails_with(capsys, ["bland-altman", "--per", "cases", "--pred", str(pred), "--truth", str(truth),
                         "-o", str(tmp_path / "x.png")], "at least 2")  # fmt: skip


@pytest.mark.shared_data
def test_real_label_map_against_itself(
    shared_cases: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ts-abdomen-small: the TotalSegmentator label map's spine (L2..T11), written as a binary
    prediction, scored against the label map itself: perfect agreement."""
    from spineseg.imaging.io import load_labels
    from spineseg.imaging.nifti import read_nifti_volume

    labels = shared_cases / "ts-abdomen-small" / "labels.nii.gz"
    reference = read_nifti_volume(labels)
    spine = load_labels(labels, reference, convention="totalsegmentator").mask
    pred = _save(tmp_path / "pred.nii.gz", spine.astype(np.uint8), reference.affine)
    argv = ["evaluate", "--pred", str(pred), "--truth", str(labels), "--json"]
    result = _run_json(capsys, argv)
    n_spine = int(np.count_nonzero(spine))
    assert n_spine > 1000
    assert result["dice"] == 1.0
    assert result["hd95_mm"] == 0.0 and result["assd_mm"] == 0.0
    assert (result["tp"], result["fp"], result["fn"]) == (n_spine, 0, 0)
    assert result["volume_truth_ml"] == pytest.approx(n_spine * reference.voxel_volume_ml)
