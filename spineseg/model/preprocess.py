"""From a ``Volume`` to what the network sees, and back.

canonical (RAS) orientation -> resample to the card's spacing -> clip to the HU window and map
to [0, 1] -> axial slices with ``context`` neighbours on each side stacked as channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from spineseg.imaging.resample import (
    from_canonical,
    resample_array,
    resample_to_spacing,
    to_canonical,
)
from spineseg.imaging.volume import Volume


def normalise_hu(array: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Clip to ``window`` (HU) and map linearly to [0, 1] (float32)."""
    low, high = window
    out = np.clip(array.astype(np.float32, copy=True), low, high)
    out -= low
    out /= high - low
    return out


@dataclass(frozen=True)
class PreparedVolume:
    """A volume on the model's grid.

    image: float32 (I', J', K') in [0, 1], RAS axis order at the model spacing.
    canonical_shape: shape of the input after reorientation (before resampling).
    ornt: the orientation that took the input to RAS (to undo it).
    """

    image: np.ndarray
    canonical_shape: tuple[int, int, int]
    ornt: np.ndarray


def prepare_volume(volume: Volume, spacing: tuple[float, float, float], window: tuple[float, float]) -> PreparedVolume:
    canonical, ornt = to_canonical(volume)
    resampled = resample_to_spacing(canonical, spacing)
    return PreparedVolume(normalise_hu(resampled.array, window), canonical.shape, ornt)


def back_to_input_grid(model_grid: np.ndarray, prepared: PreparedVolume) -> np.ndarray:
    """Resample a float array on the model grid back onto the input volume's grid."""
    on_canonical = resample_array(model_grid, prepared.canonical_shape, antialias=False)
    return from_canonical(on_canonical, prepared.ornt)


def slice_stack(image: np.ndarray, indices: np.ndarray, context: int) -> torch.Tensor:
    """Axial slices ``indices`` of ``image`` (I, J, K), each with ``context`` neighbours on both
    sides (edges replicate), as a tensor (B, 2*context+1, I, J)."""
    offsets = np.arange(-context, context + 1)
    k = np.clip(indices[:, None] + offsets[None, :], 0, image.shape[2] - 1)  # (B, C)
    stack = image[:, :, k]  # (I, J, B, C)
    return torch.from_numpy(np.ascontiguousarray(stack.transpose(2, 3, 0, 1)))


def pad_to_multiple(batch: torch.Tensor, multiple: int, margin: int = 0) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad the last two dims with ``margin`` voxels of air (0) on every side, then up to a
    multiple of ``multiple``; returns the padded batch and the original (H, W). The image sits
    at ``[margin:margin + H, margin:margin + W]``.

    The margin matters for tight crops: a U-Net whose convolutions meet bone right at the image
    edge misreads it (on tptbox-lumbar, a 110 mm crop, Dice rose from 0.33 to 0.89 with 20
    voxels of air around it).
    """
    h, w = batch.shape[-2:]
    ph, pw = (-(h + 2 * margin)) % multiple, (-(w + 2 * margin)) % multiple
    if margin or ph or pw:
        batch = F.pad(batch, (margin, margin + pw, margin, margin + ph))
    return batch, (h, w)
