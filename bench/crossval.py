"""Cross-validation by patient over the shared cases; prints figures, asserts nothing.

    python bench/crossval.py [--folds P1+P6,P2+P4,P3+P5] [--epochs 8 --steps-per-epoch 50]
                             [--manifest training/default_manifest.csv] [--out runs/crossval]

Each fold holds two patients out, trains from scratch on the other four with the default
recipe (``TrainConfig`` defaults but for the schedule) and no validation patient (a fixed
schedule, the last network), then segments each held-out case and scores it against its
labels: Dice, precision, recall, HD95, plus the robustness variants of ``bench/accuracy.py``.
Inference settings that need no retraining (``--thresholds``, ``--postprocess``, ``--tta
off,on``) are scored on the same fold networks, so they are judged on unseen patients too;
``--saved`` scores the networks an earlier run kept in ``--out`` without training again. A
recipe change is cross-validated with ``--set FIELD=VALUE`` (``TrainConfig`` fields, e.g.
``--set dark_marrow_prob=0.25``).

A partially labelled case (the manifest's ``partial``, e.g. P3's T12 only) is scored inside
the axial span of its labels; its precision still counts the unlabelled neighbours' bone
there, so read its recall.

The default schedule is the shipped model's (30 x 100 steps): about 20 min of training per fold
on a quiet 2-core CPU (channels-last), plus a few minutes of scoring. A short schedule says nothing about the
recipe: 8 x 50 steps gave Dice 0.41 and 0.38 on fold P1+P6, where the shipped model scores
0.92 and 0.70 on the same cases (docs/accuracy.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from accuracy import LABEL_KIND, P7, metric_cells, metric_header, p7_case, robustness_variants  # noqa: E402

SCORED = ("dice", "precision", "recall", "hd95_mm", "surface_dice_1mm", "surface_dice_2mm",
          "signed_surface_distance_mm", "interior_recall")
"""The figures kept per case and setting (``evaluate_masks`` keys)."""


def fold_specs(specs, held_out: set[str]):
    """The fold's training cases (every patient not held out, split "train") and its test cases."""
    train = [replace(s, split="train") for s in specs if s.patient not in held_out]
    test = [s for s in specs if s.patient in held_out]
    return train, test


def scored(seg_mask, truth, spacing, partial: bool, roi=None) -> dict:
    import numpy as np

    from spineseg.metrics import evaluate_masks

    if partial:  # only the labelled span along the slice axis can be scored
        present = np.flatnonzero(truth.any(axis=(0, 1)))
        span = slice(int(present[0]), int(present[-1]) + 1)
        seg_mask, truth = seg_mask[:, :, span], truth[:, :, span]
    m = evaluate_masks(seg_mask, truth, spacing, roi)
    return {k: float(m[k]) for k in SCORED}


def post_processed(mask, canonical, ornt, steps: str):
    """``mask`` (input grid) after the post-processing ``steps`` ("none", or steps joined by "+":
    "fill", "grow", "bodyfill"), applied on the RAS view of the input grid (axes 0, 1 in-plane); ``canonical,
    ornt`` is ``to_canonical`` of the CT, made once per case."""
    import numpy as np

    from spineseg.imaging.resample import canonical_view, from_canonical
    from spineseg.model.postprocess import fill_body_holes, fill_enclosed, grow_to_bone_edge

    if steps == "none":
        return mask
    out = canonical_view(mask, ornt).astype(bool)
    for step in steps.split("+"):
        if step == "fill":
            out = fill_enclosed(out)
        elif step == "grow":
            out = grow_to_bone_edge(out, canonical.array, canonical.spacing)
        elif step == "bodyfill":
            out = fill_body_holes(out, canonical.array, canonical.spacing)
        else:
            raise SystemExit(f"unknown post-processing step {step!r}")
    return np.ascontiguousarray(from_canonical(out.astype(np.uint8), ornt))


