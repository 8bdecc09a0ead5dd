"""The paper's result image: a CT slice in a bone window with the spine mask drawn over it.

Slices are axial on the canonical (RAS) grid and shown as radiologists view them: patient's
right on the image's left, anterior at the top. The image is enlarged (nearest neighbour, so no
voxel is blurred) to at least ``MIN_SIDE_PX`` and carries its 1-based slice number, the
orientation letters and a legend; the truth is drawn under the prediction, as in the viewer.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from spineseg.imaging.resample import to_canonical
from spineseg.imaging.volume import Volume

DISPLAY_WINDOW = (-450.0, 1050.0)  # bone-ish window, HU
SPINE_RGB = (255, 64, 32)
TRUTH_RGB = (32, 160, 255)
MIN_SIDE_PX = 512


def axial_slice_count(volume: Volume) -> int:
    """Axial slices on the canonical grid (along inferior-superior), whatever the storage order."""
    return int(to_canonical_shape(volume)[2])


def to_canonical_shape(volume: Volume) -> tuple[int, int, int]:
    ornt = nib.orientations.io_orientation(volume.affine)
    shape = [0, 0, 0]
    for axis, (target, _flip) in enumerate(ornt):
        shape[int(target)] = volume.shape[axis]
    return shape[0], shape[1], shape[2]


def annotate(image: Image.Image, *, slice_number: int, slice_count: int, with_truth: bool) -> Image.Image:
    """``image`` enlarged to at least ``MIN_SIDE_PX`` with the slice number (1 = most inferior),
    orientation letters (R/L, A/P) and a legend of the drawn colours."""
    factor = max(1, -(-MIN_SIDE_PX // max(1, min(image.size))))
    big = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(big)
    size = max(14, big.height // 32)
    font = ImageFont.load_default(size=size)

    def text(xy: tuple[float, float], words: str, anchor: str) -> None:
        draw.text(xy, words, fill=(255, 255, 255), font=font, anchor=anchor, stroke_width=2, stroke_fill=(0, 0, 0))

    w, h, pad = big.width, big.height, size // 2
    text((w / 2, pad), "A", "mt")
    text((w / 2, h - pad), "P", "mb")
    text((pad, h / 2), "R", "lm")
    text((w - pad, h / 2), "L", "rm")
    text((pad, pad), f"axial {slice_number} of {slice_count}", "lt")
    entries = [("prediction", SPINE_RGB)] + ([("truth", TRUTH_RGB)] if with_truth else [])
    y = h - pad
    for name, colour in reversed(entries):
        draw.rectangle((pad, y - size, pad + size, y), fill=colour, outline=(0, 0, 0))
        text((pad + size + pad // 2, y - size / 2), name, "lm")
        y -= size + pad // 2
    return big


def display_orientation(plane: np.ndarray) -> np.ndarray:
    """(I, J) RAS plane -> (rows, cols) image: rows run anterior -> posterior, columns patient
    right -> left."""
    return plane[::-1, ::-1].T


def render_overlay(hu: np.ndarray, mask: np.ndarray | None = None, *, truth: np.ndarray | None = None,
                   window: tuple[float, float] = DISPLAY_WINDOW, opacity: float = 0.45) -> Image.Image:
    """RGB image of one plane already in display orientation; ``mask`` in red-orange,
    ``truth`` (optional) in blue, both blended with ``opacity``."""
    low, high = window
    grey = np.clip((hu.astype(np.float32) - low) / (high - low), 0, 1) * 255
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for layer, colour in ((truth, TRUTH_RGB), (mask, SPINE_RGB)):
        if layer is not None:
            on = layer.astype(bool)
            rgb[on] = (1 - opacity) * rgb[on] + opacity * np.array(colour, dtype=np.float32)
    return Image.fromarray(rgb.astype(np.uint8), mode="RGB")


def default_overlay_slices(mask_canonical: np.ndarray, count: int = 5) -> list[int]:
    """``count`` axial slices spread over the spine's extent (or over the volume if empty)."""
    nz = mask_canonical.shape[2]
    has = np.flatnonzero(mask_canonical.any(axis=(0, 1)))
    low, high = (int(has[0]), int(has[-1])) if has.size else (0, nz - 1)
    return sorted({round(v) for v in np.linspace(low, high, num=min(count, high - low + 1))})


def spine_slices(mask_canonical: np.ndarray) -> list[int]:
    """Every axial slice (canonical grid) that holds spine."""
    return np.flatnonzero(mask_canonical.any(axis=(0, 1))).tolist()


def write_overlays(volume: Volume, mask: np.ndarray, out_dir: Path, *, slices: list[int] | str | None = None,
                   truth: np.ndarray | None = None, fmt: str = "png") -> list[Path]:
    """Write overlay images of axial slices (indices on the canonical grid, inferior -> superior)
    to ``out_dir`` as ``slice_<k>.<fmt>`` (``k`` 0-based; the image says ``k + 1``); returns the
    paths. ``slices``: a list of indices, ``"spine"`` (every slice with spine), ``"all"``, or
    ``None`` (five spread over the spine)."""
    canonical, ornt = to_canonical(volume)

    def canon(a: np.ndarray) -> np.ndarray:
        return nib.orientations.apply_orientation(a, ornt)

    mask_c = canon(mask)
    truth_c = canon(truth) if truth is not None else None
    count = canonical.shape[2]
    if slices is None:
        chosen = default_overlay_slices(mask_c)
    elif slices == "spine":
        chosen = spine_slices(mask_c)
    elif slices == "all":
        chosen = list(range(count))
    else:
        chosen = list(slices)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in chosen:
        if not 0 <= k < canonical.shape[2]:
            continue
        image = render_overlay(display_orientation(canonical.array[:, :, k]), display_orientation(mask_c[:, :, k]),
                               truth=None if truth_c is None else display_orientation(truth_c[:, :, k]))
        image = annotate(image, slice_number=k + 1, slice_count=count, with_truth=truth_c is not None)
        path = out_dir / f"slice_{k:04d}.{fmt}"
        image.save(path, quality=92) if fmt in ("jpg", "jpeg") else image.save(path)
        paths.append(path)
    return paths
