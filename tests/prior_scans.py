"""Follow-up scans made from one real scan: another field of view (cropped, re-sampled half a
voxel off, another table position) and one vertebral body compressed on purpose. Used by the
prior-study tests and by ``bench/prior_repeatability.py``."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import ndimage as ndi

from spineseg.imaging.volume import Provenance, Volume
from spineseg.metrics.vertebra_measures import vertebral_body


def _axis_of(affine: np.ndarray, world: int) -> tuple[int, int]:
    """(array axis, +1/-1): the axis that runs most along world axis ``world`` (0 R, 1 A, 2 S)
    and whether its index grows towards it."""
    column = affine[world, :3]
    axis = int(np.argmax(np.abs(column)))
    return axis, 1 if column[axis] > 0 else -1


def other_field_of_view(volume: Volume, *, crop_mm: tuple[tuple[float, float], ...] = ((0, 0), (0, 0), (0, 0)),
                        offset_voxels: tuple[float, float, float] = (0.0, 0.0, 0.0),
                        table_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Volume:
    """The scan seen another way: ``crop_mm`` (before, after) taken off each array axis,
    re-sampled (linear) on a grid moved by ``offset_voxels`` of a voxel, and the patient
    ``table_mm`` elsewhere in the scanner (the world coordinates move, the anatomy does not)."""
    spacing = np.linalg.norm(volume.affine[:3, :3], axis=0)
    box = tuple(slice(round(float(lo / s)), n - round(float(hi / s)))
                for (lo, hi), s, n in zip(crop_mm, spacing, volume.shape, strict=True))
    array = np.asarray(volume.array[box], dtype=np.float32)
    corner = np.eye(4)
    corner[:3, 3] = [b.start for b in box]
    affine = volume.affine @ corner
    if any(offset_voxels):
        array = ndi.shift(array, [-o for o in offset_voxels], order=1, mode="nearest")
        moved = np.eye(4)
        moved[:3, 3] = offset_voxels
        affine = affine @ moved
    affine = affine.copy()
    affine[:3, 3] += np.asarray(table_mm, dtype=np.float64)
    return Volume(array, affine, Provenance("follow-up (another field of view)", "derived"))


def compress_body(volume: Volume, labels: np.ndarray, label: int, keep: float) -> Volume:
    """``volume`` with the body of vertebra ``label`` (in ``labels``, on its grid) crushed to
    ``keep`` of its height towards its lower endplate, like a compression fracture: the body's
    voxels are re-sampled (linear) along the head-foot axis, the arch is left as it was, and
    the body voxels it no longer fills take the median HU of the soft tissue of the disc
    right above it."""
    axis, towards_head = _axis_of(volume.affine, 2)
    region = labels == label
    if not region.any():
        raise ValueError(f"label {label} is not in the label map")
    box = ndi.find_objects(region.astype(np.int8))[0]
    box = tuple(slice(max(b.start - 2, 0), min(b.stop + 2, n)) for b, n in zip(box, region.shape, strict=True))
    spacing = np.linalg.norm(volume.affine[:3, :3], axis=0)
    body = np.zeros(region.shape, dtype=bool)
    body[box] = ndi.binary_dilation(vertebral_body(region[box], spacing))  # its cortex's partial volume too
    hu = np.moveaxis(np.asarray(volume.array, dtype=np.float32).copy(), axis, -1)
    body, lab = np.moveaxis(body, axis, -1), np.moveaxis(labels, axis, -1)
    if towards_head < 0:  # index 0 at the feet from here on
        hu, body, lab = hu[..., ::-1], body[..., ::-1], lab[..., ::-1]
    present = np.flatnonzero(body.any(axis=(0, 1)))
    bottom, top = int(present[0]), int(present[-1])
    above = slice(top + 1, min(top + 3, hu.shape[-1]))
    disc = hu[..., above][body[..., top:top + 1].repeat(above.stop - above.start, axis=-1) & (lab[..., above] == 0)]
    fill = float(np.median(disc)) if disc.size else 40.0
    out = hu.copy()
    z = np.arange(bottom, top + 1)
    source = bottom + (z - bottom) / keep  # new slice z shows old slice source
    kept = source <= top
    columns = np.argwhere(body.any(axis=-1))
    for i, j in columns:
        column_body = body[i, j, bottom:top + 1]
        old = hu[i, j, bottom:top + 1]
        new_body = np.interp(source, z, column_body.astype(np.float32)) >= 0.5
        new_values = np.interp(source, z, old)
        new_body &= kept
        write = new_body
        out[i, j, bottom:top + 1][write] = new_values[write]
        vacated = column_body & ~new_body
        out[i, j, bottom:top + 1][vacated] = fill
    if towards_head < 0:
        out = out[..., ::-1]
    array = np.moveaxis(out, -1, axis)
    return replace(volume, array=array, provenance=Provenance("compressed on purpose", "derived"))
