"""The pixel size a person gave for a picture that carries none (issue 28 item 8).

A PNG, JPEG or TIFF slice (or a 2D NumPy array) holds no pixel spacing; the readers assume
1 mm, and a 3 mm picture read at 1 mm is segmented at a third of its size (a blob over the
bowel). The upload page asks for the size; the service keeps the answer in a small file beside
the stored picture, ``PIXEL_SIZE_FILE`` in the same folder, which ``read_image_slice`` and
``read_numpy_slice`` read when no ``spacing_mm`` is passed. Pure file I/O, no web or database.
"""

from __future__ import annotations

import json
from pathlib import Path

from spineseg.errors import InputError
from spineseg.imaging.limits import check_spacing

PIXEL_SIZE_FILE = ".spineseg-pixel-size.json"
FIELD = "pixel_mm"


def pixel_size_error(reason: str) -> InputError:
    """An ``InputError`` on the form field ``pixel_mm`` (shown beside it on the upload page)."""
    error = InputError(FIELD, reason)
    error.field = FIELD
    return error


def check_pixel_mm(value: str | float | None) -> float | None:
    """A typed pixel size in mm (``None`` or ``""``: not given); ``InputError`` on ``pixel_mm``
    for text that is not a number or a size outside the plausible voxel range."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(str(value).strip().replace(",", "."))
        check_spacing(FIELD, [number], "pixel size")
    except InputError as exc:  # out of range: its reason is kept
        raise pixel_size_error(exc.reason) from exc
    except ValueError as exc:
        raise pixel_size_error(f"expected the pixel size in mm, such as 0.7, got {str(value)[:40]!r}") from exc
    return number


def write_pixel_size(folder: Path, pixel_mm: float) -> Path:
    """Record square pixels of ``pixel_mm`` for the picture stored in ``folder``."""
    path = Path(folder) / PIXEL_SIZE_FILE
    path.write_text(json.dumps({"row_mm": pixel_mm, "column_mm": pixel_mm}))
    return path


def given_pixel_size(picture: Path) -> tuple[float, float] | None:
    """(row, column) mm recorded beside ``picture``; ``None`` when none was given."""
    path = Path(picture).parent / PIXEL_SIZE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        size = (float(data["row_mm"]), float(data["column_mm"]))
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise InputError(path.name, f"the recorded pixel size cannot be read ({type(exc).__name__})") from exc
    check_spacing(path.name, size, "pixel size")
    return size
