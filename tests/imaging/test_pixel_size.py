"""imaging.pixel_size: the size typed at upload, checked, kept beside a picture and read with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spineseg.errors import InputError
from spineseg.imaging.io import load_volume
from spineseg.imaging.pixel_size import PIXEL_SIZE_FILE, check_pixel_mm, write_pixel_size


@pytest.mark.parametrize(("typed", "expected"), [("0.7", 0.7), (" 2,5 ", 2.5), ("", None), (None, None), (3, 3.0)])
def test_typed_sizes(typed, expected) -> None:
    assert check_pixel_mm(typed) == expected


@pytest.mark.parametrize(("typed", "words"), [("abc", "such as 0.7"), ("-1", "plausible range"),
                                               ("inf", "not a finite number"), ("51", "plausible range")])
def test_bad_sizes_name_the_field(typed, words) -> None:
    with pytest.raises(InputError) as caught:
        check_pixel_mm(typed)
    assert caught.value.field == "pixel_mm" and words in caught.value.reason


def test_a_picture_is_read_with_the_size_kept_beside_it(tmp_path: Path) -> None:
    picture = np.zeros((40, 30), dtype=np.uint8)
    picture[10:20, 5:15] = 200
    Image.fromarray(picture).save(tmp_path / "ct.png")
    assumed = load_volume(tmp_path / "ct.png")
    assert assumed.spacing[:2] == pytest.approx((1.0, 1.0)) and "assumed" in assumed.provenance.notes[-1]
    write_pixel_size(tmp_path, 2.5)
    assert (tmp_path / PIXEL_SIZE_FILE).is_file()
    given = load_volume(tmp_path / "ct.png")
    assert given.spacing[:2] == pytest.approx((2.5, 2.5)) and "2.5 mm given at upload" in given.provenance.notes[-1]
    np.testing.assert_array_equal(given.array, assumed.array)
    (tmp_path / PIXEL_SIZE_FILE).write_text("{not json")
    with pytest.raises(InputError, match="recorded pixel size cannot be read"):
        load_volume(tmp_path / "ct.png")
