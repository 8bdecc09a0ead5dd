"""The uncertainty map as an output: ``uncertainty.nii.gz`` (uint8 percent, the probability
margin of ``model.uncertainty``) on the input grid, and its figures for the summary: the whole
mask's and, when levels exist, each vertebra's (added to its summary entry as ``uncertainty``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from spineseg.imaging.nifti import write_nifti
from spineseg.model.inference import Segmentation
from spineseg.model.uncertainty import UNCERTAIN_FROM, uncertainty_on_input_grid, vertebra_uncertainty

UNCERTAINTY_FILE = "uncertainty.nii.gz"  # in a run's folder, beside mask.nii.gz


def uncertainty_map(seg: Segmentation) -> np.ndarray | None:
    """uint8 (I, J, K) percent on the input grid; None when ``seg`` kept no probabilities."""
    if seg.model_grid is None or seg.prepared is None:
        return None
    return uncertainty_on_input_grid(seg.model_grid, seg.prepared)


def write_uncertainty(seg: Segmentation, path: Path, *, labels: np.ndarray | None = None,
                      vertebrae: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """Write the map to ``path`` and return the summary's ``uncertainty`` part (None, nothing
    written, when ``seg`` kept no probabilities). With the levels' ``labels`` (same grid) and
    their summary entries ``vertebrae`` (each with its ``label``), each entry gets its figures."""
    u = uncertainty_map(seg)
    if u is None:
        return None
    write_nifti(u, seg.volume.affine, Path(path), dtype=np.uint8)
    inside = u[seg.mask > 0]
    part = {"map": Path(path).name, "measure": "probability margin, 100 * (1 - |2p - 1|), percent",
            "uncertain_from": UNCERTAIN_FROM,
            "mask_mean": round(float(inside.mean()), 2) if inside.size else None,
            "mask_uncertain_share": round(float(np.mean(inside >= UNCERTAIN_FROM)), 4) if inside.size else None}
    if labels is not None and vertebrae:
        figures = vertebra_uncertainty(u, labels, [int(v["label"]) for v in vertebrae])
        for entry, figure in zip(vertebrae, figures, strict=True):
            entry["uncertainty"] = figure
    return part
