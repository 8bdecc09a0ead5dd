"""Pictures of masks against the truth on one axial slice, one panel per model; asserts nothing.

    python bench/mask_pictures.py --case P1 --model A=runs/x/model --model B=runs/y/model
                                  [--variant "dark marrow"] [--slices 2] [--range 55:104] -o picture.png

Each panel is the CT (display window -1000..2000 HU would hide the marrow, so bone's -200..1200)
with green = both, red = the model only, blue = the truth only, and the slice's Dice. The slices
are those where the first model misses the most truth: where its failure is, so the others can
be compared there. ``--variant`` applies one of ``bench/accuracy.py``'s robustness variants
(by the start of its name) to the CT first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

WINDOW = (-200.0, 1200.0)
BOTH, MODEL_ONLY, TRUTH_ONLY = (60, 200, 60), (230, 50, 40), (40, 110, 240)


def panel(hu: np.ndarray, mask: np.ndarray, truth: np.ndarray, scale: int, caption: str):
    from PIL import Image, ImageDraw

    from spineseg.imaging.overlay import display_orientation

    grey = np.clip((display_orientation(hu) - WINDOW[0]) / (WINDOW[1] - WINDOW[0]), 0, 1) * 255
    rgb = np.repeat(grey[..., None], 3, axis=2)
    m, t = display_orientation(mask), display_orientation(truth)
    for layer, colour in ((m & t, BOTH), (m & ~t, MODEL_ONLY), (~m & t, TRUTH_ONLY)):
        rgb[layer] = 0.5 * rgb[layer] + 0.5 * np.array(colour, dtype=np.float32)
    image = Image.fromarray(rgb.astype(np.uint8), mode="RGB")
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    framed = Image.new("RGB", (image.width, image.height + 18), (0, 0, 0))
    framed.paste(image, (0, 18))
    ImageDraw.Draw(framed).text((4, 3), caption, fill=(255, 255, 255))
    return framed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", required=True, help="patient of the manifest, e.g. P1")
    parser.add_argument("--model", action="append", required=True, metavar="LABEL=FOLDER")
    parser.add_argument("--manifest", type=Path, default=REPO / "training" / "default_manifest.csv")
    parser.add_argument("--variant", default="", help="a bench/accuracy.py robustness variant, by its name's start")
    parser.add_argument("--slices", type=int, default=2)
    parser.add_argument("--range", default="", help="first:last+1 axial slices (RAS grid) to choose from")
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()

    from accuracy import robustness_variants
    from PIL import Image

    from spineseg.imaging.io import load_labels, load_volume
    from spineseg.imaging.resample import canonical_view, to_canonical
    from spineseg.model.dataset import read_manifest
    from spineseg.model.inference import LoadedModel, segment

    spec = next((s for s in read_manifest(args.manifest) if s.patient == args.case), None)
    if spec is None:
        raise SystemExit(f"no case of patient {args.case} in {args.manifest}")
    volume = load_volume(Path(spec.ct))
    truth = load_labels(Path(spec.labels), volume, convention=spec.convention).mask > 0
    if args.variant:
        found = [(v, t) for name, v, t in robustness_variants(volume, truth.astype(np.uint8))
                 if name.startswith(args.variant)]
        if not found:
            raise SystemExit(f"no robustness variant named {args.variant!r}...")
        volume, truth = found[0][0], found[0][1] > 0
    canonical, ornt = to_canonical(volume)
    truth = np.asarray(canonical_view(truth, ornt))
    masks = {}
    for item in args.model:
        label, _, folder = item.partition("=")
        seg = segment(volume, LoadedModel.from_folder(Path(folder)))
        masks[label] = np.asarray(canonical_view(seg.mask.astype(bool), ornt))
    first = next(iter(masks.values()))
    missed = (truth & ~first).sum(axis=(0, 1))
    if args.range:
        low, _, high = args.range.partition(":")
        keep = np.zeros(missed.shape, dtype=bool)
        keep[int(low or 0):int(high) if high else None] = True
        missed = np.where(keep, missed, -1)
    slices = sorted(np.argsort(missed)[::-1][: args.slices].tolist())
    scale = max(1, round(360 / max(canonical.shape[0], canonical.shape[1])))
    rows = []
    for k in slices:
        panels = []
        for label, mask in masks.items():
            m, t = mask[:, :, k], truth[:, :, k]
            dice = 2 * (m & t).sum() / max(m.sum() + t.sum(), 1)
            panels.append(panel(canonical.array[:, :, k], m, t, scale, f"{label}  slice {k}  Dice {dice:.2f}"))
        rows.append(panels)
    width = sum(p.width for p in rows[0]) + 4 * (len(rows[0]) - 1)
    height = sum(r[0].height for r in rows) + 4 * (len(rows) - 1)
    sheet = Image.new("RGB", (width, height), (40, 40, 40))
    y = 0
    for r in rows:
        x = 0
        for p in r:
            sheet.paste(p, (x, y))
            x += p.width + 4
        y += r[0].height + 4
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"{args.out}: case {spec.name}{' (' + args.variant + ')' if args.variant else ''}, slices {slices}, "
          f"models {list(masks)}")


if __name__ == "__main__":
    main()
