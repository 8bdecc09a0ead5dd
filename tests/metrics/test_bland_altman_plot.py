"""The Bland-Altman PNG is written, is a real image, and shows its lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spineseg.errors import InputError
from spineseg.metrics import bland_altman, plot_bland_altman

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LIMIT_RED = np.array([214, 39, 40])  # matplotlib "tab:red", the colour of the limit lines


def _has_colour(image: np.ndarray, colour: np.ndarray) -> int:
    return int(np.count_nonzero(np.abs(image[..., :3].astype(int) - colour).sum(axis=-1) < 30))


def test_png_is_written_and_shows_the_limit_lines(tmp_path: Path) -> None:
    stats = bland_altman([12.0, 24.0, 36.0, 30.0], [10.0, 20.0, 30.0, 31.0])
    path = plot_bland_altman(stats, tmp_path / "ba.png", title="areas per slice", units="mm²")
    assert path == tmp_path / "ba.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.size == (840, 600)  # 7 x 5 inches at 120 dpi
        pixels = np.asarray(image.convert("RGB"))
    # two dashed red limit lines across the plot: many red pixels
    assert _has_colour(pixels, LIMIT_RED) > 200


def test_different_statistics_give_different_pictures(tmp_path: Path) -> None:
    first = plot_bland_altman(bland_altman([1.0, 2.0, 3.0], [1.5, 2.0, 2.0]), tmp_path / "a.png", units="mL")
    second = plot_bland_altman(bland_altman([5.0, 9.0, 3.0], [1.0, 2.0, 2.0]), tmp_path / "b.png", units="mL")
    with Image.open(first) as a, Image.open(second) as b:
        assert not np.array_equal(np.asarray(a), np.asarray(b))


def test_zero_spread_still_plots(tmp_path: Path) -> None:
    stats = bland_altman([1.0, 2.0], [1.0, 2.0])
    path = plot_bland_altman(stats, tmp_path / "flat.png")
    with Image.open(path) as image:
        image.verify()


def test_missing_folder_is_an_input_error(tmp_path: Path) -> None:
    stats = bland_altman([1.0, 2.0], [1.5, 2.5])
    with pytest.raises(InputError, match="does not exist"):
        plot_bland_altman(stats, tmp_path / "no" / "such" / "ba.png")
