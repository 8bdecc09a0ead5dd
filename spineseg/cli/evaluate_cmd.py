"""``spineseg evaluate`` and ``spineseg bland-altman``: score predicted spine masks against
ground-truth label maps.

Each prediction is a NIfTI label map and defines the grid (``read_nifti_volume``); its truth,
in any label convention ``load_labels`` understands, is brought onto that grid through the
affines. Predictions and truths are paired in the order given (``--pred a --truth A --pred b
--truth B``).

Numbers that are undefined (nan) or infinite (a surface distance to a missed spine) are
written as ``null`` in JSON and as empty cells in CSV; the table shows ``nan`` / ``inf``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spineseg.errors import InputError

if TYPE_CHECKING:
    from spineseg.metrics import CaseMetrics

# The metrics (scipy, matplotlib) and imaging (torch) packages are imported inside the
# commands, so that ``spineseg --help`` and the other commands do not pay for them.

log = logging.getLogger(__name__)

LABEL_CONVENTIONS_HELP = "auto, binary, totalsegmentator, verse or per-structure"
COUNT_KEYS = frozenset({"tp", "fp", "tn", "fn"})


@dataclass(frozen=True)
class MaskPair:
    """A prediction and its truth as binary masks on the prediction's grid.

    pred, truth: uint8 arrays of shape ``(I, J, K)``; spacing: mm per axis;
    slice_axis: the array axis closest to the patient's head-foot direction (axial slices).
    """

    name: str
    pred: np.ndarray
    truth: np.ndarray
    spacing: tuple[float, float, float]
    slice_axis: int
    affine: np.ndarray | None = None  # the prediction's voxel -> RAS mm
    roi: np.ndarray | None = None  # score only inside this mask (``--roi``)


def _paired_paths(preds: Sequence[str], truths: Sequence[str]) -> list[tuple[Path, Path]]:
    if len(preds) != len(truths):
        raise InputError(
            "--pred/--truth",
            f"got {len(preds)} prediction(s) and {len(truths)} truth(s); give them in pairs, in order",
        )
    return [(Path(p), Path(t)) for p, t in zip(preds, truths, strict=True)]


def load_mask_pair(pred_path: Path, truth_path: Path, *, pred_labels: str, truth_labels: str) -> MaskPair:
    """Read a predicted label map and its truth as binary masks on the prediction's grid.

    Raises ``InputError`` naming the file when either cannot be read or used.
    """
    from spineseg.imaging.io import load_labels
    from spineseg.imaging.nifti import read_nifti_volume

    if not pred_path.is_file():
        raise InputError(pred_path, "no such file")
    if pred_path.stat().st_size == 0:
        raise InputError(pred_path, "file is empty")
    reference = read_nifti_volume(pred_path)
    pred = load_labels(pred_path, reference, convention=pred_labels)
    truth = load_labels(truth_path, reference, convention=truth_labels)
    log.info("%s: truth read as %s labels", truth_path, truth.convention)
    # The array axis whose direction has the largest head-foot (world z) component.
    directions = reference.affine[:3, :3] / np.asarray(reference.spacing)
    slice_axis = int(np.argmax(np.abs(directions[2])))
    return MaskPair(str(pred_path), pred.mask, truth.mask, reference.spacing, slice_axis, reference.affine)


@contextmanager
def _memory_guard(path: Path) -> Iterator[None]:
    """Report running out of memory on one case as an ``InputError`` naming its file."""
    try:
        yield
    except MemoryError as exc:
        raise InputError(path, "not enough memory to evaluate this case") from exc


def _check_conventions(args: argparse.Namespace) -> None:
    """Refuse an unknown ``--pred-labels`` / ``--truth-labels`` before reading any file."""
    from spineseg.imaging.labels import CONVENTIONS

    for option, value in (("--pred-labels", args.pred_labels), ("--truth-labels", args.truth_labels)):
        if value not in CONVENTIONS:
            raise InputError(option, f"unknown label convention {value!r}; choose from {', '.join(CONVENTIONS)}")


def _roi_paths(args: argparse.Namespace) -> list[Path | None]:
    """One ``--roi`` per ``--pred`` (in order), or none at all."""
    rois = getattr(args, "roi", None) or []
    if not rois:
        return [None] * len(args.pred)
    if len(rois) != len(args.pred):
        raise InputError("--roi", f"got {len(rois)} ROI mask(s) for {len(args.pred)} prediction(s); "
                         "give one --roi per --pred, in the same order, or none")
    return [Path(r) for r in rois]


def _load_roi(path: Path, pair: MaskPair) -> np.ndarray:
    """A binary ROI mask on the prediction's grid; refused when it holds no voxel there."""
    from spineseg.imaging.io import load_labels
    from spineseg.imaging.volume import Volume

    reference = Volume(np.zeros(pair.pred.shape, np.float32), pair.affine)
    roi = load_labels(path, reference, convention="binary").mask
    if not roi.any():
        raise InputError(path, "the ROI mask has no voxel on the prediction's grid")
    return roi


