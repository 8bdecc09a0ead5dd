"""Copies of a study's images made for the browser viewer: on the canonical (RAS) grid, cropped
to the patient's body, CT as int16 and label maps as uint8.

The crop is the box around the largest connected part of the body (tissue denser than
``BODY_HU``), found on a decimated grid, widened by a margin and by any labelled voxel so no
label is ever cut. The air around the patient and a separate table go; the world position of
every kept voxel stays what it was (the affine moves with the box). Axial slice ``k`` of a copy
is slice ``box.start[2] + k`` of the canonical grid, counted from the most inferior.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from spineseg.imaging.resample import canonical_transform
from spineseg.imaging.volume import Volume

BODY_HU = -400.0  # denser than lung's air and the room's: skin, fat, muscle, bone
DECIMATE = 4  # the body box is found on every 4th voxel (in-plane and along the slices)
MARGIN_MM = 5.0


@dataclass(frozen=True)
class CropBox:
    """``start``/``stop`` voxel indices per axis on the canonical grid (stop exclusive), and
    the canonical grid's shape."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    canonical_shape: tuple[int, int, int]

    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop, strict=True))  # type: ignore[return-value]

    def to_json(self) -> dict[str, list[int]]:
        return {"start": list(self.start), "stop": list(self.stop), "canonical_shape": list(self.canonical_shape)}

    @classmethod
    def from_json(cls, data: dict[str, list[int]]) -> CropBox:
        def triple(key: str) -> tuple[int, int, int]:
            a, b, c = (int(v) for v in data[key])
            return a, b, c

        return cls(triple("start"), triple("stop"), triple("canonical_shape"))


def canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``array`` (input axis order) as a view in RAS axis order, and the canonical affine."""
    import nibabel as nib

    ornt, new_affine = canonical_transform(affine, array.shape)
    return nib.orientations.apply_orientation(array, ornt), new_affine


def _box_of(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    if not mask.any():
        return None
    lows = [int(np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))[0]) for axis in range(3)]
    highs = [int(np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))[-1]) for axis in range(3)]
    return np.array(lows), np.array(highs)


def body_box(hu_canonical: np.ndarray, spacing: np.ndarray, labels: list[np.ndarray] | None = None) -> CropBox:
    """The crop box of a canonical CT: its largest body component, ``MARGIN_MM`` around it, and
    every labelled voxel of ``labels`` (canonical grids of the same shape). The whole grid when
    nothing is denser than ``BODY_HU``."""
    shape = np.array(hu_canonical.shape)
    coarse = np.asarray(hu_canonical[::DECIMATE, ::DECIMATE, ::DECIMATE]) > BODY_HU
    parts, count = ndimage.label(coarse)
    lows, highs = np.zeros(3, dtype=int), shape - 1
    if count:
        sizes = np.bincount(parts.ravel())[1:]
        found = _box_of(parts == 1 + int(np.argmax(sizes)))
        if found is not None:
            margin = np.ceil(MARGIN_MM / np.maximum(spacing, 1e-3)).astype(int)
            lows = np.maximum(found[0] * DECIMATE - DECIMATE - margin, 0)
            highs = np.minimum(found[1] * DECIMATE + DECIMATE + margin, shape - 1)
    for label in labels or []:
        found = _box_of(np.asarray(label) > 0)
        if found is not None:
            lows, highs = np.minimum(lows, found[0]), np.maximum(highs, found[1])
    start = tuple(int(v) for v in lows)
    stop = tuple(int(v) + 1 for v in highs)
    return CropBox(start, stop, tuple(int(v) for v in shape))  # type: ignore[arg-type]


def cropped_affine(canonical_affine: np.ndarray, box: CropBox) -> np.ndarray:
    """The affine of the cropped grid: voxel 0 of the copy is voxel ``box.start`` of the
    canonical grid."""
    shift = np.eye(4)
    shift[:3, 3] = box.start
    return canonical_affine @ shift


def viewer_ct(volume: Volume, labels: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, CropBox]:
    """The CT for the viewer: canonical, cropped to the body (and ``labels``, on the input
    grid), int16 HU. Returns ``(array, affine, box)``."""
    hu, affine = canonical(volume.array, volume.affine)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    label_views = [canonical(label, volume.affine)[0] for label in labels or []]
    box = body_box(hu, spacing, label_views)
    cropped = np.clip(np.asarray(hu[box.slices()]), -32768, 32767).astype(np.int16)
    return np.ascontiguousarray(cropped), cropped_affine(affine, box), box


def viewer_labels(label: np.ndarray, affine: np.ndarray, box: CropBox) -> tuple[np.ndarray, np.ndarray]:
    """A label map (input grid) on the viewer CT's grid: canonical, cropped by ``box``, uint8
    (labels above 255 are refused by the caller's label reader long before)."""
    view, canonical_affine = canonical(label, affine)
    if tuple(view.shape) != box.canonical_shape:
        raise ValueError(f"label grid {tuple(view.shape)} is not the CT's canonical grid {box.canonical_shape}")
    return np.ascontiguousarray(np.asarray(view[box.slices()]).astype(np.uint8)), cropped_affine(canonical_affine, box)


def outline(labels: np.ndarray) -> np.ndarray:
    """The one-voxel shell of each label (a voxel whose 6-neighbourhood leaves its label):
    drawn as a contour in any of the three planes. Same shape and dtype as ``labels``."""
    out = np.zeros_like(labels)
    for value in np.unique(labels):
        if value == 0:
            continue
        inside = labels == value
        shell = inside & ~ndimage.binary_erosion(inside, border_value=0)
        out[shell] = value
    return out


def preview(array: np.ndarray, affine: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Every ``step``-th voxel across (the canonical copy's first two axes, right-left and
    anterior-posterior) and every axial slice (no averaging: each kept voxel holds exactly the
    full copy's value at its centre), with the matching affine; ``step`` 1 is the array itself.
    Keeping every slice lets the viewer's wheel and arrows move one source slice at a time in
    the quick view too (issue 28 item 6: skipping every second slice could hide a finding)."""
    if step <= 1:
        return array, affine
    scale = np.diag([step, step, 1, 1]).astype(float)
    return np.ascontiguousarray(array[::step, ::step, :]), affine @ scale
