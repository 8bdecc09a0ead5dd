"""Whether a received DICOM series is whole, by its own evidence (pure: headers in, reasons out).

A node that receives a series by C-STORE cannot be told "that was all": it sees associations
end and instances stop. Those say when the sender stopped, not whether the series is complete.
The headers can say more:

- **Declared counts**: Number of Series Related Instances (0020,1209) names the series' size;
  Images in Acquisition (0020,1002) names an acquisition's, when every instance is of one
  acquisition. Fewer instances than declared: some are missing.
- **Slice spacing continuity**: the slices of an axial CT are evenly spaced along the normal of
  their orientation. A step much larger than the series' usual step is a hole where instances
  should be (a sender cut off and resumed elsewhere, or instances lost).

No evidence is no objection: a series without positions or counts is judged by its
associations alone. ``GAP_FACTOR`` is the step, relative to the median step, above which a
hole is reported: scanners vary their step by a few per cent (table motion, rounding of
positions to 0.01 mm), never by half a slice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydicom.dataset import Dataset

GAP_FACTOR = 1.5


def _int_value(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _declared_count_problems(headers: Sequence[Dataset]) -> list[str]:
    problems = []
    declared = {n for n in (_int_value(ds, "NumberOfSeriesRelatedInstances") for ds in headers) if n}
    if declared and max(declared) > len(headers):
        problems.append(f"{len(headers)} of the {max(declared)} instances its headers declare "
                        "(Number of Series Related Instances) have arrived")
    acquisitions = {_int_value(ds, "AcquisitionNumber") for ds in headers}
    in_acquisition = {n for n in (_int_value(ds, "ImagesInAcquisition") for ds in headers) if n}
    if len(acquisitions) == 1 and in_acquisition and max(in_acquisition) > len(headers):
        problems.append(f"{len(headers)} of the {max(in_acquisition)} images its one acquisition declares "
                        "(Images in Acquisition) have arrived")
    return problems


def _positions_along_normal(headers: Sequence[Dataset]) -> np.ndarray | None:
    """Each instance's position along the slice normal (mm), or ``None`` when the headers do
    not give one orientation and a position for every instance."""
    try:
        orientations = {tuple(round(float(v), 4) for v in ds.ImageOrientationPatient) for ds in headers}
        if len(orientations) != 1:
            return None
        row_col = np.array(next(iter(orientations)), dtype=float).reshape(2, 3)
        normal = np.cross(row_col[0], row_col[1])
        positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in headers], dtype=float)
    except (AttributeError, TypeError, ValueError, KeyError):
        return None
    if positions.shape != (len(headers), 3) or not np.isfinite(positions).all() or np.linalg.norm(normal) < 0.5:
        return None
    return positions @ normal


def _spacing_problems(headers: Sequence[Dataset]) -> list[str]:
    along = _positions_along_normal(headers)
    if along is None or len(along) < 3:
        return []
    distinct = np.unique(np.round(along, 3))
    steps = np.diff(distinct)
    if len(steps) < 2:
        return []
    usual = float(np.median(steps))
    if usual <= 0:
        return []
    holes = np.flatnonzero(steps > GAP_FACTOR * usual)
    if not len(holes):
        return []
    missing = int(sum(round(steps[i] / usual) - 1 for i in holes))
    widest = float(steps[holes].max())
    return [f"its slices have {len(holes)} gap(s) in their spacing (the widest {widest:.2f} mm where the usual "
            f"step is {usual:.2f} mm): about {missing} slice(s) are missing"]


def incomplete_series_reasons(headers: Sequence[Dataset]) -> list[str]:
    """Why the instances in ``headers`` (one series, any order) are not the whole series, by
    their own declared counts and slice spacing; ``[]`` when nothing says so."""
    if not headers:
        return ["no instance has arrived"]
    return _declared_count_problems(headers) + _spacing_problems(headers)
