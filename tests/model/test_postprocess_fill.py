"""The hollow-body fill and the growth to the bone's edge, on small synthetic vertebrae."""

from __future__ import annotations

import numpy as np

from spineseg.model.postprocess import fill_enclosed, grow_to_bone_edge


def _vertebra(shape=(40, 40, 30)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A body (a closed box of cortex around dark marrow) in front of a ring (the arch) around
    a canal that runs through every slice. Returns the shell mask, the marrow and the canal."""
    mask = np.zeros(shape, dtype=bool)
    body = np.zeros(shape, dtype=bool)
    body[8:20, 12:28, 5:25] = True
    marrow = np.zeros(shape, dtype=bool)
    marrow[10:18, 14:26, 7:23] = True
    mask |= body & ~marrow
    arch = np.zeros(shape, dtype=bool)
    arch[20:32, 14:26, 5:25] = True
    canal = np.zeros(shape, dtype=bool)
    canal[22:30, 16:24, :] = True  # the canal leaves at the top and bottom of the vertebra
    mask |= arch & ~canal
    return mask, marrow, canal


def test_the_fill_closes_a_hollow_body_and_never_the_canal() -> None:
    mask, marrow, canal = _vertebra()
    filled = fill_enclosed(mask)
    assert filled[marrow].all()
    assert not filled[canal].any()
    assert (filled & ~marrow == mask).all()  # nothing else changes


def test_the_fill_keeps_a_cavity_cut_by_the_scan_open() -> None:
    mask, marrow, _canal = _vertebra()
    cut = mask[:, :, 10:]  # the field of view starts inside the body: its marrow is open below
    filled = fill_enclosed(cut)
    assert not filled[marrow[:, :, 10:]].any()
    assert not fill_enclosed(np.zeros((4, 4, 4), dtype=bool)).any()


def test_growth_takes_the_bone_rim_and_no_soft_tissue() -> None:
    shape = (30, 30, 6)
    hu = np.full(shape, 40.0)
    hu[5:25, 5:25, :] = 700.0  # bone: a 20 x 20 square
    hu[5:25, 25:27, :] = 60.0  # soft tissue beside it
    mask = np.zeros(shape, dtype=bool)
    mask[7:23, 7:23, :] = True  # the prediction stops two voxels inside the bone
    grown = grow_to_bone_edge(mask, hu, (0.7, 0.7, 2.0), reach_mm=1.5)  # two rings at 0.7 mm
    assert (grown == (hu >= 200)).all()
    one_ring = grow_to_bone_edge(mask, hu, (0.7, 0.7, 2.0), reach_mm=1.0)
    assert (one_ring == np.pad(np.ones((18, 18, 6), dtype=bool), ((6, 6), (6, 6), (0, 0)))).all()
    assert (grow_to_bone_edge(mask, hu, (1.5, 1.5, 2.0), reach_mm=1.4) == mask).all()  # coarse grid: as is