def evaluate_fold(loaded, tests, thresholds: list[float], robustness: bool, posts: list[str],
                  ttas: tuple[bool, ...] = (False,), p7=None) -> list[dict]:
    """Scores of the fold's held-out cases, and of P7 when ``p7`` (``accuracy.p7_case``) is given."""
    from spineseg.imaging.io import load_labels, load_volume
    from spineseg.imaging.resample import to_canonical
    from spineseg.model.inference import segment

    rows = []
    base_card = loaded.card
    for spec in [*tests, *([None] if p7 is not None else [])]:
        if spec is None:  # P7: evaluation only, never trained on, so held out by every fold
            volume, truth, roi = p7
            spec = SimpleNamespace(name=P7, patient="P7", partial=False)
        else:
            volume = load_volume(Path(spec.ct))
            truth, roi = load_labels(Path(spec.labels), volume, convention=spec.convention).mask > 0, None
        canonical, ornt = to_canonical(volume) if posts != ["none"] else (None, None)
        row = {"case": spec.name, "patient": spec.patient, "partial": spec.partial,
               "labels": LABEL_KIND.get(spec.name, "model"), "by_threshold": {}}
        for tta, threshold in ((tta, threshold) for tta in ttas for threshold in thresholds):
            loaded.card = replace(base_card, threshold=threshold, tta_flip=tta)
            t0 = time.perf_counter()
            seg = segment(volume, loaded)
            seconds = time.perf_counter() - t0
            for post in posts:
                t0 = time.perf_counter()
                mask = post_processed(seg.mask, canonical, ornt, post)
                key = " ".join([str(threshold)] + ["tta"] * tta + [post] * (post != "none"))
                row["by_threshold"][key] = scored(mask, truth, volume.spacing, spec.partial, roi) | {
                    "seconds": seconds + time.perf_counter() - t0}
        loaded.card = base_card
        if robustness and spec.name != P7:
            row["robustness"] = {}
            for name, variant, variant_truth in robustness_variants(volume, truth.astype("uint8")):
                if spec.partial and not variant_truth.any():  # the variant cut the labelled part away
                    continue
                seg = segment(variant, loaded)
                row["robustness"][name] = scored(seg.mask, variant_truth > 0, variant.spacing, spec.partial)
        rows.append(row)
    return rows


def train_fold(train_specs, out: Path, args) -> tuple[object, float]:
    from spineseg.model.dataset import build_dataset
    from spineseg.model.inference import LoadedModel
    from spineseg.model.train import TrainConfig, save_model_folder, train

    dataset = build_dataset(train_specs, out / "dataset.h5", seed=args.seed)
    config = TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, seed=args.seed,
                         warmup_steps=min(100, args.epochs * args.steps_per_epoch // 10),
                         **recipe_overrides(args.set))
    t0 = time.perf_counter()
    result = train(dataset, config)
    seconds = time.perf_counter() - t0
    if result.interrupted:  # SIGTERM / Ctrl-C: a half-trained network must not be scored as the fold's
        raise SystemExit(f"fold {out.name}: training interrupted after {seconds / 60:.1f} min; not scored")
    result.card.id = f"crossval-{out.name}"
    folder = save_model_folder(result, out / "model")
    return LoadedModel.from_folder(folder), seconds


def recipe_overrides(pairs: list[str]) -> dict:
    """``--set name=value`` pairs as ``TrainConfig`` fields, each value parsed as JSON (a
    number, ``true``, ``[0.15, 0.6]``); an unknown field or a bad value stops the run."""
    from dataclasses import fields

    from spineseg.model.train import TrainConfig

    known = {f.name for f in fields(TrainConfig)}
    overrides = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in known:
            raise SystemExit(f"--set {pair!r}: expected name=value with a TrainConfig field name")
        try:
            overrides[name] = json.loads(value)
        except ValueError as exc:
            raise SystemExit(f"--set {pair!r}: the value is not JSON ({exc})") from exc
        if isinstance(overrides[name], list):
            overrides[name] = tuple(overrides[name])
    return overrides


