"""``spineseg dataset build`` and ``spineseg train``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spineseg.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    dataset = sub.add_parser("dataset", help="build training datasets")
    dsub = dataset.add_subparsers(dest="dataset_command", required=True)
    build = dsub.add_parser("build", help="preprocess labelled cases into one HDF5 dataset file")
    source = build.add_mutually_exclusive_group(required=True)
    source.add_argument("--cases", nargs="+", type=Path, metavar="DIR", help="case folders (CT + labels)")
    source.add_argument("--manifest", type=Path, help="CSV: name,ct,labels,patient[,site,convention,split,partial]")
    build.add_argument("-o", "--output", type=Path, required=True, help="dataset file (.h5)")
    build.add_argument("--seed", type=int, default=0, help="seed of the patient split")
    build.add_argument("--spacing", type=float, nargs=3, default=(1.5, 1.5, 2.5), metavar=("X", "Y", "Z"))
    build.set_defaults(func=run_dataset_build)

    train = sub.add_parser("train", help="train a new model version from a dataset")
    train.add_argument("--dataset", type=Path, required=True)
    train.add_argument("--from", dest="base", required=True, help="registry version id to fine-tune, or 'scratch'")
    train.add_argument("--out-version", default="", help="id of the new version (default: generated)")
    train.add_argument("--epochs", type=int, default=40)
    train.add_argument("--steps-per-epoch", type=int, default=100)
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--lr", type=float, default=2e-3)
    train.add_argument("--patience", type=int, default=10)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--bf16", action="store_true", help="bf16 autocast (CPU or GPU)")
    train.add_argument("--checkpoint-dir", type=Path, help="where to keep the resumable checkpoint")
    train.add_argument("--resume", action="store_true", help="continue from the checkpoint in --checkpoint-dir")
    train.add_argument("--notes", default="")
    train.set_defaults(func=run_train)


def run_dataset_build(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from spineseg.model.dataset import build_dataset, discover_case, read_manifest

    if args.manifest:
        if not args.manifest.is_file():
            raise InputError(args.manifest, "manifest file not found")
        specs = read_manifest(args.manifest)
    else:
        specs = [discover_case(folder) for folder in args.cases]
    with tqdm(total=len(specs), desc="cases", unit="case", file=sys.stderr) as bar:
        def progress(fraction: float, name: str) -> None:
            bar.set_postfix_str(name)
            bar.update(1)

        path = build_dataset(specs, args.output, spacing=tuple(args.spacing), seed=args.seed, progress=progress)
    sys.stdout.write(f"dataset written to {path}\n")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from spineseg.model.train import TrainConfig, TrainEvent
    from spineseg.services.training import train_version

    config = TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
                         lr=args.lr, patience=args.patience, seed=args.seed, bf16=args.bf16)
    bar = tqdm(total=config.epochs * config.steps_per_epoch, desc="training", unit="step", file=sys.stderr)

    def on_event(event: TrainEvent) -> None:
        if event.kind == "step":
            bar.n = event.step
            bar.set_postfix(epoch=event.epoch + 1, loss=f"{event.loss:.3f}")
            bar.refresh()
        else:
            val = event.metrics.get("val_dice", float("nan"))
            bar.write(f"epoch {event.epoch}: loss {event.loss:.4f} val_dice {val:.4f}")

    try:
        version, _ = train_version(args.dataset, args.base, config, out_version=args.out_version,
                                        checkpoint_dir=args.checkpoint_dir, resume=args.resume,
                                        callback=on_event, notes=args.notes)
    finally:
        bar.close()
    if version is None:
        sys.stderr.write(f"interrupted, registry untouched; resume: --resume --checkpoint-dir {args.checkpoint_dir}\n")
        return 130
    sys.stdout.write(f"registered version {version.id} (parent {version.card.parent_id or 'scratch'}), "
                     f"val_dice {version.card.metrics.get('val_dice')}\n")
    return 0
