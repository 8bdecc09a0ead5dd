"""Short series (1-5 axial slices) of the shared cases, with the component size rule scaled to
the scan's extent and without the scaling; prints figures, asserts nothing.

    python bench/short_series.py [--model ID_OR_FOLDER] [--shared ../shared/data]

The paper's input was one axial slice; the hidden 3-slice series of the accuracy issue is another
such case. A scan that short cuts every structure to a thin slab, so the absolute minimum
component volume of the card (1 mL) can drop a real vertebral arch. For each case and each short
variant of ``bench/accuracy.py`` the Dice with ``extent_scaled_min_ml`` (this code) and with the
card's minimum unscaled (the code before) are printed side by side.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from accuracy import CASES, robustness_variants  # noqa: E402

SHORT = ("5 slices", "1 axial slice", "3 axial slices", "one 8-bit slice")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()

    from spineseg.imaging.io import load_labels, load_volume
    from spineseg.metrics import evaluate_masks
    from spineseg.model import postprocess
    from spineseg.model.inference import resolve_loaded_model, segment

    loaded = resolve_loaded_model(args.model)
    scaled = postprocess.extent_scaled_min_ml
    print(f"model {loaded.card.id}; Dice with the minimum volume scaled to the extent / unscaled")
    for case, (ct_name, labels_name) in CASES.items():
        folder = args.shared / "cases" / case
        if not folder.exists() or case in ("ts-abdomen-small", "ts-cta-crop"):
            continue
        volume = load_volume(folder / ct_name)
        truth = load_labels(folder / labels_name, volume).mask
        for name, variant, variant_truth in robustness_variants(volume, truth):
            if not name.startswith(SHORT):
                continue
            dice = []
            for rule in (scaled, lambda min_ml, _n, _s: min_ml):
                postprocess.extent_scaled_min_ml = rule
                try:
                    dice.append(evaluate_masks(segment(variant, loaded).mask, variant_truth, variant.spacing)["dice"])
                finally:
                    postprocess.extent_scaled_min_ml = scaled
            print(f"  {case:18} {name:42} {dice[0]:.3f} / {dice[1]:.3f}")


if __name__ == "__main__":
    main()