def summary_lines(results: list[dict]) -> list[str]:
    lines = []
    rows = [row for fold in results for row in fold["cases"]]
    # Folds run separately may have scored different settings: the table shows those they share.
    keys = [k for k in (rows[0]["by_threshold"] if rows else {}) if all(k in r["by_threshold"] for r in rows)]
    for key in keys:
        lines.append(f"threshold {key}:")
        lines.append(f"  {'fold':12} {'case':18} {'labels':6} {metric_header()} {'s':>6}")
        per_kind: dict[str, dict[str, list[float]]] = {}
        for fold in results:
            for row in fold["cases"]:
                m = row["by_threshold"][key]
                note = "  (partial labels: read recall)" if row["partial"] else ""
                kind = row.get("labels", "model")
                lines.append(f"  {fold['fold']:12} {row['case']:18} {kind:6} {metric_cells(m)} "
                             f"{m['seconds']:6.1f}{note}")
                if not row["partial"]:
                    for k in ("dice", "surface_dice_1mm", "signed_surface_distance_mm", "interior_recall"):
                        if k in m:
                            per_kind.setdefault(kind, {}).setdefault(k, []).append(m[k])
        for kind, per_metric in sorted(per_kind.items()):
            if len(per_metric["dice"]) >= 2:
                lines.append(f"  mean +- SD over fully labelled held-out cases, {kind} labels: " + ", ".join(
                    f"{k} {statistics.mean(v):.3f} +- {statistics.stdev(v):.3f}" for k, v in per_metric.items()))
    robust = [row for fold in results for row in fold["cases"] if "robustness" in row]
    if robust:
        lines.append("robustness (threshold of the card), Dice / precision / recall:")
        for row in robust:
            for name, m in row["robustness"].items():
                lines.append(f"  {row['case']:18} {name:42} {m['dice']:.3f} / {m['precision']:.3f} / "
                             f"{m['recall']:.3f}")
    return lines


