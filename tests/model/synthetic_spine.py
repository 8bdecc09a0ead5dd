"""A synthetic spine on a 2 mm grid (``lr_mm`` left-right) (RAS axis order): vertebral bodies (cylinders) with a
posterior arch, discs between them, "ribs" (bone outside the mask touching the upper vertebrae
and running out to the sides) and a "sacrum" gripped by two "ilia".

Every vertebra is ``BODY_MM`` tall with a ``DISC_MM`` disc below it; the truth label map holds
VerSe ids. HU: trabecular ``TRABECULAR_HU`` inside a ``CORTEX_HU`` shell, discs 80, soft tissue 40.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spineseg.model.level_ids import VERSE_BY_NAME

SPACING = 2.0
# Left-right voxel size where a test needs the ribs read: level_anchors.RIB_MAX_LR_MM (1.5 mm) or
# finer (at 2 mm they are not assessable and the spine is named from the sacrum alone, if at all).
RIB_LR_MM = 1.5
BODY_MM = 26.0
DISC_MM = 8.0
RADIUS_MM = 16.0
TRABECULAR_HU = 180.0
CORTEX_HU = 700.0


@dataclass
class SyntheticSpine:
    ct: np.ndarray
    mask: np.ndarray
    truth: np.ndarray
    affine: np.ndarray


def build_spine(names: list[str], *, ribs: set[str] = frozenset(), sacrum: bool = False,
                cut_top_mm: float = 0.0, width_mm: float = 220.0,
                lr_mm: float = SPACING) -> SyntheticSpine:
    """``names`` top to bottom (e.g. ["T11", "T12", "L1"]); ``ribs``: which carry ribs;
    ``sacrum``: add a sacrum and ilia below; ``cut_top_mm``: remove this much of the top;
    ``width_mm``: the field of view left-right, centred on the column (a narrow one cuts the ribs);
    ``lr_mm``: the voxel size left-right."""
    spacing = (lr_mm, SPACING, SPACING)
    nx, ny = round(width_mm / spacing[0]), round(140.0 / spacing[1])
    height = len(names) * (BODY_MM + DISC_MM) + (70.0 if sacrum else 10.0) + 10.0
    nz = int(np.ceil(height / spacing[2]))
    ct = np.full((nx, ny, nz), 40.0, dtype=np.float32)
    truth = np.zeros((nx, ny, nz), dtype=np.int16)
    x, y, z = np.meshgrid(*(np.arange(n) * s for n, s in zip((nx, ny, nz), spacing, strict=True)),
                          indexing="ij")
    cx, cy = nx * spacing[0] / 2, 80.0
    top = nz * spacing[2] - 10.0
    r_xy = np.hypot(x - cx, y - cy)
    for name in names:
        z_hi, z_lo = top, top - BODY_MM
        slab = (z <= z_hi) & (z > z_lo)
        body = slab & (r_xy <= RADIUS_MM)
        arch = slab & (np.abs(x - cx) <= 12.0) & (y < cy - RADIUS_MM + 2) & (y > cy - RADIUS_MM - 26) \
            & ~((np.abs(x - cx) < 7.0) & (y > cy - RADIUS_MM - 16))  # a canal in the arch
        vertebra = body | arch
        truth[vertebra] = VERSE_BY_NAME[name]
        ct[vertebra] = CORTEX_HU
        inner = slab & (r_xy <= RADIUS_MM - 3) & (z <= z_hi - 3) & (z > z_lo + 3)
        ct[inner] = TRABECULAR_HU
        disc = (z <= z_lo) & (z > z_lo - DISC_MM) & (r_xy <= RADIUS_MM)
        ct[disc] = 80.0
        if name in ribs:
            mid = (z_hi + z_lo) / 2
            for sign in (1, -1):
                rib = (np.abs(z - mid) <= 4) & (np.abs(y - (cy - 8)) <= 4) \
                    & (sign * (x - cx) > RADIUS_MM + 1) & (sign * (x - cx) < RADIUS_MM + 70)
                ct[rib & (truth == 0)] = 450.0
        top = z_lo - DISC_MM
    if sacrum:
        z_hi, z_lo = top, top - 60.0
        sac = (z <= z_hi) & (z > z_lo) & (np.abs(x - cx) <= 50.0) & (np.abs(y - cy) <= 18.0)
        truth[sac] = VERSE_BY_NAME["sacrum"]
        ct[sac] = 300.0
        for sign in (1, -1):
            ilium = (z <= z_hi - 5) & (z > z_lo) & (sign * (x - cx) > 52.0) & (sign * (x - cx) < 100.0) \
                & (np.abs(y - cy) <= 20.0)
            ct[ilium] = 400.0
    if cut_top_mm > 0:
        keep = int(nz - cut_top_mm / spacing[2] - 10.0 / spacing[2])
        ct, truth = ct[:, :, :keep], truth[:, :, :keep]
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-100.0, -80.0, -200.0]
    return SyntheticSpine(ct, (truth > 0).astype(np.uint8), truth, affine)