def _iter_pairs(args: argparse.Namespace) -> Iterator[MaskPair]:
    """Load the pairs one at a time (only one case's masks are held in memory)."""
    _check_conventions(args)
    rois = _roi_paths(args)
    for (pred_path, truth_path), roi_path in zip(_paired_paths(args.pred, args.truth), rois, strict=True):
        with _memory_guard(pred_path):
            pair = load_mask_pair(
                pred_path, truth_path, pred_labels=args.pred_labels, truth_labels=args.truth_labels
            )
            if roi_path is not None:
                pair = replace(pair, roi=_load_roi(roi_path, pair))
        yield pair


def json_safe(value: object) -> object:
    """``value`` with every nan / inf float (also inside dicts and lists) replaced by None."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _dump_json(payload: object) -> None:
    sys.stdout.write(json.dumps(json_safe(payload), indent=2, allow_nan=False) + "\n")


def _format_number(key: str, value: float | int) -> str:
    if key in COUNT_KEYS and math.isfinite(value):
        return str(round(value)) if isinstance(value, int) else f"{value:.1f}"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4f}"


def aligned_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """First column left-aligned, the others right-aligned, two spaces apart."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _metrics_table(acc: CaseMetrics) -> str:
    """Metrics as rows, one column per case (and a mean column for several cases)."""
    from spineseg.metrics import METRIC_KEYS

    rows = acc.rows
    legend = "".join(f"case {i}: {name}\n" for i, (name, _) in enumerate(rows, start=1))
    columns = [result for _, result in rows]
    header = ["metric", *(f"case {i}" for i in range(1, len(rows) + 1))]
    if len(rows) > 1:
        columns.append(acc.mean())
        header.append("mean")
    body = [[key, *(_format_number(key, column[key]) for column in columns)] for key in METRIC_KEYS]
    return legend + "\n" + aligned_table(header, body)


def _write_csv(path: Path, acc: CaseMetrics, truths: Sequence[str]) -> None:
    from spineseg.metrics import METRIC_KEYS

    if not path.parent.is_dir():
        raise InputError(path, f"folder {path.parent} does not exist")
    try:
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["pred", "truth", *METRIC_KEYS])
            for (name, result), truth in zip(acc.rows, truths, strict=True):
                cells = [json_safe(result[key]) for key in METRIC_KEYS]
                writer.writerow([name, truth, *("" if c is None else c for c in cells)])
    except OSError as exc:
        raise InputError(path, f"cannot write the CSV: {exc.strerror or exc}") from exc