def expected_accuracy(results: list[dict], key: str = "0.5") -> dict:
    """The folds' held-out figures at one scoring (``key`` of ``by_threshold``) as a model card
    records them: per case, the mean and SD of the fully labelled cases, and each robustness
    variant's mean Dice over the fully labelled cases (a partially labelled case's Dice counts
    its unlabelled spine as false positives)."""
    # P7 is held out by every fold: one entry per fold.
    cases = {(row["case"] if row["case"] != P7 else f"{P7} ({fold['fold']})"):
             {"patient": row["patient"], "fold": fold["fold"], "partial": row["partial"],
              "labels": row.get("labels", "model")}
             | {k: round(row["by_threshold"][key][k], 4) for k in SCORED if k in row["by_threshold"][key]}
             for fold in results for row in fold["cases"]}
    # The mean Dice stays that of the model-made labels (comparable with earlier cards); the
    # hand-drawn cases (P4, P7) are summarised apart.
    full = [c["dice"] for c in cases.values() if not c["partial"] and c["labels"] == "model"]
    hand = [c for c in cases.values() if c["labels"] == "hand"]
    variants: dict[str, list[float]] = {}
    for fold in results:
        for row in fold["cases"]:
            if row["partial"]:
                continue
            for name, m in (row.get("robustness") or {}).items():
                variants.setdefault(name, []).append(m["dice"])
    return {"scoring": key, "folds": [f["fold"] for f in results], "cases": cases,
            "mean_dice": round(statistics.mean(full), 4) if full else None,
            "sd_dice": round(statistics.stdev(full), 4) if len(full) >= 2 else None,
            "hand_drawn_mean": {k: round(statistics.mean(c[k] for c in hand), 4)
                                for k in SCORED if hand and all(k in c for c in hand)},
            "robustness_mean_dice": {name: {"mean": round(statistics.mean(v), 4), "cases": len(v)}
                                     for name, v in variants.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=REPO / "training" / "default_manifest.csv")
    parser.add_argument("--folds", default="P1+P6,P2+P4,P3+P5", help="held-out patients per fold")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--thresholds", default="0.5", help="comma-separated sigmoid thresholds to score")
    parser.add_argument("--postprocess", default="none",
                        help="comma-separated post-processing to score: none, or steps joined by +: fill, grow, "
                             "bodyfill (e.g. none,grow,fill+grow,bodyfill)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                        help="a TrainConfig field of the recipe to cross-validate, e.g. dark_marrow_prob=0.25")
    parser.add_argument("--tta", default="off", help="comma-separated off,on: score without / with the flip TTA")
    parser.add_argument("--saved", action="store_true", help="score the fold networks kept in --out (no training)")
    parser.add_argument("--no-robustness", action="store_true")
    parser.add_argument("--no-p7", action="store_true", help="do not score P7 (evaluation-only, hand-drawn)")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--summarise", action="store_true",
                        help="print the table of the folds' results.json in --out (folds run as separate processes)")
    parser.add_argument("--expected-accuracy", type=Path, metavar="JSON",
                        help="with --summarise: also write the figures a model card records "
                             "(training/default_expected_accuracy.json for the shipped default)")
    parser.add_argument("--only-fold", default="", help="run one fold (its name, e.g. P1+P6)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "crossval")
    args = parser.parse_args()
    # The training loop logs each epoch (loss, seconds): the progress of a long run.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    if args.summarise:
        results = [json.loads(p.read_text()) for p in sorted(args.out.glob("*/results.json"))]
        print("\n".join(summary_lines(results)))
        if args.expected_accuracy:
            summary = expected_accuracy(results)
            summary["source"] = f"python bench/crossval.py --summarise --out {args.out}"
            args.expected_accuracy.write_text(json.dumps(summary, indent=1) + "\n")
            print(f"expected accuracy written to {args.expected_accuracy}")
        return

    from spineseg.model.dataset import read_manifest

    specs = read_manifest(args.manifest)
    thresholds = [float(t) for t in args.thresholds.split(",")]
    posts = args.postprocess.split(",")
    ttas = tuple(dict.fromkeys(v.strip() == "on" for v in args.tta.split(",")))
    folds = [f for f in args.folds.split(",") if not args.only_fold or f == args.only_fold]
    patients = {s.patient for s in specs}
    results = []
    p7 = None if args.no_p7 else p7_case(args.shared)
    print(f"manifest {args.manifest} ({len(specs)} cases, patients {sorted(patients)}); schedule "
          f"{args.epochs} x {args.steps_per_epoch} steps; recipe changes {recipe_overrides(args.set)}; "
          f"folds {folds}", flush=True)
    for fold in folds:
        held_out = set(fold.split("+"))
        if not held_out <= patients:
            raise SystemExit(f"fold {fold}: unknown patients {sorted(held_out - patients)}")
        train_specs, test_specs = fold_specs(specs, held_out)
        out = args.out / fold
        out.mkdir(parents=True, exist_ok=True)
        if args.saved:  # score the networks a previous run of this script trained and kept
            from spineseg.model.inference import LoadedModel

            loaded, seconds = LoadedModel.from_folder(out / "model"), float("nan")
        else:
            loaded, seconds = train_fold(train_specs, out, args)
        print(f"fold {fold}: trained on {sorted({s.patient for s in train_specs})} in {seconds / 60:.1f} min",
              flush=True)
        cases = evaluate_fold(loaded, test_specs, thresholds, not args.no_robustness, posts, ttas, p7)
        results.append({"fold": fold, "train_patients": sorted({s.patient for s in train_specs}),
                        "train_minutes": seconds / 60, "cases": cases})
        (out / "results.json").write_text(json.dumps(results[-1], indent=1))
        print("\n".join(summary_lines(results[-1:])), flush=True)
    print("=== all folds ===")
    print("\n".join(summary_lines(results)))
    (args.out / "results.json").write_text(json.dumps({"schedule": [args.epochs, args.steps_per_epoch],
                                                       "recipe_changes": args.set,
                                                       "manifest": str(args.manifest), "folds": results}, indent=1))


if __name__ == "__main__":
    main()
