"""Dropping what lies too far to the side of the spinal column (ribs joined to the vertebrae)."""

from __future__ import annotations

import numpy as np

from spineseg.model.postprocess import MAX_LATERAL_MM, column_x_mm, drop_lateral, plausible_spine

SPACING = (1.5, 1.5, 2.5)


def _scan(column_offset_mm: float = 0.0) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """A 300 x 240 mm body on a RAS grid, a vertebral column ``column_offset_mm`` to the left of
    its middle (scoliosis), transverse processes reaching 48 mm to both sides, and ribs on one
    side joined to the column and running out 150 mm."""
    shape = (200, 160, 24)
    x, y = np.meshgrid(np.arange(shape[0]) * SPACING[0], np.arange(shape[1]) * SPACING[1], indexing="ij")
    centre_x, centre_y = 150.0, 120.0
    body = np.repeat((((x - centre_x) / 150) ** 2 + ((y - centre_y) / 120) ** 2 <= 1)[:, :, None], shape[2], axis=2)
    cx = centre_x + column_offset_mm
    parts = {
        "column": np.hypot(x - cx, y - centre_y) <= 18,
        "processes": (np.abs(x - cx) <= 48) & (np.abs(y - centre_y - 25) <= 4),
        "rib": (x - cx > 0) & (x - cx <= 150) & (np.abs(y - centre_y - 20) <= 5),  # joined to the column
    }
    rib = parts["rib"]
    parts["near rib"], parts["far rib"] = rib & (x - cx <= MAX_LATERAL_MM - 6), rib & (x - cx > MAX_LATERAL_MM + 6)
    parts = {name: np.repeat(part[:, :, None], shape[2], axis=2) for name, part in parts.items()}
    mask = np.zeros(shape, dtype=bool)
    for part in parts.values():
        mask |= part
    return mask, body, parts


def test_ribs_are_cut_beyond_the_limit_and_the_vertebrae_kept() -> None:
    mask, body, parts = _scan()
    kept = drop_lateral(mask, body, SPACING)
    for name in ("column", "processes", "near rib"):
        assert kept[parts[name]].all(), name
    assert not kept[parts["far rib"]].any()


def test_the_column_is_found_off_the_body_s_middle_and_not_pulled_by_ribs() -> None:
    mask, body, parts = _scan(column_offset_mm=40.0)
    column = column_x_mm(mask, body, SPACING)
    np.testing.assert_allclose(column, 190.0, atol=5.0)  # a mean would follow the 150 mm rib by ~30 mm
    kept = plausible_spine(mask, body, SPACING, min_ml=1.0)
    assert kept[parts["column"]].all() and kept[parts["processes"]].all()
    assert not kept[parts["far rib"]].any()
    assert (plausible_spine(mask, body, SPACING, min_ml=1.0, max_lateral_mm=None) == mask).all()


def test_an_empty_mask_stays_empty() -> None:
    mask, body, _ = _scan()
    empty = np.zeros_like(mask)
    assert column_x_mm(empty, body, SPACING) is None
    assert not drop_lateral(empty, body, SPACING).any()
