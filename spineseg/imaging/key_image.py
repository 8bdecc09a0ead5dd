"""The sagittal key image of a report: one mid-sagittal CT plane through the column with each
vertebra outlined in its level colour and named beside it (pure: arrays in, a Pillow image out).

Arrays are on one grid: ``hu`` (I, J, K) in HU, ``levels`` (I, J, K) labels (VerSe ids, unnamed
101..), ``affine`` voxel -> RAS+ mm. The plane is taken on the RAS-reoriented view through the
median left-right position of the labelled voxels, and scaled to square millimetres, so the
picture keeps the body's proportions whatever the voxel size.
"""

from __future__ import annotations

from collections.abc import Callable

import nibabel as nib
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage as ndi

BONE_WINDOW = (-400.0, 1100.0)  # HU shown from black to white: soft tissue grey, bone bright
MAX_SIDE_PX = 900


def _canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``array`` in RAS axis order and direction, and its voxel sizes (mm)."""
    ornt = nib.orientations.io_orientation(affine)
    canonical = nib.orientations.apply_orientation(array, ornt)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    return canonical, spacing[ornt[:, 0].astype(int)]


def sagittal_plane(hu: np.ndarray, levels: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple]:
    """The (A-P, I-S) planes of ``hu`` and ``levels`` through the column's median left-right
    index, and the (A-P, I-S) voxel sizes."""
    hu_ras, spacing = _canonical(np.asarray(hu), affine)
    levels_ras, _ = _canonical(np.asarray(levels), affine)
    lr = np.nonzero(levels_ras > 0)[0]
    x = int(np.median(lr)) if lr.size else hu_ras.shape[0] // 2
    return hu_ras[x], levels_ras[x], (float(spacing[1]), float(spacing[2]))


def _outline(region: np.ndarray) -> np.ndarray:
    return region & ~ndi.binary_erosion(region, iterations=2)


def sagittal_key_image(hu: np.ndarray, levels: np.ndarray, affine: np.ndarray,
                       colour: Callable[[int], tuple[int, int, int]], name: Callable[[int], str]) -> Image.Image:
    """RGB image: anterior on the left, superior at the top; each label of ``levels`` tinted and
    outlined in ``colour(label)``, with ``name(label)`` at its centre's height on the right."""
    plane, labels, (ap_mm, is_mm) = sagittal_plane(hu, levels, affine)
    # display: rows superior -> inferior, columns anterior -> posterior (RAS: A at high j)
    plane, labels = plane[::-1, ::-1].T, labels[::-1, ::-1].T
    low, high = BONE_WINDOW
    grey = np.clip((plane.astype(np.float32) - low) / (high - low), 0, 1) * 255
    rgb = np.repeat(grey[..., None], 3, axis=2)
    present = [int(v) for v in np.unique(labels) if v > 0]
    for label in present:
        region = labels == label
        tint = np.asarray(colour(label), dtype=np.float32)
        rgb[region] = 0.75 * rgb[region] + 0.25 * tint
        rgb[_outline(region)] = tint
    image = Image.fromarray(rgb.astype(np.uint8), mode="RGB")
    height_mm, width_mm = plane.shape[0] * is_mm, plane.shape[1] * ap_mm
    scale = MAX_SIDE_PX / max(height_mm, width_mm)
    size = (max(1, round(width_mm * scale)), max(1, round(height_mm * scale)))
    image = image.resize(size, Image.Resampling.BILINEAR)
    margin = 150
    framed = Image.new("RGB", (size[0] + margin, size[1]), (0, 0, 0))
    framed.paste(image, (0, 0))
    draw = ImageDraw.Draw(framed)
    font = ImageFont.load_default(size=30)  # about 1/30 of the picture: legible at 60 mm wide
    for label in present:
        rows = np.nonzero(labels == label)[0]
        y = float(rows.mean() + 0.5) * size[1] / labels.shape[0]
        draw.text((size[0] + 8, y), name(label), fill=colour(label), font=font, anchor="lm")
    draw.text((6, 6), "A", fill=(255, 255, 255), font=font)
    draw.text((size[0] - 26, 6), "P", fill=(255, 255, 255), font=font)
    return framed
