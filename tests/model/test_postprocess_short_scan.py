"""The component size rule on scans a few slices long: a vertebra's arch is not a speck."""

from __future__ import annotations

import numpy as np
import pytest

from spineseg.model.postprocess import FULL_EXTENT_MM, extent_scaled_min_ml, plausible_spine

SPACING = (1.5, 1.5, 2.5)  # the model grid


def _body_and_arch(n_slices: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A body (30 x 24 mm) and, apart from it in the plane, an arch (30 x 9 mm) on every slice,
    in a body of soft tissue; returns the foreground, the body mask (denser than air) and the arch."""
    shape = (120, 120, n_slices)
    fg = np.zeros(shape, dtype=bool)
    fg[40:60, 70:86] = True  # the vertebral body, 600 mm² a slice
    arch = np.zeros(shape, dtype=bool)
    arch[40:60, 58:64] = True  # the arch behind the canal, 270 mm² a slice: 0.68 mL per 2.5 mm slice
    fg |= arch
    speck = np.zeros(shape, dtype=bool)
    speck[48:50, 40:42] = True  # 9 mm² a slice, near the column: a speck
    body = np.zeros(shape, dtype=bool)
    body[10:110, 10:110] = True
    return fg | speck, body, arch


def test_one_slice_keeps_the_arch_and_drops_the_speck() -> None:
    fg, body, arch = _body_and_arch(1)
    kept = plausible_spine(fg, body, SPACING, min_ml=1.0)
    assert kept[arch].all()  # 0.68 mL, under the card's 1 mL: kept on a scan 2.5 mm long
    assert not kept[48:50, 40:42].any()  # the speck (0.02 mL) is still dropped


def test_a_long_scan_applies_the_card_minimum() -> None:
    assert extent_scaled_min_ml(1.0, 200, 2.5) == 1.0
    assert extent_scaled_min_ml(1.0, 1, 2.5) == pytest.approx(2.5 / FULL_EXTENT_MM)
    fg, body, _arch = _body_and_arch(40)
    lone = np.zeros_like(fg)
    lone[20:24, 70:74, 10:12] = True  # 0.09 mL apart from the column's components
    kept = plausible_spine(fg | lone, body, SPACING, min_ml=1.0)
    assert not kept[lone].any()
    assert kept[fg].sum() >= fg[40:60, 58:86].sum() - 1
