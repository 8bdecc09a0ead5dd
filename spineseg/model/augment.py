"""Training-time augmentation (MONAI) of 2.5D slice stacks, aimed at robustness to scanners,
crops and resolutions we never saw: geometry (rotation, scaling, shift, elastic, left-right
flip), intensity (scale, shift, noise, blur), lower resolution (sampled, and coarse voxels that
average what they cover), lost slice context, and dark (osteoporotic-looking) marrow inside the
labelled bone."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import (
    Compose,
    Rand2DElasticd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSimulateLowResolutiond,
)
from scipy import ndimage


def build_augmentation(seed: int) -> Compose:
    """Dictionary transform on ``{"image": (C, H, W), "label": (1, H, W)}`` float tensors."""
    keys = ("image", "label")
    transform = Compose([
        RandAffined(keys, prob=0.8, rotate_range=(np.pi / 10,), scale_range=(0.2, 0.2),
                    translate_range=(12, 12), mode=("bilinear", "nearest"), padding_mode="zeros"),
        Rand2DElasticd(keys, prob=0.15, spacing=(40, 40), magnitude_range=(1.0, 3.0),
                       mode=("bilinear", "nearest"), padding_mode="zeros"),
        RandFlipd(keys, prob=0.5, spatial_axis=0),
        RandSimulateLowResolutiond("image", prob=0.15, zoom_range=(0.4, 0.9)),
        RandGaussianSmoothd("image", prob=0.15, sigma_x=(0.3, 1.0), sigma_y=(0.3, 1.0)),
        RandScaleIntensityd("image", prob=0.5, factors=0.12),
        RandShiftIntensityd("image", prob=0.5, offsets=0.05),
        RandGaussianNoised("image", prob=0.3, std=0.02),
    ])
    transform.set_random_state(seed=seed)
    return transform


def drop_context(image: torch.Tensor, rng: np.random.Generator, prob: float) -> torch.Tensor:
    """With probability ``prob`` replace the neighbour channels by the centre slice, as for a
    single-slice input (the paper's PNG slices), so the model does not depend on context."""
    if image.shape[0] > 1 and rng.random() < prob:
        centre = image[image.shape[0] // 2]
        return centre.expand_as(image).clone()
    return image


def coarsen_plane(image: torch.Tensor, zoom: float) -> torch.Tensor:
    """The slices (C, H, W) as a scanner with ``1 / zoom`` times coarser in-plane voxels would
    show them, brought back to the model grid: each coarse voxel is the mean of what it covers
    (partial volume: thin cortex and small processes fade into the soft tissue), then bilinear
    interpolation up, as inference resamples such a scan. Sampling without averaging (MONAI's
    nearest-neighbour low resolution) keeps the bone's contrast and so never shows this."""
    h, w = image.shape[-2:]
    small = (max(1, round(h * zoom)), max(1, round(w * zoom)))
    coarse = F.interpolate(image[None], size=small, mode="area")
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]


def darken_marrow(stack: np.ndarray, spine: np.ndarray, factor: float, window: tuple[float, float],
                  rim: int = 2) -> np.ndarray:
    """Simulated osteoporosis: inside the labelled bone, at least ``rim`` voxels from its edge
    (so the cortex stays), scale positive HU by ``factor`` (e.g. cancellous bone at 250 HU
    becomes 60 HU at 0.25), in place on a normalised ``stack`` (C, H, W) with its slices'
    ``spine`` masks (C, H, W). A network that has seen this keeps a dark vertebral body whole
    instead of segmenting only its shell."""
    low, high = window
    zero = -low / (high - low)  # where 0 HU lands after normalisation
    for channel, mask in zip(stack, spine, strict=True):
        if not mask.any():
            continue
        interior = ndimage.binary_erosion(mask, iterations=rim)
        values = channel[interior]
        dense = values > zero
        values[dense] = zero + (values[dense] - zero) * factor
        channel[interior] = values
    return stack
