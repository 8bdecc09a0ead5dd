"""The paper's result image: readable size, slices counted along inferior-superior whatever the
storage order (a P-I-R file included), every slice with spine or every slice on request."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from spineseg.imaging.overlay import MIN_SIDE_PX, axial_slice_count, write_overlays
from spineseg.imaging.volume import Provenance, Volume


def pir_volume() -> tuple[Volume, np.ndarray]:
    """73 x 47 x 60 stored P-I-R: axis 0 posterior (73), axis 1 inferior (47 axial slices), axis 2 right."""
    hu = np.full((73, 47, 60), -1000.0, dtype=np.float32)
    hu[10:60, :, 10:50] = 40
    mask = np.zeros(hu.shape, dtype=np.uint8)
    mask[20:30, 5:40, 25:35] = 1  # spine on 35 of the 47 axial slices
    hu[mask > 0] = 700
    affine = np.array([[0, 0, -1.0, 30], [-1.0, 0, 0, 40], [0, -2.5, 0, 100], [0, 0, 0, 1]])
    return Volume(hu, affine, Provenance("pir", "numpy")), mask


def test_pir_slices_follow_the_patient_axis(tmp_path: Path) -> None:
    volume, mask = pir_volume()
    assert axial_slice_count(volume) == 47
    spine = write_overlays(volume, mask, tmp_path / "spine", slices="spine")
    assert len(spine) == 35
    every = write_overlays(volume, mask, tmp_path / "all", slices="all")
    assert len(every) == 47 and every[-1].name == "slice_0046.png"  # the last slice answers too


def test_image_is_enlarged_with_truth_under_prediction(tmp_path: Path) -> None:
    volume, mask = pir_volume()
    truth = np.roll(mask, 3, axis=0)
    [path] = write_overlays(volume, mask, tmp_path, slices=[20], truth=truth)
    image = Image.open(path)
    assert min(image.size) >= MIN_SIDE_PX
    pixels = np.asarray(image.convert("RGB")).astype(int)
    red = (pixels[..., 0] > pixels[..., 2] + 80).sum()
    blue = (pixels[..., 2] > pixels[..., 0] + 80).sum()
    assert red > 0 and blue > 0
