"""The hollow-body safety net (``fill_body_holes``) on the shared cases; prints figures, asserts nothing.

    python bench/body_fill.py [--model ID_OR_FOLDER] [--shared ../shared/data]
                              [--picture docs/screenshots/hollow-fill-P4.png]

Per case, two questions:
- Does it bring a hollow body back? Each case's truth with its voxels more than 3 mm deep
  removed (a cortical shell, as the hidden 3-slice case's masks were) is filled: Dice and
  interior recall before and after, and how many voxels of the truth's own enclosed background
  (the canal, the gaps between rib and process, holes of the label inside bone) it filled.
- Does it cost anything where the mask is whole? The model's mask before and after: Dice, the
  voxels added and how many of them lie in the truth's enclosed background.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from accuracy import CASES, P7, p7_case  # noqa: E402


def enclosed_background(truth: np.ndarray) -> np.ndarray:
    """The truth's background enclosed within an axial slice (the canal and the like)."""
    from scipy import ndimage

    plane = np.zeros((3, 3, 3), dtype=bool)
    plane[:, :, 1] = ndimage.generate_binary_structure(2, 1)
    return ndimage.binary_fill_holes(truth, structure=plane) & ~truth


def outline(mask: np.ndarray) -> np.ndarray:
    """The in-plane boundary of a 2D mask (its voxels with a 4-neighbour outside it)."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def picture(path: Path, hu: np.ndarray, truth: np.ndarray, shell: np.ndarray, filled: np.ndarray) -> None:
    """Three axial slices through the bodies (RAS grid): the CT (-200..1200 HU), the truth's
    outline in blue, the shell's in red and the filled mask's in green, side by side."""
    from PIL import Image, ImageDraw

    from spineseg.imaging.overlay import display_orientation

    deep = truth & ~shell
    slices = np.flatnonzero(deep.any(axis=(0, 1)))
    chosen = slices[np.linspace(0, slices.size - 1, 5).astype(int)[1:4]]
    tiles = []
    for k in chosen:
        grey = np.clip((display_orientation(hu[:, :, k]) + 200.0) / 1400.0, 0, 1) * 255
        for label, mask in (("shell (the hollow mask)", shell), ("filled", filled)):
            rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.uint8)
            rgb[outline(display_orientation(truth[:, :, k]))] = (60, 130, 255)
            rgb[outline(display_orientation(mask[:, :, k]))] = (255, 60, 40) if label != "filled" else (60, 230, 60)
            image = Image.fromarray(rgb).resize((rgb.shape[1] * 4, rgb.shape[0] * 4), Image.NEAREST)
            framed = Image.new("RGB", (image.width, image.height + 16))
            framed.paste(image, (0, 16))
            ImageDraw.Draw(framed).text((3, 2), f"slice {k}: {label}", fill=(255, 255, 255))
            tiles.append(framed)
    sheet = Image.new("RGB", (sum(t.width for t in tiles[:2]) + 4, sum(t.height for t in tiles[::2]) + 8), (40, 40, 40))
    for n, tile in enumerate(tiles):
        sheet.paste(tile, ((n % 2) * (tile.width + 4), (n // 2) * (tile.height + 4)))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    print(f"{path}: slices {chosen.tolist()}; blue = truth, red = shell, green = filled")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="registry id or model folder (default: production)")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--picture", type=Path, help="write tptbox-lumbar's shell and fill (outlines on the CT) here")
    args = parser.parse_args()

    from scipy import ndimage

    from spineseg.imaging.io import load_labels, load_volume
    from spineseg.imaging.resample import canonical_view, to_canonical
    from spineseg.metrics import evaluate_masks
    from spineseg.model.inference import resolve_loaded_model, segment
    from spineseg.model.postprocess import fill_body_holes

    loaded = resolve_loaded_model(args.model)
    print(f"model {loaded.card.id}; shell = truth without its voxels > 3 mm deep")
    print(f"{'case':18} {'shell dice':>17} {'shell interior':>17} {'enclosed filled':>15} | "
          f"{'model dice':>17} {'added':>6} {'in canal':>8} {'seconds':>7}")
    for case, names in [*CASES.items(), (P7, None)]:
        folder = args.shared / "cases" / case
        if not folder.exists() or case in ("ts-abdomen-small", "ts-cta-crop"):  # a cut of P1; T12 only
            continue
        if names is None:
            volume, truth, roi = p7_case(args.shared)
            truth = truth & roi.astype(bool)  # scored inside the column's box; the mask is cut to it too
        else:
            volume = load_volume(folder / names[0])
            truth = load_labels(folder / names[1], volume).mask
        canonical, ornt = to_canonical(volume)
        t = np.ascontiguousarray(canonical_view(truth, ornt)).astype(bool)
        canal = enclosed_background(t)
        shell = t & ~(ndimage.distance_transform_edt(t, sampling=canonical.spacing) > 3.0)
        filled = fill_body_holes(shell, canonical.array, canonical.spacing)
        if args.picture and case == "tptbox-lumbar":
            picture(args.picture, canonical.array, t, shell, filled)
        before, after = (evaluate_masks(m, t, canonical.spacing) for m in (shell, filled))
        mask = np.ascontiguousarray(canonical_view(segment(volume, loaded).mask, ornt)).astype(bool)
        if names is None:
            mask &= np.ascontiguousarray(canonical_view(roi, ornt)).astype(bool)
        t0 = time.perf_counter()
        model_filled = fill_body_holes(mask, canonical.array, canonical.spacing)
        seconds = time.perf_counter() - t0
        added = model_filled & ~mask
        d0, d1 = (evaluate_masks(m, t, canonical.spacing)["dice"] for m in (mask, model_filled))
        print(f"{case:18} {before['dice']:.3f} -> {after['dice']:.3f} "
              f"{before['interior_recall']:.3f} -> {after['interior_recall']:.3f} "
              f"{int((filled & canal).sum()):>6}/{int(canal.sum()):<6} | {d0:.4f} -> {d1:.4f} "
              f"{int(added.sum()):>6} {int((added & canal).sum()):>8} {seconds:7.2f}")


if __name__ == "__main__":
    main()