def _load_level_pair(pred_path: Path, truth_path: Path, truth_labels: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predicted levels (raw ids; unnamed ones dropped), true levels on the prediction's grid, affine."""
    from spineseg.imaging.io import load_labels, refusing_unreadable
    from spineseg.imaging.nifti import open_nifti, read_nifti_array
    from spineseg.imaging.volume import Volume
    from spineseg.metrics.levels import named_only

    if not pred_path.is_file():
        raise InputError(pred_path, "no such file")
    with refusing_unreadable(pred_path, "a level map"):
        image = open_nifti(pred_path)
        pred = np.rint(read_nifti_array(pred_path, image)).astype(np.int32)
    affine = np.asarray(image.affine, dtype=np.float64)
    truth = load_labels(truth_path, Volume(np.zeros(pred.shape, np.float32), affine), convention=truth_labels)
    if truth.vertebrae is None:
        raise InputError(truth_path, f"the truth has no vertebra levels (read as {truth.convention}); "
                         "level scores need a per-vertebra truth")
    return named_only(pred), truth.vertebrae, affine


def run_evaluate_levels(args: argparse.Namespace) -> int:
    """Per-vertebra Dice, identification rate and localisation distance of level maps."""
    from spineseg.metrics.levels import score_levels

    _check_conventions(args)
    cases = []
    for pred_path, truth_path in _paired_paths(args.pred_levels, args.truth):
        with _memory_guard(pred_path):
            pred, truth, affine = _load_level_pair(pred_path, truth_path, args.truth_labels)
            scores = score_levels(pred, truth, affine).summary()
        cases.append({"pred": str(pred_path), "truth": str(truth_path), **scores})
    if args.json:
        _dump_json(cases[0] if len(cases) == 1 else {"cases": cases})
        return 0
    for case in cases:
        sys.stdout.write(f"{case['pred']} vs {case['truth']}: identification rate "
                         f"{case['identification_rate']:.3f} of {case['true_vertebrae']} vertebrae, "
                         f"localisation {case['localisation_mm']:.1f} mm\n")
        rows = [[name, f"{e['dice']:.3f}", "yes" if e["identified"] else "no",
                 "-" if e["distance_mm"] is None else f"{e['distance_mm']:.1f}"]
                for name, e in case["per_vertebra"].items()]
        sys.stdout.write(aligned_table(["vertebra", "dice", "identified", "distance_mm"], rows))
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from spineseg.metrics import CaseMetrics

    if args.pred_levels:
        if args.pred:
            raise InputError("--pred-levels", "give either --pred (masks) or --pred-levels (level maps), not both")
        return run_evaluate_levels(args)
    if not args.pred:
        raise InputError("--pred", "give --pred MASK (or --pred-levels LEVELS) with each --truth")

    acc = CaseMetrics()
    for pair in _iter_pairs(args):
        with _memory_guard(Path(pair.name)):
            acc.add(pair.name, pair.pred, pair.truth, pair.spacing, pair.roi)
    if args.csv is not None:
        _write_csv(Path(args.csv), acc, args.truth)
    if args.json:
        if len(acc) == 1:
            _dump_json(acc.rows[0][1])
        else:
            cases = [
                {"pred": name, "truth": truth, **result}
                for (name, result), truth in zip(acc.rows, args.truth, strict=True)
            ]
            _dump_json({"cases": cases, "mean": acc.mean()})
    else:
        sys.stdout.write(_metrics_table(acc))
    return 0


def _paired_measurements(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, int]:
    """Prediction and truth measurements (areas in mm² or volumes in mL) and, for slices, how
    many slices were left out because neither mask has spine there."""
    from spineseg.metrics import mask_volume_ml, slice_areas_mm2

    predicted: list[np.ndarray] = []
    true: list[np.ndarray] = []
    skipped = 0
    for pair in _iter_pairs(args):
        if args.per == "cases":
            predicted.append(np.array([mask_volume_ml(pair.pred, pair.spacing)]))
            true.append(np.array([mask_volume_ml(pair.truth, pair.spacing)]))
            continue
        with _memory_guard(Path(pair.name)):
            pred_areas = slice_areas_mm2(pair.pred, pair.spacing, axis=pair.slice_axis)
            truth_areas = slice_areas_mm2(pair.truth, pair.spacing, axis=pair.slice_axis)
        with_spine = (pred_areas > 0) | (truth_areas > 0)
        skipped += int(np.count_nonzero(~with_spine))
        predicted.append(pred_areas[with_spine])
        true.append(truth_areas[with_spine])
    return np.concatenate(predicted), np.concatenate(true), skipped


def run_bland_altman(args: argparse.Namespace) -> int:
    from spineseg.metrics import bland_altman, plot_bland_altman

    output = Path(args.output)
    if not output.parent.is_dir():
        raise InputError(output, f"folder {output.parent} does not exist")
    predicted, true, skipped = _paired_measurements(args)
    if predicted.size < 2:
        what = "cases (give at least two --pred/--truth pairs)" if args.per == "cases" else "slices with spine"
        raise InputError("--per " + args.per, f"Bland-Altman needs at least 2 pairs, found {predicted.size} {what}")
    stats = bland_altman(predicted, true)
    if args.per == "cases":
        units, title = "mL", "Spine volume per case: prediction vs truth"
    else:
        units, title = "mm²", "Spine area per axial slice: prediction vs truth"
    plot_bland_altman(stats, output, title=title, units=units)
    if args.json:
        payload: dict[str, object] = {"per": args.per, "units": units, **stats.summary(), "plot": str(output)}
        if args.per == "slices":
            payload["skipped_empty_slices"] = skipped
        _dump_json(payload)
        return 0
    summary = stats.summary()
    rows = [
        ["pairs", str(stats.n)],
        [f"bias ({units})", f"{summary['bias']:.4g}"],
        [f"SD ({units})", f"{summary['sd']:.4g}"],
        [f"lower limit ({units})", f"{summary['lower_limit']:.4g}"],
        [f"upper limit ({units})", f"{summary['upper_limit']:.4g}"],
    ]
    if args.per == "slices":
        rows.append(["slices without spine (left out)", str(skipped)])
    sys.stdout.write(aligned_table([f"Bland-Altman per {args.per[:-1]}", "prediction - truth"], rows))
    sys.stdout.write(f"plot: {output}\n")
    return 0


def _add_pair_arguments(parser: argparse.ArgumentParser, *, pred_required: bool = True) -> None:
    parser.add_argument(
        "--pred",
        action="append",
        required=pred_required,
        metavar="NIFTI",
        help="predicted spine mask (NIfTI label map); repeat for several cases",
    )
    parser.add_argument(
        "--truth",
        action="append",
        required=True,
        metavar="LABELS",
        help="ground truth of the --pred at the same position (file or per-structure folder)",
    )
    parser.add_argument(
        "--truth-labels",
        default="auto",
        metavar="CONVENTION",
        help=f"label convention of the truths: {LABEL_CONVENTIONS_HELP} (default: auto)",
    )
    parser.add_argument(
        "--pred-labels",
        default="binary",
        metavar="CONVENTION",
        help="label convention of the predictions (default: binary, any non-zero voxel is spine)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` and ``bland-altman`` commands."""
    evaluate = subparsers.add_parser(
        "evaluate",
        help="Dice, IoU, HD95, ASSD, volumes of predicted masks against ground truth",
        description="Score predicted spine masks against ground-truth label maps. Undefined "
        "values print as nan (null in JSON, empty in CSV); a surface distance to a missed "
        "spine is inf (null in JSON).",
    )
    _add_pair_arguments(evaluate, pred_required=False)
    evaluate.add_argument("--pred-levels", action="append", metavar="NIFTI",
                          help="predicted level map (VerSe ids, e.g. from segment --levels) instead of --pred: "
                          "per-vertebra Dice, identification rate, localisation distance")
    evaluate.add_argument("--roi", action="append", metavar="NIFTI",
                          help="score only inside this binary mask (one per --pred, in order), for a truth "
                          "that is complete only there, e.g. the column box of a whole-bone mask")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")
    evaluate.add_argument("--csv", metavar="FILE", help="also write one row per case to FILE")
    evaluate.set_defaults(func=run_evaluate)

    agreement = subparsers.add_parser(
        "bland-altman",
        help="Bland-Altman agreement of spine areas per slice or volumes per case",
        description="Compare spine areas per axial slice (mm²; slices where neither mask has "
        "spine are left out) or spine volumes per case (mL) of predictions against truths, "
        "print bias and 95%% limits of agreement and write the plot.",
    )
    _add_pair_arguments(agreement)
    agreement.add_argument(
        "--per", choices=("slices", "cases"), default="slices", help="one point per axial slice (default) or per case"
    )
    agreement.add_argument("-o", "--output", required=True, metavar="PNG", help="where to write the plot")
    agreement.add_argument("--json", action="store_true", help="print JSON instead of a table")
    agreement.set_defaults(func=run_bland_altman)
