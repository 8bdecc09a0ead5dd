"""The paper's result image: a CT slice in a bone window with the spine mask drawn over it.

Slices are axial on the canonical (RAS) grid and shown as radiologists view them: patient's
right on the image's left, anterior at the top.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from spineseg.imaging.resample import to_canonical
from spineseg.imaging.volume import Volume

DISPLAY_WINDOW = (-450.0, 1050.0)  # bone-ish window, HU
SPINE_RGB = (255, 64, 32)
TRUTH_RGB = (32, 160, 255)


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


def write_overlays(volume: Volume, mask: np.ndarray, out_dir: Path, *, slices: list[int] | None = None,
                   truth: np.ndarray | None = None, fmt: str = "png") -> list[Path]:
    """Write overlay images of axial slices (indices on the canonical grid, inferior -> superior)
    to ``out_dir`` as ``slice_<k>.<fmt>``; returns the paths."""
    canonical, ornt = to_canonical(volume)
    import nibabel as nib

    def canon(a: np.ndarray) -> np.ndarray:
        return nib.orientations.apply_orientation(a, ornt)

    mask_c = canon(mask)
    truth_c = canon(truth) if truth is not None else None
    chosen = default_overlay_slices(mask_c) if slices is None else slices
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in chosen:
        if not 0 <= k < canonical.shape[2]:
            continue
        image = render_overlay(display_orientation(canonical.array[:, :, k]), display_orientation(mask_c[:, :, k]),
                               truth=None if truth_c is None else display_orientation(truth_c[:, :, k]))
        path = out_dir / f"slice_{k:04d}.{fmt}"
        image.save(path, quality=92) if fmt in ("jpg", "jpeg") else image.save(path)
        paths.append(path)
    return paths
