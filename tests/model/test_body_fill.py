"""fill_body_holes: a hollow vertebral body is closed, the spinal canal never is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from spineseg.model.postprocess import fill_body_holes

SPACING = (1.0, 1.0, 2.0)


def _vertebra(n_k: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """RAS (axis 1 posterior -> anterior): a body's cortical shell (2 mm) in front of an arch
    around the canal, ``n_k`` slices, every one cut by the scan's ends. Returns the mask, the
    CT (marrow 150 HU, canal 20 HU, cortex 700 HU), the marrow and the canal."""
    shape = (50, 60, n_k)
    hu = np.full(shape, -80.0)  # fat around
    body = np.zeros(shape, dtype=bool)
    body[10:40, 30:55] = True
    marrow = np.zeros(shape, dtype=bool)
    marrow[12:38, 32:53] = True
    arch = np.zeros(shape, dtype=bool)
    arch[15:35, 10:31] = True
    canal = np.zeros(shape, dtype=bool)
    canal[19:31, 14:30] = True
    mask = (body & ~marrow) | (arch & ~canal)
    hu[body | arch] = 700.0
    hu[marrow] = 150.0
    hu[canal] = 20.0
    return mask, hu, marrow, canal


def test_a_hollow_body_cut_by_the_scan_is_filled_and_the_canal_stays_open() -> None:
    for n_k in (1, 3, 12):
        mask, hu, marrow, canal = _vertebra(n_k)
        filled = fill_body_holes(mask, hu, SPACING)
        assert filled[marrow].all(), n_k
        assert not filled[canal].any(), n_k
        assert (filled & ~marrow == mask).all()  # nothing else changes


def test_the_canal_behind_an_endplates_rim_stays_open() -> None:
    # Slices 4-7 cut through the disc: of the body only a 2 mm posterior rim is left, so the
    # canal is enclosed by a wall as thin as a cortex. The column's front in the slices around
    # (the solid bodies above and below) shows it lies behind a whole body.
    mask, hu, marrow, canal = _vertebra(12)
    mask[marrow] = True  # solid bodies
    mask[10:40, 32:55, 4:8] = False
    filled = fill_body_holes(mask, hu, SPACING)
    assert not filled[canal].any()
    assert (filled == mask).all()


def test_fat_and_oversized_holes_stay_open() -> None:
    mask, hu, marrow, _canal = _vertebra(3)
    fatty = hu.copy()
    fatty[marrow] = -60.0
    assert (fill_body_holes(mask, fatty, SPACING) == mask).all()
    assert (fill_body_holes(mask, hu, SPACING, max_area_mm2=100.0) == mask).all()
    assert not fill_body_holes(np.zeros((5, 5, 5), dtype=bool), hu[:5, :5, :5], SPACING).any()


def test_real_shells_are_closed_without_the_canal(shared_cases: Path) -> None:
    """P4's labelled vertebrae (hand-refined) with their voxels more than 3 mm deep removed: the
    fill brings most of the interior back and adds nothing the truth leaves enclosed."""
    from spineseg.imaging.io import load_labels, load_volume
    from spineseg.imaging.resample import canonical_view, to_canonical

    folder = shared_cases / "tptbox-lumbar"
    volume = load_volume(folder / "sub-ct_label-22_ct.nii.gz")
    truth = load_labels(folder / "sub-ct_seg-vert_label-22_msk.nii.gz", volume).mask
    canonical, ornt = to_canonical(volume)
    t = np.ascontiguousarray(canonical_view(truth, ornt)).astype(bool)
    deep = ndimage.distance_transform_edt(t, sampling=canonical.spacing) > 3.0
    plane = np.zeros((3, 3, 3), dtype=bool)
    plane[:, :, 1] = ndimage.generate_binary_structure(2, 1)
    enclosed = ndimage.binary_fill_holes(t, structure=plane) & ~t  # the canal, where the arch closes
    assert enclosed.sum() > 1000
    filled = fill_body_holes(t & ~deep, canonical.array, canonical.spacing)
    assert not (filled & enclosed).any()
    assert (filled & deep).sum() > 0.8 * deep.sum()
    assert (fill_body_holes(t, canonical.array, canonical.spacing) == t).all()
