"""How much a model's mask depends on what lies around the spine; prints figures, asserts nothing.

    python bench/field_of_view.py [--model ID_OR_FOLDER] [--cases P1,P2,...] [--margins 16,32]

For each case of the manifest, the network runs on the model grid three ways and each mask
(probability >= the card's threshold, before post-processing) is compared with the one from the
whole plane: with the air around the body cut away, and on a box around the spine that the
whole-plane mask found, ``margin`` voxels larger on every side (both start on the network's
stride grid; 16 voxels of air are added around them, as around every slice). A network whose outputs
depend only on their neighbourhood (batch norm) gives Dice 1 for the air crop and close to 1 for
a box wider than its receptive field; one that normalises by the slice's statistics (instance
norm) does not. The seconds say what running on less than the plane would save. The last row
per case, "survey + box", is what ``segment`` runs (``predict_around_spine``: every 4th slice on
the body's box, i.e. the air cut away, each batch of the others on the box of the spine that the
survey found around it, ``spine_box.BOX_MARGIN`` larger).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def _on_box(loaded, image: np.ndarray, box: tuple[slice, slice]) -> tuple[np.ndarray, float]:
    from spineseg.model.inference import predict_model_grid

    out = np.zeros(image.shape, dtype=np.float32)
    t0 = time.perf_counter()
    out[box] = predict_model_grid(loaded, np.ascontiguousarray(image[box]))
    return out, time.perf_counter() - t0


def _extent(mask: np.ndarray, axis_keep: int) -> tuple[int, int]:
    present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis_keep)))
    return int(present[0]), int(present[-1]) + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="registry id or model folder (default: production)")
    parser.add_argument("--manifest", type=Path, default=REPO / "training" / "default_manifest.csv")
    parser.add_argument("--cases", default="", help="comma-separated patients (default: all)")
    parser.add_argument("--margins", default="16,32", help="box margins in model-grid voxels")
    args = parser.parse_args()

    from spineseg.imaging.io import load_volume
    from spineseg.model.card import size_multiple
    from spineseg.model.dataset import read_manifest
    from spineseg.model.inference import (
        BODY_HU,
        normalised_level,
        predict_around_spine,
        predict_model_grid,
        resolve_loaded_model,
    )
    from spineseg.model.preprocess import prepare_volume

    loaded = resolve_loaded_model(args.model)
    card = loaded.card
    stride = size_multiple(card.architecture)
    wanted = set(filter(None, args.cases.split(",")))
    print(f"model {card.id} (norm {card.architecture.get('norm', 'instance')}), runtime {loaded.runtime.name}")
    print(f"{'case':18} {'grid':16} {'variant':22} {'area':>5} {'seconds':>7} {'dice vs plane':>13} {'changed':>8}")
    for spec in read_manifest(args.manifest):
        if wanted and spec.patient not in wanted:
            continue
        image = prepare_volume(load_volume(Path(spec.ct)), card.spacing_mm, card.window_hu).image
        t0 = time.perf_counter()
        plane = predict_model_grid(loaded, image) >= card.threshold
        seconds = time.perf_counter() - t0
        print(f"{spec.name:18} {image.shape!s:16} {'whole plane':22} {1.0:5.2f} {seconds:7.2f} {1.0:13.5f} {0:8d}")
        body = image > normalised_level(BODY_HU, card.window_hu)
        boxes = {}
        if body.any():
            (i0, i1), (j0, j1) = _extent(body, 0), _extent(body, 1)
            boxes["air cut away"] = (slice(i0 // stride * stride, i1), slice(j0 // stride * stride, j1))
        if plane.any():
            (i0, i1), (j0, j1) = _extent(plane, 0), _extent(plane, 1)
            for margin in (int(m) for m in args.margins.split(",")):
                # Starts on the stride grid, like the air crop: a strided network shifted by other
                # amounts computes other features.
                boxes[f"spine box + {margin} vox"] = (
                    slice(max(i0 - margin, 0) // stride * stride, min(i1 + margin, image.shape[0])),
                    slice(max(j0 - margin, 0) // stride * stride, min(j1 + margin, image.shape[1])))
        for name, box in boxes.items():
            probabilities, seconds = _on_box(loaded, image, box)
            mask = probabilities >= card.threshold
            area = (box[0].stop - box[0].start) * (box[1].stop - box[1].start) / (image.shape[0] * image.shape[1])
            print(f"{'':18} {'':16} {name:22} {area:5.2f} {seconds:7.2f} {_dice(plane, mask):13.5f} "
                  f"{int((plane != mask).sum()):8d}", flush=True)
        t0 = time.perf_counter()
        probabilities, share = predict_around_spine(loaded, image)
        seconds, mask = time.perf_counter() - t0, probabilities >= card.threshold
        print(f"{'':18} {'':16} {'survey + box':22} {share:5.2f} {seconds:7.2f} {_dice(plane, mask):13.5f} "
              f"{int((plane != mask).sum()):8d}", flush=True)


if __name__ == "__main__":
    main()
